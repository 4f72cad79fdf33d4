"""Distances between a trial's shared update and the observed one, for what defenses send.

Each takes two lists of tensors (trial, observed) in the space of what was sent and returns a scalar:

* `cosine` / `l2`: attacks.objective (IG's global cosine, DLG's squared L2); `relative-l2`: the latter over ‖o‖².
* `masked_cosine`: the global cosine over the observed support only (coordinates the client sent non-zero),
  the `sim_cmpr` idea of GIAS/GIFD (research notes §1) for sparsified updates: a zero that was pruned says
  nothing about the coordinate's value.
* `sign_agreement`: for sign-compressed updates (signSGD-like, research notes §15.2 "sign-agreement loss"),
  the mean of softplus(−κ·sign(o)·t/rms(t)) over the observed support: the trial is pushed to agree with
  each observed sign, scale-free, with a smooth gradient where a straight-through sign has none.
* `gaussian_nll`: the negative log-likelihood of the observation under o = E share(trial) + ε, ε ~ N(0, v)
  coordinate-wise (Balunović et al., ICLR 2022: the Bayes-optimal attacker maximises log p(g|x) + log p(x)),
  averaged over coordinates: Σ (t − o)²/(2v) / n. v is the published noise variance (`noise_std`) or the
  spread of the attacker's own draws of the defense (heteroscedastic: RQM's rounding noise is 0 on
  saturated coordinates and large on small ones, so equal weights fit the noise)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fedleak.attacks.objective import cosine_distance, l2_distance


def masked_cosine(trial: list[torch.Tensor], target: list[torch.Tensor]) -> torch.Tensor:
    masks = [(b != 0).to(a.dtype) for a, b in zip(trial, target)]
    return cosine_distance([a * m for a, m in zip(trial, masks)], target)


def sign_agreement(trial: list[torch.Tensor], target: list[torch.Tensor], sharpness: float = 3.0) -> torch.Tensor:
    masks = [(b != 0) for b in target]
    count = sum(int(m.sum()) for m in masks)
    if count == 0:
        return sum(a.sum() * 0 for a in trial)
    rms = torch.sqrt(sum(a[m].pow(2).sum() for a, m in zip(trial, masks)) / count) + 1e-12
    total = sum(F.softplus(-sharpness * torch.sign(b[m]) * a[m] / rms).sum() for a, b, m in zip(trial, target, masks))
    return total / count


def gaussian_nll(trial: list[torch.Tensor], target: list[torch.Tensor], variance: list[torch.Tensor] | float) -> torch.Tensor:
    if not isinstance(variance, list):
        variance = [torch.full_like(b, float(variance)) for b in target]
    n = sum(b.numel() for b in target)
    return sum(((a - b).pow(2) / (2 * v)).sum() for a, b, v in zip(trial, target, variance)) / n


def relative_l2(trial: list[torch.Tensor], target: list[torch.Tensor]) -> torch.Tensor:
    """‖t − o‖² / ‖o‖²: DLG's squared L2 made scale-free (a clipped update's 1e-6 differences would stop
    L-BFGS's tolerance checks at once)."""
    return l2_distance(trial, target) / (sum(b.pow(2).sum() for b in target) + 1e-30)


SHARED_DISTANCES = {"cosine": cosine_distance, "l2": l2_distance, "relative-l2": relative_l2,
                    "masked-cosine": masked_cosine, "sign": sign_agreement}


def sparse(target: list[torch.Tensor], fraction: float = 0.5) -> bool:
    """At least `fraction` of what was sent is exactly zero."""
    total = sum(t.numel() for t in target)
    return total > 0 and sum(int((t == 0).sum()) for t in target) >= fraction * total


def sign_like(target: list[torch.Tensor]) -> bool:
    """Every sent tensor holds one magnitude (besides zeros): only signs were sent."""
    for t in target:
        values = t[t != 0].abs()
        if values.numel() and not torch.allclose(values, values[0].expand_as(values), rtol=1e-6, atol=0):
            return False
    return any((t != 0).any() for t in target)
