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

import torch

from fedleak.defenses import options
from fedleak.defenses.base import Defense, ShareContext
from fedleak.core.errors import ConfigError


class Prune(Defense):
    name = "prune"

    def __init__(self, ratio: float = 0.1, scope: str = "layer", residual: bool = False):
        self.ratio = options.number(self.name, "ratio", ratio, low=0, high=1, low_open=True)
        self.scope = options.choice(self.name, "scope", scope, ("layer", "global"))
        if not isinstance(residual, bool):
            raise ConfigError(f"defense '{self.name}': residual must be true or false, got {residual!r}")
        self.residual = residual
        self._residuals: dict[int, list[torch.Tensor]] = {}

    def share(self, update: list[torch.Tensor], context: ShareContext) -> tuple[list[torch.Tensor], dict]:
        update = [u.detach() for u in update]
        if self.residual:
            carried = self._residuals.get(context.client_id) if context.round > 0 else None
            if carried is not None:
                update = [u + r for u, r in zip(update, carried)]
        masks = self.masks(update)
        sent = [u * m for u, m in zip(update, masks)]
        if self.residual:
            self._residuals[context.client_id] = [u - s for u, s in zip(update, sent)]
        return sent, {"ratio": self.ratio, "scope": self.scope}

    def masks(self, update: list[torch.Tensor]) -> list[torch.Tensor]:
        """0/1 masks keeping the round(ratio·d) largest-magnitude entries (at least one)."""
        if self.scope == "layer":
            return [_top_k_mask(u.abs().reshape(-1), self._k(u.numel())).view(u.shape) for u in update]
        flat = torch.cat([u.abs().reshape(-1) for u in update])
        mask = _top_k_mask(flat, self._k(flat.numel()))
        return [m.view(u.shape) for m, u in zip(mask.split([u.numel() for u in update]), update)]

    def _k(self, d: int) -> int:
        return max(1, round(self.ratio * d))

    def simulate(self, trial: list[torch.Tensor], observation) -> list[torch.Tensor]:
        return [t * (s != 0).to(t.dtype) for t, s in zip(trial, observation.shared)]

    def bytes_sent(self, update: list[torch.Tensor]) -> int:
        return 8 * sum(int(torch.count_nonzero(t)) for t in update)

    def describe(self) -> dict:
        return {"ratio": self.ratio, "scope": self.scope, "residual": self.residual}


def _top_k_mask(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.zeros_like(magnitudes)
    mask[magnitudes.topk(k).indices] = 1
    return mask
