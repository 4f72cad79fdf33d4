"""torch.optim.SGD, torch.optim.Adam/AdamW and clip_grad_norm_ written as pure functions of explicit
tensors, so that a client's local training can be unrolled differentiably by an attacker and still
match the client's real optimiser step for step (tests/test_threat_models.py checks each against
torch.optim)."""
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
             weight_decay: float = 0.0, dampening: float = 0.0, nesterov: bool = False) -> tuple[Tensors, Tensors]:
    """One step of torch.optim.SGD. `buffers` is None on the first step, where torch initialises the
    momentum buffer with the step direction itself (no dampening on that step)."""
    new_params, new_buffers = {}, {}
    for k, p in params.items():
        direction = grads[k] + weight_decay * p if weight_decay else grads[k]
        if momentum:
            if buffers is None:
                buffer = direction
            else:
                buffer = momentum * buffers[k] + (direction * (1 - dampening) if dampening else direction)
            new_buffers[k] = buffer
            direction = direction + momentum * buffer if nesterov else buffer
        new_params[k] = p - lr * direction
    return new_params, new_buffers


def adam_step(params: Tensors, grads: Tensors, state: tuple[Tensors, Tensors] | None, step: int, lr: float,
              betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
              decoupled: bool = False) -> tuple[Tensors, tuple[Tensors, Tensors]]:
    """One step (number `step`, from 1) of torch.optim.Adam (amsgrad off), or of AdamW with
    `decoupled`: the weight decay shrinks the parameters instead of joining the gradient.
    `state` is (first moments, second moments), None before the first step."""
    beta1, beta2 = betas
    correction1, correction2_sqrt = 1 - beta1 ** step, (1 - beta2 ** step) ** 0.5
    new_params, first, second = {}, {}, {}
    for k, p in params.items():
        g = grads[k]
        if weight_decay and decoupled:
            p = p * (1 - lr * weight_decay)
        elif weight_decay:
            g = g + weight_decay * p
        m = (1 - beta1) * g if state is None else beta1 * state[0][k] + (1 - beta1) * g
        v = (1 - beta2) * g * g if state is None else beta2 * state[1][k] + (1 - beta2) * g * g
        first[k], second[k] = m, v
        new_params[k] = p - (lr / correction1) * m / (_sqrt(v) / correction2_sqrt + eps)
    return new_params, (first, second)


def _sqrt(v: torch.Tensor) -> torch.Tensor:
    """sqrt whose derivative is 0, not inf·0 = NaN, where v is exactly 0 (a parameter whose gradient
    has been 0 at every step: a dead unit), so that the replay stays differentiable."""
    positive = v > 0
    return torch.where(positive, torch.where(positive, v, torch.ones_like(v)).sqrt(), torch.zeros_like(v))
