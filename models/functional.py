"""Client computations written against explicit parameters (torch.func), so the same code runs
the real client and the attacker's differentiable replay of it."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

from fedleak.core.errors import ConfigError
from fedleak.models.optim import adam_step, sgd_step

Params = dict[str, torch.Tensor]


OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class LocalTraining:
    """The client's local loop for one round, as `torch.optim` and a `DataLoader` run it: `epochs`
    passes over the client's examples in mini-batches of `batch_size` (the last one partial unless
    `drop_last`), one optimiser step per mini-batch, the optimiser state fresh each round.

    `shuffle`: a new random mini-batch order every epoch (`DataLoader(shuffle=True)`); nobody but
    the client knows that order, so a replay in the stored order is then only an approximation.
    `train_mode`: the client calls `model.train()`, so BatchNorm layers normalise with the
    mini-batch's statistics (the running statistics it also updates are not part of the replay).
    An attacker who is told this (`AttackerKnowledge.local_training`) can replay the loop."""
    lr: float = 0.1
    epochs: int = 1
    batch_size: int | None = None  # None: full batch, one step per epoch
    optimizer: str = "sgd"         # sgd | adam | adamw (torch.optim semantics)
    momentum: float = 0.0          # sgd
    dampening: float = 0.0         # sgd
    nesterov: bool = False         # sgd
    weight_decay: float = 0.0      # sgd, adam: L2 added to the gradient; adamw: decoupled
    beta1: float = 0.9             # adam, adamw
    beta2: float = 0.999           # adam, adamw
    eps: float = 1e-8              # adam, adamw
    shuffle: bool = False
    drop_last: bool = False
    train_mode: bool = False

    def __post_init__(self):
        def bad(key: str, why: str):
            return ConfigError(f"threat_model.{key}: {why}")
        if not self.lr > 0:
            raise bad("lr", f"must be > 0, got {self.lr}")
        if self.epochs < 1:
            raise bad("epochs", f"must be >= 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise bad("local_batch_size", f"must be >= 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"expected one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        for key in ("momentum", "dampening", "beta1", "beta2"):
            if not 0 <= getattr(self, key) < 1:
                raise bad(key, f"must be in [0, 1), got {getattr(self, key)}")
        if self.weight_decay < 0:
            raise bad("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if not self.eps > 0:
            raise bad("eps", f"must be > 0, got {self.eps}")
        if self.optimizer != "sgd":
            for key in ("momentum", "dampening", "nesterov"):
                if getattr(self, key):
                    raise bad(key, f"an option of optimizer 'sgd', not {self.optimizer!r}")
        if self.nesterov and (not self.momentum or self.dampening):
            raise bad("nesterov", "needs momentum > 0 and dampening 0 (as torch.optim.SGD)")

    @property
    def plain(self) -> bool:
        """Plain SGD (no momentum, no weight decay): θ ← θ − lr·g, fedleak's original FedAvg client."""
        return self.optimizer == "sgd" and not self.momentum and not self.weight_decay

    def steps(self, num_examples: int) -> int:
        if self.batch_size is None:
            return self.epochs
        per_epoch = num_examples // self.batch_size if self.drop_last else -(-num_examples // self.batch_size)
        return self.epochs * per_epoch

    def without_optimizer(self) -> "LocalTraining":
        """What an attacker who is told the loop's hyperparameters but not the optimiser assumes:
        plain SGD with the same learning rate, epochs and mini-batches."""
        return replace(self, optimizer="sgd", momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
                       beta1=0.9, beta2=0.999, eps=1e-8)

    def describe(self) -> dict:
        return asdict(self)


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
                 create_graph: bool = False, gradient_fn: GradientFn | None = None,
                 orders: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """θ_K − θ_0 after the client's K local steps over (x, y) with `training`'s optimiser.

    `orders`: per epoch, the indices into x in the order the client visits them (a shuffling
    client's permutation, or an order-free attack's own copy of the images for that epoch);
    None: the stored order every epoch. `gradient_fn` lets a defense replace the per-step gradient
    (DP-SGD clips per example and adds noise inside the loop). With create_graph the whole
    unrolled loop is differentiable."""
    names = list(params)
    current = dict(params)
    state, step = None, 0
    with _batch_norm_training(model, training.train_mode):
        if training.train_mode:  # train-mode BatchNorm updates its running statistics in place
            buffers = {k: v.clone() for k, v in buffers.items()}
        for epoch in range(training.epochs):
            for xb, yb in mini_batches(x, y, training, None if orders is None else orders[epoch]):
                if gradient_fn is None:
                    grads = loss_gradient(model, current, buffers, xb, yb, create_graph=create_graph)
                else:
                    grads = gradient_fn(model, current, buffers, xb, yb)
                if training.plain:
                    current = {k: current[k] - training.lr * g for k, g in zip(names, grads)}
                else:
                    step += 1
                    current, state = optimizer_step(training, current, dict(zip(names, grads)), state, step)
                if not create_graph:
                    current = {k: v.detach() for k, v in current.items()}
                    state = _detached(state)
    return [current[k] - params[k] for k in names]


def mini_batches(x, y, training: LocalTraining, order: torch.Tensor | None = None):
    """The (x, y) mini-batches of one epoch: consecutive slices of the stored order, or of `order`."""
    n = x.shape[0] if order is None else len(order)
    size = n if training.batch_size is None else training.batch_size
    stop = n - n % size if training.drop_last else n
    for start in range(0, stop, size):
        if order is None:
            yield x[start:start + size], y[start:start + size]
        else:
            index = order[start:start + size].to(x.device)
            yield x[index], y[index]


def shuffled_orders(num_examples: int, training: LocalTraining, seed: int) -> list[torch.Tensor] | None:
    """The per-epoch permutations a shuffling client draws (None when it does not shuffle)."""
    if not training.shuffle:
        return None
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(num_examples, generator=generator) for _ in range(training.epochs)]


def optimizer_step(training: LocalTraining, params: Params, grads: Params, state, step: int):
    """One step of the client's optimiser (models/optim.py): (new parameters, new optimiser state)."""
    t = training
    if t.optimizer == "sgd":
        return sgd_step(params, grads, state, t.lr, t.momentum, t.weight_decay, t.dampening, t.nesterov)
    return adam_step(params, grads, state, step, t.lr, (t.beta1, t.beta2), t.eps, t.weight_decay,
                     decoupled=t.optimizer == "adamw")


def _detached(state):
    if state is None:
        return None
    if isinstance(state, dict):
        return {k: v.detach() for k, v in state.items()}
    return tuple(_detached(s) for s in state)


@contextmanager
def _batch_norm_training(model: torch.nn.Module, train: bool):
    """BatchNorm layers in train mode for the loop when the client trains in train mode, and back
    afterwards; otherwise every layer stays as the caller set it."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)] if train else []
    modes = [m.training for m in layers]
    for m in layers:
        m.train()
    try:
        yield
    finally:
        for m, mode in zip(layers, modes):
            m.train(mode)
