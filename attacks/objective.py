"""Gradient matching: the objective every optimisation attack minimises.

trial inputs -> threat model replay (gradient, or unrolled local training) -> the attacker's
simulation of the defense (when it knows it) -> distance to what was observed."""
from __future__ import annotations

import math
import warnings

import torch

from fedleak.core.errors import ConfigError
from fedleak.threat_models.fast_replay import fast_replay_model
from fedleak.threat_models.gradient_tape import recording, widened
from fedleak.threat_models.knowledge import AttackerKnowledge
from fedleak.threat_models.observation import Observation


def cosine_distance(trial: list[torch.Tensor], target: list[torch.Tensor]) -> torch.Tensor:
    """1 − <g̃,g>/(‖g̃‖‖g‖) with ONE global cosine over all layers (IG, inversefed `sim`)."""
    dot = sum((a * b).sum() for a, b in zip(trial, target))
    trial_norm = torch.sqrt(sum(a.pow(2).sum() for a in trial))
    target_norm = torch.sqrt(sum(b.pow(2).sum() for b in target))
    return 1 - dot / (trial_norm * target_norm + 1e-12)


def l2_distance(trial: list[torch.Tensor], target: list[torch.Tensor]) -> torch.Tensor:
    """Σ_layers ‖g̃ − g‖² (DLG's objective, no normalisation)."""
    return sum((a - b).pow(2).sum() for a, b in zip(trial, target))


DISTANCES = {"cosine": cosine_distance, "l2": l2_distance}


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic mean-abs TV as in inversefed/GIFD/DIA."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


class GradientMatcher:
    """Callable objective: distance between the update trial inputs would produce and the
    observation. Holds the replay of the threat model (the configured protocol, options and all,
    as the attacker's knowledge carries it) and, for an attacker who knows the defense, the
    defense's simulation (adaptive attack)."""

    def __init__(self, observation: Observation, model: torch.nn.Module, knowledge: AttackerKnowledge,
                 distance: str = "cosine", orders: list[torch.Tensor] | None = None):
        self.observation = observation
        self.orders = orders  # fedavg: the epochs' visiting orders of the trial inputs (FedAvg.replay)
        self.model = model.eval()
        self.knowledge = knowledge
        self.distance = DISTANCES[distance]
        if knowledge.threat_model is None:
            raise ConfigError("gradient matching needs the protocol's replay: AttackerKnowledge.threat_model is "
                              "not set (ThreatModel.knowledge sets it)")
        self.threat_model = knowledge.threat_model
        self.params = {k: v.detach() for k, v in observation.global_params.items()}
        self.adaptive = knowledge.defense is not None
        # adaptive: compare in the space of what was sent; otherwise against the server's decoding
        self.target = [t.detach() for t in (observation.shared if self.adaptive else observation.update)]

    def _replay(self, model, params, buffers, x, y) -> list[torch.Tensor]:
        extra = {} if self.orders is None else {"orders": self.orders}
        return self.threat_model.replay(model, params, buffers, x, y, self.knowledge, **extra)

    def trial_update(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        update = self._replay(self.model, self.params, self.observation.buffers, x, y)
        if self.adaptive:
            update = self.knowledge.defense.simulate(update, self.observation)
        return update

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(self.trial_update(x, y), self.target)

    precision = "fp32"  # the arithmetic of the replay (FastGradientMatcher may run bfloat16)

    def batched_value_and_grad(self, y: torch.Tensor, regulariser):
        """Restarts as one batch (FastGradientMatcher); None: the caller loops over restarts."""
        return None

    def batched_distance(self, y: torch.Tensor):
        return None


def _flat(t: torch.Tensor) -> torch.Tensor:
    """1-D view in memory order (contiguous or channels_last); a copy for anything else."""
    if t.is_contiguous():
        return t.view(-1)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).reshape(-1)
    return t.contiguous().view(-1)


_CHUNK = 1 << 22  # elements (16 MB): under glibc's largest mmap threshold, so buffers get reused


def _chunks(sizes: list[int]) -> list[tuple[int, int]]:
    """[start, stop) runs of consecutive tensors holding at most _CHUNK elements (or one tensor)."""
    runs, start, total = [], 0, 0
    for i, n in enumerate(sizes):
        if i > start and total + n > _CHUNK:
            runs.append((start, i))
            start, total = i, 0
        total += n
    runs.append((start, len(sizes)))
    return runs


def _joined(tensors) -> torch.Tensor:
    return _flat(tensors[0]) if len(tensors) == 1 else torch.cat([_flat(t) for t in tensors])


class _FusedDots(torch.autograd.Function):
    """(<trial, target>, <trial, trial>) over the gradient tensors laid end to end in memory order, in a
    few chunks (`target` is already chunked the same way, built once). The backward is the closed
    form g_dot·target + 2·g_sq·trial per chunk, split back into views: a handful of kernels per call
    instead of autograd's products and sums per layer (which, on a loaded CPU, each wait for the
    second OpenMP thread). Chunks, not one vector: ResNet-18's 11M gradient entries (44 MB) would be
    a fresh mmap, page-faulted anew, on every call."""

    @staticmethod
    def forward(ctx, runs, target, *trial):
        # a bfloat16 replay's gradients are compared in float32 (the target never leaves float32)
        flats = [widened(_joined(trial[a:b])) for a, b in runs]
        dot = torch.stack([torch.dot(f, t) for f, t in zip(flats, target)]).sum()
        squared = torch.stack([torch.dot(f, f) for f in flats]).sum()
        ctx.save_for_backward(*flats)
        ctx.target, ctx.runs = target, runs
        ctx.like = [(a.shape, a.stride()) for a in trial]
        ctx.dtype = trial[0].dtype
        return dot, squared

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_dot, grad_squared):
        grads = []
        for (a, b), flat, target in zip(ctx.runs, ctx.saved_tensors, ctx.target):
            out, start = torch.addcmul(flat * (2 * grad_squared), target, grad_dot).to(ctx.dtype), 0
            for shape, stride in ctx.like[a:b]:
                n = math.prod(shape)
                grads.append(out[start:start + n].as_strided(shape, stride))
                start += n
        return (None, None, *grads)


class FastGradientMatcher(GradientMatcher):
    """GradientMatcher with the same objective, computed faster for the plain FedSGD/FedAvg replay:
    the model replayed through threat_models.fast_replay.fast_replay_model (BN folded, convolution
    backward made of convolutions) in channels_last, and the cosine fused. Falls back to the plain
    path wherever that could change behaviour: a defense that replaces the replay's gradient (its
    own functional code), another threat model, a model the replay module cannot take.

    precision="bf16" replays the model in bfloat16 (parameters, activations and their gradients; the
    convolutions accumulate in float32) while the distance, its target and everything the optimiser
    sees stay float32. Only on the fast replay; elsewhere it stays float32 (`self.precision` says which
    ran). It changes the arithmetic, so it is opt-in: docs/performance.md has its measured cost in PSNR.
    implicit_weights: whether one restart leaves cheap convolution weight gradients implicit
    (threat_models.gradient_tape); None: only in bfloat16, see below."""

    def __init__(self, observation: Observation, model: torch.nn.Module, knowledge: AttackerKnowledge,
                 distance: str = "cosine", precision: str = "fp32", implicit_weights: bool | None = None,
                 orders: list[torch.Tensor] | None = None):
        super().__init__(observation, model, knowledge, distance, orders)
        replaced = knowledge.defense is not None and knowledge.defense.replay_gradient_fn() is not None
        # the replay module is the model in eval mode (BatchNorm folded): not a train-mode client's
        train_mode = knowledge.local_training is not None and knowledge.local_training.train_mode
        plain = replaced or train_mode or not self.threat_model.replays_plain_model
        self.replay_model = self.model if plain else fast_replay_model(self.model)
        self.fast = self.replay_model is not self.model
        self.precision = precision if self.fast else "fp32"
        if precision != self.precision:
            warnings.warn(f"precision {precision!r} needs the fast replay, which this case cannot use: float32",
                          stacklevel=2)
        self.buffers = self.observation.buffers
        if self.fast:
            self.params = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                           for k, v in self.params.items()}
        if self.precision == "bf16":
            self.params = {k: v.to(torch.bfloat16) for k, v in self.params.items()}
            self.buffers = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in self.buffers.items()}
        self._dtype = dtype = next(iter(self.params.values())).dtype
        # the base class's simulate is the identity; any other may reshape with .view()
        self._simulates = self.adaptive and type(knowledge.defense).simulate is not _base_simulate()
        self._fused = distance == "cosine"
        self._target_norm = torch.sqrt(sum(b.pow(2).sum() for b in self.target)) if self._fused else None
        self._flat_target: list[torch.Tensor] | None = None
        self._layout: tuple | None = None
        self._runs: list[tuple[int, int]] | None = None
        # FedSGD's trial gradient is the loss gradient itself, so the replay may leave parameter gradients
        # to a tape (threat_models.gradient_tape): implicit convolution weights, and restarts as one batch
        self._taped = self._fused and self.fast and self.threat_model.replay_is_loss_gradient and not self._simulates \
            and [p.shape for p in self.params.values()] == [t.shape for t in self.target]
        # One restart in float32 keeps every weight gradient explicit. The implicit form is exact (and closer
        # to float64 than the explicit one), yet on ResNet-18 it left IG 1-3 dB lower after 500 iterations on
        # every image tried: signed Adam gained from the explicit path's rounding noise (docs/performance.md).
        # In bfloat16 the replay's own rounding dominates, and the implicit form's speed is kept.
        self._implicit_single = self._taped and (self.precision == "bf16" if implicit_weights is None
                                                 else implicit_weights)
        self._storage_names = {p.data_ptr(): n for n, p in self.params.items()} if self._taped else {}
        self._targets = dict(zip(self.params, self.target)) if self._taped else {}
        self._conv_targets = {n: t.contiguous(memory_format=torch.channels_last).to(dtype)
                              for n, t in self._targets.items() if t.dim() == 4}

    def trial_update(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        if not self.fast:
            return super().trial_update(x, y)
        x = x.to(self._dtype)
        x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
        update = self._replay(self.replay_model, self.params, self.buffers, x, y)
        if self._simulates:
            update = self.knowledge.defense.simulate([u.contiguous() for u in update], self.observation)
        return update

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self._fused:
            return self.distance(self.trial_update(x, y), self.target)
        tape = None
        if self._implicit_single:
            with recording(self._storage_names) as tape:
                trial = self.trial_update(x, y)
        else:
            trial = self.trial_update(x, y)
        if [a.shape for a in trial] != [b.shape for b in self.target]:
            return self.distance(trial, self.target)
        recorded = tape.recorded() if tape is not None else set()
        explicit = [i for i, name in enumerate(self.params) if name not in recorded] if recorded \
            else range(len(trial))  # a defense's simulation may send fewer tensors than parameters
        layout = (recorded, [(trial[i].shape, trial[i].stride()) for i in explicit])
        if layout != self._layout:
            # the target laid out like the trial tensors, once: the fused dot runs in memory order
            aligned = [torch.empty_like(trial[i], dtype=widened(self.target[i]).dtype).copy_(self.target[i])
                       for i in explicit]
            self._runs = _chunks([a.numel() for a in aligned])
            self._flat_target = [_joined(aligned[a:b]).clone() for a, b in self._runs]
            self._layout = layout
        dot, squared = _FusedDots.apply(self._runs, self._flat_target, *[trial[i] for i in explicit])
        if recorded:
            taped_dot, taped_squared = tape.matched(self._targets, self._conv_targets)
            dot, squared = dot + taped_dot[0], squared + taped_squared[0]
        return self._cosine(dot, squared)

    def _cosine(self, dot: torch.Tensor, squared: torch.Tensor) -> torch.Tensor:
        return 1 - dot / (squared.sqrt() * self._target_norm + 1e-12)

    def batched_value_and_grad(self, y: torch.Tensor, regulariser):
        """f(x) -> (d/dx, value) of distance + regulariser(x_r) for R restarts x (R, B, C, H, W) computed as
        one batch, or None where that is not available (then the caller loops over restarts). f itself
        returns None when the first call finds a parameter the tape could not record."""
        if not self._taped:
            return None

        def step(x):
            x = x.detach().requires_grad_(True)
            distances = self._restart_distances(x, y)
            if distances is None:
                return None
            values = distances + torch.stack([regulariser(xr) for xr in x])
            (grad,) = torch.autograd.grad(values.sum(), x)
            return grad, values.detach()
        return step

    def batched_distance(self, y: torch.Tensor):
        """f(x) -> the distance of each of R restarts (no regulariser) as one batch; or None."""
        if not self._taped:
            return None

        def distances(x):
            with torch.enable_grad():  # the replay differentiates the loss once
                values = self._restart_distances(x.detach(), y)
            return None if values is None else values.detach()
        return distances

    def _restart_distances(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Distance of each restart: the R restarts stacked along the batch axis share every layer, and
        the tape splits the parameter gradients per restart. Exact, because eval-mode layers treat
        samples independently and the cosine ignores the 1/R that a mean over R*B samples puts on them."""
        restarts = x.shape[0]
        labels = y.repeat(restarts, *[1] * (y.dim() - 1))
        with recording(self._storage_names, restarts) as tape:
            self.trial_update(x.flatten(0, 1), labels)
        if tape.recorded() != set(self.params):
            self._taped = False   # a layer the tape does not know: restarts go back to the loop
            return None
        dot, squared = tape.matched(self._targets, self._conv_targets)
        return self._cosine(dot, squared)


def _base_simulate():
    from fedleak.defenses.base import Defense  # lazy: defenses import threat_models, which attacks import
    return Defense.simulate
