"""Per-example gradients and per-example clipping: the core of DP-SGD (Abadi et al., CCS 2016,
Algorithm 1: "compute gradient" for each example, "clip gradient" to norm C).

Two routes give the same numbers: `torch.func.vmap(grad)` (fast, also differentiable in x for
the attacker's replay) and a loop over examples. A model with BatchNorm or dropout in train mode
takes the loop, because vmap refuses what they do there: BN updates its running statistics in
place and dropout draws random masks. Each example then runs as a batch of one (BN normalises it
by its own statistics, dropout draws its own mask), so its gradient still depends on it alone,
which is what per-example clipping needs."""
from __future__ import annotations

import torch
from torch.func import grad, vmap

from fedleak.models.functional import batch_loss, loss_gradient
from fedleak.models.architectures import MaskDropout


def per_example_gradients(model, params, buffers, x, y, create_graph: bool = False) -> list[torch.Tensor]:
    """One gradient per example, stacked: a list (one per parameter) of (B, *param.shape).
    With create_graph the result stays differentiable in x (and soft labels y)."""
    names = list(params)
    if not _vmap_safe(model):
        rows = [loss_gradient(model, params, buffers, x[i:i + 1], y[i:i + 1], create_graph=create_graph)
                for i in range(x.shape[0])]
        return [torch.stack([row[j] for row in rows]) for j in range(len(names))]
    if not create_graph:
        x, y = x.detach(), y.detach()
    single = lambda p, xi, yi: batch_loss(model, p, buffers, xi.unsqueeze(0), yi.unsqueeze(0))
    grads = vmap(grad(single), in_dims=(None, 0, 0))(dict(params), x, y)
    return [grads[n] if create_graph else grads[n].detach() for n in names]


def clip_per_example(per_example: list[torch.Tensor], clip: float) -> list[torch.Tensor]:
    """Scale each example's gradient (all parameters jointly) to L2 norm at most `clip`."""
    batch = per_example[0].shape[0]
    norms = torch.sqrt(sum(g.reshape(batch, -1).pow(2).sum(1) for g in per_example))
    factor = (clip / (norms + 1e-12)).clamp(max=1.0)
    return [g * factor.view(-1, *([1] * (g.dim() - 1))) for g in per_example]


def clip_update(update: list[torch.Tensor], clip: float) -> list[torch.Tensor]:
    """Scale a whole update (all parameters jointly) to L2 norm at most `clip` (DP-FedAvg's
    user-level clipping, McMahan et al., ICLR 2018)."""
    norm = torch.sqrt(sum(u.pow(2).sum() for u in update))
    factor = (clip / (norm + 1e-12)).clamp(max=1.0)
    return [u * factor for u in update]


def _vmap_safe(model: torch.nn.Module) -> bool:
    stateful = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.dropout._DropoutNd, MaskDropout)
    return not any(m.training and isinstance(m, stateful) for m in model.modules())
