"""What the adaptive attacks that run the defense's own `share` have in common (defense-loop,
analytic-fc, layer-subset, learn-to-invert): their options' search settings, the attacker's replay of
the defense (attacks/defense_replay.py), the distance between the replayed share and the observation
(ShareMatcher, `distance = "auto"`: see attacks/defense_loop.py), labels, and the decoded update."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from fedleak.attacks.base import attack_labels
from fedleak.attacks.defense_replay import BPDA, DefenseReplay
from fedleak.attacks.distances import SHARED_DISTANCES, gaussian_nll, sign_like, sparse
from fedleak.attacks.objective import GradientMatcher
from fedleak.core.errors import ConfigError
from fedleak.core.options import check_bool, check_choice, check_integer, check_number

DISTANCE_NAMES = ("auto", "cosine", "l2", "relative-l2", "masked-cosine", "sign", "gaussian")
NOISE_KEYS = ("noise_std", "noise_sigma")


@dataclass(frozen=True)
class DefenseLoopConfig:
    distance: str = "auto"     # auto | cosine | l2 | relative-l2 | masked-cosine | sign | gaussian
    bpda: str = "auto"         # auto | straight-through | simulate (the author's model only)
    draws: int = 1             # EOT: private draws per evaluation (the Gaussian distance takes >= 4 where needed)
    start: str = "random"      # random | analytic
    optimizer: str = "adam"    # adam: IG's (signed Adam, box, TV) | lbfgs: iDLG's (L-BFGS, strong Wolfe)
    lr: float = 0.1            # the rest: IG's optimiser (attacks/inverting_gradients.py), Adam only
    tv: float = 1e-4
    signed: bool = True
    boxed: bool = True
    lr_decay: bool = True

    def __post_init__(self):
        check_choice("distance", self.distance, DISTANCE_NAMES)
        check_choice("bpda", self.bpda, BPDA)
        check_choice("start", self.start, ("random", "analytic"))
        check_choice("optimizer", self.optimizer, ("adam", "lbfgs"))
        check_integer("draws", self.draws, low=1)
        check_search(self)


def check_search(options) -> None:
    """The checks of IG's optimiser options, for an options class that carries them."""
    check_number("lr", options.lr, low=0, low_open=True)
    check_number("tv", options.tv, low=0)
    for key in ("signed", "boxed", "lr_decay"):
        check_bool(key, getattr(options, key))


class ShareMatcher(GradientMatcher):
    """GradientMatcher whose trial goes through the attacker's replay of `share` (or, without a replay,
    nothing: the server's decoding is the target) and whose distance is one of attacks/distances.py."""

    def __init__(self, observation, model, knowledge, replay: DefenseReplay | None, distance: str = "auto",
                 smooth: str = "cosine"):
        super().__init__(observation, model, knowledge, "cosine")
        self.replay = replay
        in_loop = replay is not None and replay.path in ("autograd", "straight-through")
        # a known offset (E share(0): public-seed noise, a constant) is taken off both sides
        self.offset = replay.offset if in_loop else None
        target = replay.target if replay is not None else observation.update
        self.target = [t.detach() - o for t, o in zip(target, self.offset)] if self.offset else [t.detach() for t in target]
        self.kind = _resolve(distance, self.target, replay, smooth)
        self.published = _published_variance(observation.public)
        # a per-coordinate variance needs several private draws: measured every `REFRESH` evaluations
        self.measures = self.kind == "gaussian" and in_loop and replay.random and not replay.additive
        self._variance: list[torch.Tensor] | None = None
        self._calls = 0

    def gradient(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """The client's update for trial inputs, as the threat model replays it (before any defense)."""
        return self.threat_model.replay(self.model, self.params, self.observation.buffers, x, y, self.knowledge)

    REFRESH = 10

    def trial_update(self, x, y):
        update = self.gradient(x, y)
        if self.replay is None:
            return update
        sent = self.replay(update)
        return [s - o for s, o in zip(sent, self.offset)] if self.offset else sent

    def __call__(self, x, y):
        if self.kind != "gaussian":
            return SHARED_DISTANCES[self.kind](self.trial_update(x, y), self.target)
        if not self.measures:
            if self._variance is None:
                self._variance = self.variance(None)
            return gaussian_nll(self.trial_update(x, y), self.target, self._variance)
        update = self.gradient(x, y)
        if self._variance is None or self._calls % self.REFRESH == 0:
            mean, measured = self.replay.moments(update, draws=max(4, self.replay.draws))
            self._variance = self.variance(measured)
        else:
            mean, _ = self.replay.moments(update)
        self._calls += 1
        if self.offset:
            mean = [m - o for m, o in zip(mean, self.offset)]
        return gaussian_nll(mean, self.target, self._variance)

    def variance(self, measured: list[torch.Tensor] | None) -> list[torch.Tensor]:
        """Per coordinate: the attacker's measured spread, else the published or additive noise variance,
        else the observation's own mean square (a scale-free L2); floored at 10% of its mean (measured: a
        lower floor over-trusts coordinates whose few draws happened to agree)."""
        if measured is None and self.replay is not None and self.replay.noise_variance is not None:
            measured = [v.expand_as(t) for v, t in zip(self.replay.noise_variance, self.target)]
        if measured is None and self.published is not None:
            measured = [torch.full_like(t, self.published) for t in self.target]
        if measured is None:
            measured = [t.pow(2).mean().expand_as(t) for t in self.target]
        mean = sum(float(v.sum()) for v in measured) / max(1, sum(v.numel() for v in measured))
        floor = 0.1 * mean + 1e-30
        return [v + floor for v in measured]


def _resolve(distance: str, target: list[torch.Tensor], replay: DefenseReplay | None, smooth: str) -> str:
    """"auto": the Gaussian likelihood for a random defense in the loop, sign agreement for signs, else
    `smooth` (IG's cosine for Adam; a scale-free L2 for L-BFGS, measured: exact on LeNet where cosine is not)."""
    if distance != "auto":
        return distance
    if replay is not None and replay.path in ("autograd", "straight-through") and replay.random:
        # a random defense that sends zeros: where the zeros are the client's random mask (random-k), they say
        # nothing about the update; measured: the observed support's cosine recovers what the likelihood cannot
        return "masked-cosine" if replay.expectation is not None and sparse(target) else "gaussian"
    if sign_like(target):
        return "sign"
    return smooth


def _published_variance(public: dict) -> float | None:
    for key in NOISE_KEYS:
        value = public.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value) ** 2
    return None


def probe_updates(observation, model, knowledge, labels: torch.Tensor, seed: int, count: int = 2) -> list[list[torch.Tensor]]:
    """The client's update at `count` random trial images (noiseless replay): what the attacker feeds its
    replay of the defense to learn how the defense behaves."""
    matcher = GradientMatcher(observation, model, dataclasses.replace(knowledge, defense=None))
    low, high = knowledge.box(labels.device)
    generator = torch.Generator().manual_seed(seed + 7)
    probes = []
    for _ in range(count):
        x = torch.randn((knowledge.num_images, *knowledge.image_shape), generator=generator).to(labels.device)
        with torch.enable_grad():
            probes.append([g.detach() for g in matcher.trial_update(torch.maximum(torch.minimum(x, high), low), labels)])
    return probes


def build_replay(observation, model, knowledge, labels: torch.Tensor, seed: int = 0, draws: int = 1,
                 bpda: str = "auto") -> DefenseReplay:
    return DefenseReplay(knowledge.defense, observation, probe_updates(observation, model, knowledge, labels, seed),
                         seed=seed, draws=draws, bpda=bpda, model=model)


def decoded_update(replay: DefenseReplay | None, observation) -> list[torch.Tensor]:
    """Parameter-shaped estimate of the client's update: the attacker's inversion of `share` (from the
    server's decoding where that is parameter-shaped, else from zero), or the server's decoding."""
    shapes = [p.shape for p in observation.global_params.values()]
    decoded = observation.update
    fits = [t.shape for t in decoded] == shapes
    if replay is None or replay.path == "identity":
        return [t.detach() for t in decoded] if fits else [torch.zeros_like(p) for p in observation.global_params.values()]
    start = [t.detach() for t in decoded] if fits else [torch.zeros_like(p) for p in observation.global_params.values()]
    return replay.invert(observation.shared, start)


def labels_for(observation, model, knowledge, replay: DefenseReplay | None) -> torch.Tensor:
    """Known labels, else inferred from the attacker's decoding of the update (iDLG / label counts)."""
    if knowledge.labels is not None or replay is None or replay.path == "identity":
        return attack_labels(observation, model, knowledge)
    decoded = decoded_update(replay, observation)
    return attack_labels(dataclasses.replace(observation, decoded=decoded), model, knowledge)


def provisional_labels(observation, model, knowledge) -> torch.Tensor:
    """Labels for the probes only (the replay's behaviour hardly depends on them)."""
    try:
        return attack_labels(observation, model, knowledge)
    except ConfigError:
        return torch.zeros(knowledge.num_images, dtype=torch.long, device=observation.shared[0].device)
