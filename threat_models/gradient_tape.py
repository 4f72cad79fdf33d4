"""Parameter gradients kept as (layer input, output gradient) pairs instead of weight-sized tensors.

Gradient matching needs two numbers of each trial gradient g: <g, target> and ||g||^2. While a
WeightGradientTape is active, the replay module's layers (threat_models.fast_replay) record what their
parameter gradient is made of and hand autograd a zero stand-in; the caller turns the records into
those two numbers. Two uses:

* Implicit convolution weights (one restart). A convolution's weight gradient is g = sum_p go_p X_p^T
  over output positions p (X_p: the input patch). With few positions (ResNet's 8x8 and 4x4 stages at
  B=1) g is low-rank, and
      <g, t>  = <go, conv(x, t)>            one convolution with the target as weight,
      ||g||^2 = sum((G^T G) * (X^T X))      two P x P Gram matrices,
  which never build the weight-sized tensor. Materialising it costs a weight-gradient convolution,
  weight-sized passes for the dot products and the cosine's backward, and two more convolutions with
  a weight-sized tensor in the second backward; on those stages the weights are 10x the activations
  and every such pass is memory-bound. (attacks.objective uses it for one restart in bfloat16 only:
  docs/performance.md, "Rounding noise and signed Adam".)
* Restarts as one batch. R restarts stacked along the batch axis share every convolution (one read
  of each weight for all R), but autograd would sum their parameter gradients. With the tape, every
  parameter's gradient is recorded and split per restart here: implicit where that is cheaper, else
  one weight-gradient convolution per restart.

Records are exact: tests/test_fast_replay.py compares them with autograd's gradients in float64.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


def widened(t: torch.Tensor) -> torch.Tensor:
    """At least float32: a bfloat16 replay's gradients are matched in float32, a float64 one in float64."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def stand_in(like: torch.Tensor, shape=None) -> torch.Tensor:
    """What autograd receives for a recorded gradient: zeros of the parameter's shape, no memory."""
    return like.new_zeros(()).expand(like.shape if shape is None else shape)


def _per_restart(t: torch.Tensor, restarts: int) -> torch.Tensor:
    return t.unflatten(0, (restarts, -1))


def _matched(g: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(<g_r, target>, ||g_r||^2) for per-restart gradients g (R, *target.shape), at least float32."""
    g = widened(g).flatten(1)
    return g @ target.reshape(-1), (g * g).sum(1)


def implicit_is_cheaper(go: torch.Tensor, weight: torch.Tensor, restarts: int) -> bool:
    """Gram matrices (P^2 (fan_in + C_out)) against a weight gradient (P fan_in C_out), P positions
    per restart."""
    positions = go.shape[0] // restarts * go.shape[2] * go.shape[3]
    cout, fan_in = weight.shape[0], weight[0].numel()
    return positions * (fan_in + cout) < cout * fan_in


@dataclass
class ConvWeightGradient:
    name: str
    x: torch.Tensor
    go: torch.Tensor
    weight: torch.Tensor    # detached: its shape, dtype and layout
    conf: tuple             # stride, padding, dilation, groups
    # the replay's own convolution and weight-gradient functions (threat_models.fast_replay, which
    # records this and imports this module): the terms are built from the same differentiable pieces
    conv: Callable
    weight_grad: Callable

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,)

    def terms(self, targets: dict, conv_targets: dict, restarts: int):
        stride, padding, dilation, groups = self.conf
        if groups != 1 or not implicit_is_cheaper(self.go, self.weight, restarts):
            g = torch.stack([self.weight_grad(x, go, self.weight, stride, padding, dilation, groups)
                             for x, go in zip(self.x.chunk(restarts), self.go.chunk(restarts))])
            return _matched(g, targets[self.name])
        out = self.conv(self.x, conv_targets[self.name], None, stride=stride, padding=padding, dilation=dilation,
                      groups=groups)
        dot = _per_restart(widened(out) * widened(self.go), restarts).flatten(1).sum(1)
        cols = _per_restart(F.unfold(widened(self.x), self.weight.shape[2:], dilation, padding, stride), restarts)
        patches = cols.transpose(2, 3).flatten(1, 2)                                    # (R, B*P, Cin*k*k)
        go = _per_restart(widened(self.go).flatten(2), restarts).transpose(2, 3).flatten(1, 2)  # (R, B*P, Cout)
        squared = ((patches @ patches.transpose(1, 2)) * (go @ go.transpose(1, 2))).sum((1, 2))
        return dot, squared


@dataclass
class BiasGradient:
    name: str
    go: torch.Tensor        # (N, C, ...): the gradient is its sum over everything but C

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,)

    def terms(self, targets: dict, conv_targets: dict, restarts: int):
        go = _per_restart(self.go, restarts)
        return _matched(go.sum([d for d in range(1, go.dim()) if d != 2]), targets[self.name])


def batchnorm_weight_gradient(go, x, mean, inv_std, channel_sum, dims) -> torch.Tensor:
    """Eval-mode BN's weight gradient, sum(go * (x - mean) * inv_std) over `dims`, without
    materialising x - mean (channel_sum: go summed over the same dims)."""
    return ((go * x).sum(dims) - mean * channel_sum) * inv_std


@dataclass
class BatchNormGradient:
    """Eval-mode BN, y = (x - mean) * inv_std * weight + bias."""
    weight_name: str | None
    bias_name: str | None
    x: torch.Tensor
    go: torch.Tensor
    mean: torch.Tensor
    inv_std: torch.Tensor

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n in (self.weight_name, self.bias_name) if n is not None)

    def terms(self, targets: dict, conv_targets: dict, restarts: int):
        go = _per_restart(self.go, restarts)
        channel_sum = go.sum((1, 3, 4))
        dot = squared = 0
        if self.bias_name is not None:
            dot, squared = _matched(channel_sum, targets[self.bias_name])
        if self.weight_name is not None:
            gw = batchnorm_weight_gradient(go, _per_restart(self.x, restarts), self.mean, self.inv_std, channel_sum,
                                           (1, 3, 4))
            d, s = _matched(gw, targets[self.weight_name])
            dot, squared = dot + d, squared + s
        return dot, squared


@dataclass
class LinearGradient:
    weight_name: str
    bias_name: str | None
    x: torch.Tensor         # (N, in)
    go: torch.Tensor        # (N, out)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.weight_name,) if self.bias_name is None else (self.weight_name, self.bias_name)

    def terms(self, targets: dict, conv_targets: dict, restarts: int):
        go, x = _per_restart(self.go, restarts), _per_restart(self.x, restarts)
        dot, squared = _matched(go.transpose(1, 2) @ x, targets[self.weight_name])
        if self.bias_name is not None:
            d, s = _matched(go.sum(1), targets[self.bias_name])
            dot, squared = dot + d, squared + s
        return dot, squared


class WeightGradientTape:
    """Which gradients the replay leaves to records. `names` maps the storage (data_ptr) of every
    parameter the caller can match to its name. restarts=None: only convolution weights whose
    implicit form is cheaper (one restart); restarts=R: every parameter, the batch being R restarts."""

    def __init__(self, names: dict[int, str], restarts: int | None = None):
        self.names = names
        self.restarts = restarts
        self.records: list = []

    def name(self, t: torch.Tensor | None) -> str | None:
        # leaves only: behind a BN fold (W*s) the gradient of W also feeds the BN scale
        if t is None or t.grad_fn is not None:
            return None
        return self.names.get(t.data_ptr())

    def takes_conv(self, go: torch.Tensor, weight: torch.Tensor, groups: int) -> bool:
        if self.name(weight) is None:
            return False
        return self.restarts is not None or (groups == 1 and implicit_is_cheaper(go, weight, 1))

    def per_restart_names(self, *params) -> tuple | None:
        """In per-restart mode, the names of a layer's parameters (None where absent) when the caller
        matches every one of them; else None (the layer computes its gradients itself)."""
        present = [t for t in params if t is not None]
        if self.restarts is None or not present or any(self.name(t) is None for t in present):
            return None
        return tuple(None if t is None else self.name(t) for t in params)

    def recorded(self) -> set[str]:
        return {n for r in self.records for n in r.names}

    def matched(self, targets: dict, conv_targets: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over records of (<g_r, target>, ||g_r||^2), each of shape (R,) (R = 1 without restarts)."""
        restarts = self.restarts or 1
        terms = [record.terms(targets, conv_targets, restarts) for record in self.records]
        return sum(d for d, _ in terms), sum(s for _, s in terms)


_ACTIVE = threading.local()


def active_tape() -> WeightGradientTape | None:
    return getattr(_ACTIVE, "tape", None)


class recording:
    """Context manager: a WeightGradientTape for the replays run inside it. Thread-local: the autograd
    engine runs CPU backward passes on the calling thread (a CUDA backward runs on the engine's own
    thread, sees no tape, and computes every gradient as usual)."""

    def __init__(self, names: dict[int, str], restarts: int | None = None):
        self.tape = WeightGradientTape(names, restarts)

    def __enter__(self) -> WeightGradientTape:
        self._outer = active_tape()
        _ACTIVE.tape = self.tape
        return self.tape

    def __exit__(self, *exc):
        _ACTIVE.tape = self._outer
