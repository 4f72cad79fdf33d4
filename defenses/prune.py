"""Top-k magnitude sparsification ("gradient pruning"): the client sends only the largest-|·|
fraction `ratio` of its update's entries, per parameter tensor (`scope="layer"`, the DLG /
GGL-GIFD convention of notes §12.2) or over the whole update (`scope="global"`, DGC's top-k).

`residual=True` adds Deep Gradient Compression's local gradient accumulation (Lin et al., ICLR
2018): what a client did not send is kept and added to its next update before selection. The
state is per client id and starts empty at round 0, so one observed round (which is all an
attack sees) includes whatever residual that client carried over from its earlier rounds; DGC's
momentum correction, warm-up and local clipping are not modelled.

Upload cost: a float32 value and an int32 index per sent (non-zero) entry. The zero pattern is
visible in what is sent, so the adaptive attacker masks its trial update with the OBSERVED
non-zero pattern before matching (masked cosine, GIAS/GIFD `sim_cmpr`, notes §1)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fedleak.core.options import check_bool, check_choice, check_number
from fedleak.defenses.base import Defense, ShareContext


@dataclass(frozen=True)
class PruneOptions:
    ratio: float = 0.1
    scope: str = "layer"
    residual: bool = False

    def __post_init__(self):
        check_number("ratio", self.ratio, low=0, high=1, low_open=True)
        check_choice("scope", self.scope, ("layer", "global"))
        check_bool("residual", self.residual)


class Prune(Defense):
    name = "prune"
    options_class = PruneOptions

    def __init__(self, options: PruneOptions | None = None, **values):
        super().__init__(options, **values)
        self._residuals: dict[int, list[torch.Tensor]] = {}

    def share(self, update: list[torch.Tensor], context: ShareContext) -> tuple[list[torch.Tensor], dict]:
        update = [u.detach() for u in update]
        if self.options.residual:
            carried = self._residuals.get(context.client_id) if context.round > 0 else None
            if carried is not None:
                update = [u + r for u, r in zip(update, carried)]
        masks = self.masks(update)
        sent = [u * m for u, m in zip(update, masks)]
        if self.options.residual:
            self._residuals[context.client_id] = [u - s for u, s in zip(update, sent)]
        return sent, {"ratio": self.options.ratio, "scope": self.options.scope}

    def masks(self, update: list[torch.Tensor]) -> list[torch.Tensor]:
        """0/1 masks keeping the round(ratio·d) largest-magnitude entries (at least one)."""
        if self.options.scope == "layer":
            return [_top_k_mask(u.abs().reshape(-1), self._k(u.numel())).view(u.shape) for u in update]
        flat = torch.cat([u.abs().reshape(-1) for u in update])
        mask = _top_k_mask(flat, self._k(flat.numel()))
        return [m.view(u.shape) for m, u in zip(mask.split([u.numel() for u in update]), update)]

    def _k(self, d: int) -> int:
        return max(1, round(self.options.ratio * d))

    def simulate(self, trial: list[torch.Tensor], observation) -> list[torch.Tensor]:
        return [t * (s != 0).to(t.dtype) for t, s in zip(trial, observation.shared)]

    def bytes_sent(self, update: list[torch.Tensor]) -> int:
        return 8 * sum(int(torch.count_nonzero(t)) for t in update)


def _top_k_mask(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.zeros_like(magnitudes)
    mask[magnitudes.topk(k).indices] = 1
    return mask
