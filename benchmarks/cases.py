"""The benchmark case shared by both sides: one 32x32x3 image, FedSGD gradient, known label.

One victim image of the bundled "photos" set (32x32 colour crops, offline; CIFAR-10 itself cannot be
downloaded here) attacked on fedleak's ConvNet or ResNet-18 (CIFAR stem), untrained, default width 64.
`write_case` saves everything breaching's worker needs so it attacks the identical network and gradient.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from fedleak.attacks import Budget, build_attack
from fedleak.defenses import NoDefense
from fedleak.threat_models import THREAT_MODELS
from fedleak.threat_models.knowledge import knowledge_flags

TV = 1e-4          # fedleak's IG default (inversefed CLI); breaching gets the same scale
VICTIM_INDEX = 0


@dataclass
class Case:
    model_name: str
    victim: object
    observation: object
    knowledge: object
    truth: torch.Tensor        # (1,3,32,32) in [0,1]
    labels: torch.Tensor

    def attack(self, iterations: int, restarts: int = 1, seed: int = 0, precision: str = "fp32"):
        atk = build_attack("ig", tv=TV, precision=precision)
        return atk.reconstruct(self.observation, self.victim.model, self.knowledge,
                               Budget(iterations=iterations, restarts=restarts), seed=seed)


@functools.lru_cache(maxsize=None)
def photos():
    from fedleak.data.datasets import load_dataset
    return load_dataset("photos")


def build_case(model_name: str, victim_index: int = VICTIM_INDEX) -> Case:
    from fedleak.threat_models.victim import VictimSpec, build_victim
    data = photos()
    victim = build_victim(VictimSpec(model=model_name), data)
    x, y = data.victims([victim_index])
    # "informed": the label is known to both frameworks, so neither spends time inferring it
    observation, knowledge = THREAT_MODELS.get("fedsgd")().observe(victim, x, y, NoDefense(),
                                                                  knowledge_flags("informed"))
    return Case(model_name, victim, observation, knowledge, x, y)


def write_case(case: Case, path) -> None:
    data = photos()
    torch.save({
        "model": case.model_name, "options": {}, "num_classes": data.num_classes, "shape": list(data.shape),
        "params": [p.clone() for p in case.victim.params.values()],
        "buffers": [b.clone() for b in case.victim.buffers.values()],
        "gradient": [g.clone() for g in case.observation.shared],
        "labels": case.labels.clone(), "truth": case.truth.clone(),
        "mean": list(data.mean), "std": list(data.std),
    }, path)
