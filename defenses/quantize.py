"""RQM, the Randomized Quantization Mechanism (Youn, Hu, Ziani, Abernethy, FL-ICML 2023 workshop,
arXiv 2306.11913; notes §12.3): privacy from two layers of randomness and no additive noise.

Every coordinate is clipped to [−c, c] (`clip`); of the m equally spaced levels
B_j = −c + 2c·j/(m−1) (`levels`), the two endpoints are always kept and each interior level is
kept independently with probability q (`keep`); the value is then rounded at random to the
nearest kept level below or above it, with the probabilities that make the rounding unbiased.
So E[Q(x)] = clip(x) and the server needs no side information to decode: a coordinate is sent as
a level index, ceil(log2 m) bits.

Level sampling is drawn per coordinate without materialising the d×m kept-level table: the gap
from the grid cell [j, j+1] containing x down to the nearest kept level is geometric with
success probability q (capped by the always-kept endpoint), and likewise upward; the two gaps
involve disjoint levels, hence are independent. Both the kept levels and the rounding come from
a private stream.

Privacy: the paper proves a Rényi-DP guarantee for RQM; no standard library (Opacus, etc.)
implements that accountant and this harness does not hand-roll one, so `privacy` returns None.

Adaptive attack (notes §15.2): treat the quantised vector as an unbiased noisy copy of the clipped
update and match its expectation: `simulate` clamps the trial update to [−c, c]. Measured caveat
(tools/defense_matrix.py, LeNet/digits, m=4, 12 victims): under IG's cosine this reaches a lower
value of its own objective than the non-adaptive attack but images 0–1.7 dB worse, and the true
image scores WORSE on that objective than both reconstructions: RQM's noise is heteroscedastic
(zero on saturated coordinates, ~c/3 on the many small ones), matching the mean with equal weights
fits that noise, while the unclamped trial of the non-adaptive attack implicitly puts its weight
on the large, saturated, exactly observed coordinates. A likelihood-weighted distance would be the
principled adaptive attack; with `l2` (DLG) the clamp is plainly the right model."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fedleak.core.options import check_integer, check_number
from fedleak.defenses import seeding
from fedleak.defenses.base import Defense, ShareContext


@dataclass(frozen=True)
class QuantizeOptions:
    clip: float = 0.01
    levels: int = 16
    keep: float = 0.5
    noise_seed: int = 0

    def __post_init__(self):
        check_number("clip", self.clip, low=0, low_open=True)
        check_integer("levels", self.levels, low=2)
        check_number("keep", self.keep, low=0, high=1)
        check_integer("noise_seed", self.noise_seed, low=0)


class RandomizedQuantization(Defense):
    name = "quantize"
    options_class = QuantizeOptions

    def share(self, update: list[torch.Tensor], context: ShareContext) -> tuple[list[torch.Tensor], dict]:
        o = self.options
        gen = seeding.generator("rqm", o.noise_seed, context.seed, context.client_id, context.round)
        sent = [self.quantize(u.detach(), gen) for u in update]
        return sent, {"clip": o.clip, "levels": o.levels, "keep": o.keep}

    def quantize(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One RQM draw for every coordinate of x."""
        m, c = self.options.levels, self.options.clip
        position = (x.clamp(-c, c) + c) / (2 * c) * (m - 1)          # in grid units, [0, m−1]
        cell = position.floor().clamp(max=m - 2)                      # the grid cell [cell, cell+1]
        lower = (cell - self._gaps(x, gen)).clamp(min=0)
        upper = (cell + 1 + self._gaps(x, gen)).clamp(max=m - 1)
        up = self._uniform(x, gen) < (position - lower) / (upper - lower)
        index = torch.where(up, upper, lower)
        return index * (2 * c / (m - 1)) - c

    def _gaps(self, like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Skipped interior levels before the first kept one: Geometric(keep) failures."""
        keep = self.options.keep
        if keep == 1:
            return torch.zeros_like(like)
        if keep == 0:
            return torch.full_like(like, float(self.options.levels))
        u = 1 - self._uniform(like, gen)                                # in (0, 1]
        return torch.floor(torch.log(u) / math.log1p(-keep))

    @staticmethod
    def _uniform(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return torch.rand(like.shape, generator=gen, dtype=like.dtype).to(like.device)

    def simulate(self, trial: list[torch.Tensor], observation) -> list[torch.Tensor]:
        return [t.clamp(-self.options.clip, self.options.clip) for t in trial]

    def bytes_sent(self, update: list[torch.Tensor]) -> int:
        bits = math.ceil(math.log2(self.options.levels))
        return math.ceil(sum(t.numel() for t in update) * bits / 8)

    def privacy(self, steps: int, sampling_rate: float) -> dict | None:
        return None  # RQM's Rényi-DP bound has no standard-library accountant (see module docstring)
