"""Gradient matching: the objective every optimisation attack minimises.

trial inputs -> threat model replay (gradient, or unrolled local training) -> the attacker's
simulation of the defense (when it knows it) -> distance to what was observed."""
from __future__ import annotations

import math

import torch

from threat_models import THREAT_MODELS
from threat_models.knowledge import AttackerKnowledge
from threat_models.observation import Observation


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
    observation. Holds the replay of the threat model and, for an attacker who knows the
    defense, the defense's simulation (adaptive attack)."""

    def __init__(self, observation: Observation, model: torch.nn.Module, knowledge: AttackerKnowledge,
                 distance: str = "cosine"):
        self.observation = observation
        self.model = model.eval()
        self.knowledge = knowledge
        self.distance = DISTANCES[distance]
        self.threat_model = THREAT_MODELS.create(observation.threat_model)
        self.params = {k: v.detach() for k, v in observation.global_params.items()}
        self.adaptive = knowledge.defense is not None
        # adaptive: compare in the space of what was sent; otherwise against the server's decoding
        self.target = [t.detach() for t in (observation.shared if self.adaptive else observation.update)]

    def trial_update(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        update = self.threat_model.replay(self.model, self.params, self.observation.buffers, x, y, self.knowledge)
        if self.adaptive:
            update = self.knowledge.defense.simulate(update, self.observation)
        return update

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(self.trial_update(x, y), self.target)


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


class _FusedCosine(torch.autograd.Function):
    """cosine_distance(trial, target) over the gradient tensors laid end to end in memory order, in a
    few chunks (`target` is already chunked the same way, built once). The backward is the closed
    form α·target + β·trial per chunk, split back into views: a handful of kernels per call instead
    of autograd's products, sums and powers per layer (which, on a loaded CPU, each wait for the
    second OpenMP thread). Chunks, not one vector: ResNet-18's 11M gradient entries (44 MB) would be
    a fresh mmap, page-faulted anew, on every call."""

    @staticmethod
    def forward(ctx, runs, target, target_norm, *trial):
        flats = [_joined(trial[a:b]) for a, b in runs]
        dot = torch.stack([torch.dot(f, t) for f, t in zip(flats, target)]).sum()
        norm = torch.stack([torch.dot(f, f) for f in flats]).sum().sqrt()
        denominator = norm * target_norm + 1e-12
        ctx.save_for_backward(*flats)
        ctx.target, ctx.runs = target, runs
        ctx.scalars = (dot, norm, target_norm, denominator)
        ctx.like = [(a.shape, a.stride()) for a in trial]
        return 1 - dot / denominator

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        flats = ctx.saved_tensors
        dot, norm, target_norm, denominator = ctx.scalars
        # d/da [1 - dot/(|a||t| + eps)] = -t/den + dot·|t|·a/(|a|·den²)
        alpha = -grad / denominator
        beta = grad * dot * target_norm / (norm * denominator * denominator)
        grads = []
        for (a, b), flat, target in zip(ctx.runs, flats, ctx.target):
            out, start = torch.addcmul(flat * beta, target, alpha), 0
            for shape, stride in ctx.like[a:b]:
                n = math.prod(shape)
                grads.append(out[start:start + n].as_strided(shape, stride))
                start += n
        return (None, None, None, *grads)


class FastGradientMatcher(GradientMatcher):
    """GradientMatcher with the same objective, computed faster for the plain FedSGD/FedAvg replay:
    the model replayed through threat_models.functional.fast_replay_model (BN folded, convolution
    backward made of convolutions) in channels_last, and the cosine fused. Falls back to the plain
    path wherever that could change behaviour: a defense that replaces the replay's gradient (its
    own functional code), another threat model, a model the replay module cannot take."""

    def __init__(self, observation: Observation, model: torch.nn.Module, knowledge: AttackerKnowledge,
                 distance: str = "cosine"):
        super().__init__(observation, model, knowledge, distance)
        from threat_models.functional import fast_replay_model
        replaced = knowledge.defense is not None and knowledge.defense.replay_gradient_fn() is not None
        plain = replaced or observation.threat_model not in ("fedsgd", "fedavg")
        self.replay_model = self.model if plain else fast_replay_model(self.model)
        self.fast = self.replay_model is not self.model
        if self.fast:
            self.params = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                           for k, v in self.params.items()}
        # the base class's simulate is the identity; any other may reshape with .view()
        self._simulates = self.adaptive and type(knowledge.defense).simulate is not _base_simulate()
        self._fused = distance == "cosine"
        self._target_norm = torch.sqrt(sum(b.pow(2).sum() for b in self.target)) if self._fused else None
        self._flat_target: list[torch.Tensor] | None = None
        self._layout: list | None = None
        self._runs: list[tuple[int, int]] | None = None

    def trial_update(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        if not self.fast:
            return super().trial_update(x, y)
        x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
        update = self.threat_model.replay(self.replay_model, self.params, self.observation.buffers, x, y,
                                          self.knowledge)
        if self._simulates:
            update = self.knowledge.defense.simulate([u.contiguous() for u in update], self.observation)
        return update

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        trial = self.trial_update(x, y)
        if not self._fused:
            return self.distance(trial, self.target)
        layout = [(a.shape, a.stride()) for a in trial]
        if layout != self._layout:
            # the target laid out like the trial tensors, once: the fused dot runs in memory order
            if [a.shape for a in trial] != [b.shape for b in self.target]:
                return self.distance(trial, self.target)
            aligned = [torch.empty_like(a).copy_(b) for a, b in zip(trial, self.target)]
            self._runs = _chunks([a.numel() for a in trial])
            self._flat_target = [_joined(aligned[a:b]).clone() for a, b in self._runs]
            self._layout = layout
        return _FusedCosine.apply(self._runs, self._flat_target, self._target_norm, *trial)

    def batched_value_and_grad(self, y: torch.Tensor, regulariser):
        """f(x) -> (d/dx, value) of distance + regulariser(x_r) for R restarts x (R, B, C, H, W) in one
        vmapped computation, or None where that is not available (then loop over restarts).

        Each restart needs its own parameter gradient, so the R replays cannot simply share a
        batch; torch.func.vmap over torch.func.grad turns them into batched/grouped convolutions
        with per-restart weight gradients. Only the plain FedSGD replay: unrolled FedAvg steps and
        defense simulations stay on the loop."""
        one = self._restart_objective(y, regulariser)
        if one is None:
            return None
        step = torch.func.vmap(torch.func.grad_and_value(one))
        return lambda x: step(x.detach())

    def batched_distance(self, y: torch.Tensor):
        """f(x) -> the distance of each of R restarts (no regulariser), vmapped; or None."""
        one = self._restart_objective(y, None)
        return None if one is None else torch.func.vmap(one)

    def _restart_objective(self, y, regulariser):
        if not (self.fast and self.observation.threat_model == "fedsgd" and not self._simulates):
            return None
        from threat_models.functional import cross_entropy
        model, params, buffers, target = self.replay_model, self.params, self.observation.buffers, self.target
        names = list(params)

        def one(x):
            grads = torch.func.grad(lambda p: cross_entropy(torch.func.functional_call(model, (p, buffers), (x,)), y))(params)
            distance = self.distance([grads[n] for n in names], target)
            return distance if regulariser is None else distance + regulariser(x)
        return one


def _base_simulate():
    from defenses.base import Defense  # lazy: defenses import threat_models, which attacks import
    return Defense.simulate
