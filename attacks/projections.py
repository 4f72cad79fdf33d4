"""Per-sample projections used by the generative attacks (GIFD, Fang et al., ICCV 2023, Sec. 3.2).

* `project_l1_ball`: Euclidean projection onto {x : ||x||_1 <= r}, by the sort-based simplex
  projection of Duchi et al. (ICML 2008, Fig. 1), applied to every sample's flattened tensor
  separately with its own radius. GIFD keeps each intermediate feature within such a ball
  around the feature it started the stage from.
* `project_sphere`: rescale every sample to a given L2 norm. GIFD's latent stage keeps z on the
  sphere of its initial norm, where a high-dimensional Gaussian's mass concentrates."""
from __future__ import annotations

import torch


def _per_sample(value, n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).expand(n).reshape(n, 1)


def project_l1_ball(v: torch.Tensor, radius: float | torch.Tensor) -> torch.Tensor:
    """Closest point (in L2) to each v[i] with L1 norm <= radius[i]; rows already inside are
    returned unchanged."""
    n = v.shape[0]
    flat = v.reshape(n, -1)
    r = _per_sample(radius, n, flat).clamp(min=0)
    magnitude = flat.abs()
    inside = magnitude.sum(1, keepdim=True) <= r
    # Duchi et al.: with u sorted descending, rho = #{j : u_j > (sum_{i<=j} u_i - r) / j} and the
    # soft threshold theta = (sum_{i<=rho} u_i - r) / rho.
    u, _ = magnitude.sort(dim=1, descending=True)
    cumulative = u.cumsum(1)
    j = torch.arange(1, flat.shape[1] + 1, device=v.device, dtype=flat.dtype)
    rho = (u * j > cumulative - r).sum(1, keepdim=True).clamp(min=1)
    theta = (cumulative.gather(1, rho - 1) - r) / rho.to(flat.dtype)
    projected = flat.sign() * (magnitude - theta).clamp(min=0)
    return torch.where(inside, flat, projected).reshape(v.shape)


def project_sphere(z: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """Each z[i] rescaled to L2 norm norms[i]."""
    n = z.shape[0]
    flat = z.reshape(n, -1)
    current = flat.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return (flat * (_per_sample(norms, n, flat) / current)).reshape(z.shape)
