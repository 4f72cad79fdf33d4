"""Client computations written against explicit parameters (torch.func), so the same code runs
the real client and the attacker's differentiable replay of it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

from fedleak.core.errors import ConfigError

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LocalTraining:
    """The client's local loop for one round. Mini-batches are taken in a fixed order
    (the data's order), so an attacker who knows these hyperparameters can replay the loop."""
    lr: float = 0.1
    epochs: int = 1
    batch_size: int | None = None  # None: full batch, one step per epoch

    def __post_init__(self):
        if not self.lr > 0:
            raise ConfigError(f"threat_model.lr: must be > 0, got {self.lr}")
        if self.epochs < 1:
            raise ConfigError(f"threat_model.epochs: must be >= 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"threat_model.local_batch_size: must be >= 1, got {self.batch_size}")

    def steps(self, num_examples: int) -> int:
        per_epoch = 1 if self.batch_size is None else -(-num_examples // self.batch_size)
        return self.epochs * per_epoch


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE for hard labels (B,) or soft label distributions (B,C) (DLG's joint labels)."""
    if labels.dim() == 1:
        return F.cross_entropy(logits, labels)
    return -(labels * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def batch_loss(model: torch.nn.Module, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return cross_entropy(functional_call(model, (params, buffers), (x,)), y)


def loss_gradient(model, params: Params, buffers: Params, x, y, create_graph: bool = False) -> list[torch.Tensor]:
    """d(mean CE)/d(params), in the order of `params`. With create_graph the result stays
    differentiable in x (and in soft labels), which is what gradient matching needs."""
    names = list(params)
    if create_graph:
        # The params must be part of the graph for autograd.grad; the observation's tensors
        # are leaves without grad, so re-attach them (cheap views, no copy).
        attached = {n: p if p.requires_grad else p.detach().requires_grad_(True) for n, p in params.items()}
        loss = batch_loss(model, attached, buffers, x, y)
        return list(torch.autograd.grad(loss, [attached[n] for n in names], create_graph=True))
    detached = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    loss = batch_loss(model, detached, buffers, x, y)
    return list(torch.autograd.grad(loss, [detached[n] for n in names]))


GradientFn = Callable[[torch.nn.Module, Params, Params, torch.Tensor, torch.Tensor], list[torch.Tensor]]


def local_update(model, params: Params, buffers: Params, x, y, training: LocalTraining,
                 create_graph: bool = False, gradient_fn: GradientFn | None = None) -> list[torch.Tensor]:
    """θ_K − θ_0 after the client's K local SGD steps over (x, y) in fixed mini-batch order.

    `gradient_fn` lets a defense replace the per-step gradient (DP-SGD clips per example and
    adds noise inside the loop). With create_graph the whole unrolled loop is differentiable."""
    names = list(params)
    current = dict(params)
    n = x.shape[0]
    size = n if training.batch_size is None else training.batch_size
    for _ in range(training.epochs):
        for start in range(0, n, size):
            xb, yb = x[start:start + size], y[start:start + size]
            if gradient_fn is None:
                grads = loss_gradient(model, current, buffers, xb, yb, create_graph=create_graph)
            else:
                grads = gradient_fn(model, current, buffers, xb, yb)
            current = {k: current[k] - training.lr * g for k, g in zip(names, grads)}
            if not create_graph:
                current = {k: v.detach() for k, v in current.items()}
    return [current[k] - params[k] for k in names]

