"""Gradient matching: the objective every optimisation attack minimises.

trial inputs -> threat model replay (gradient, or unrolled local training) -> the attacker's
simulation of the defense (when it knows it) -> distance to what was observed."""
from __future__ import annotations

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
