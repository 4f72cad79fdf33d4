"""torch.optim.SGD (momentum, weight decay) and clip_grad_norm_ written as pure functions of
explicit tensors, so that a protocol's local training can be unrolled differentiably by an
attacker and still match the client's real optimiser step for step."""
from __future__ import annotations

import torch

Tensors = dict[str, torch.Tensor]


def clip_by_global_norm(grads: Tensors, max_norm: float) -> Tensors:
    """torch.nn.utils.clip_grad_norm_: one factor min(1, max_norm/(‖g‖+1e-6)) for the whole
    group. Kept differentiable because the attacker's replay has to pass through it."""
    # clamped inside the sqrt: a gradient that underflows to 0 must not give an infinite derivative
    total = torch.sqrt(sum(g.pow(2).sum() for g in grads.values()).clamp_min(1e-30))
    factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return {k: g * factor for k, g in grads.items()}


def sgd_step(params: Tensors, grads: Tensors, buffers: Tensors | None, lr: float, momentum: float = 0.0,
             weight_decay: float = 0.0) -> tuple[Tensors, Tensors]:
    """One step of torch.optim.SGD (dampening 0, no Nesterov). `buffers` is None on the first
    step, where torch initialises the momentum buffer with the step direction itself."""
    new_params, new_buffers = {}, {}
    for k, p in params.items():
        direction = grads[k] + weight_decay * p if weight_decay else grads[k]
        if momentum:
            direction = direction if buffers is None else momentum * buffers[k] + direction
            new_buffers[k] = direction
        new_params[k] = p - lr * direction
    return new_params, new_buffers
