"""The attack interface. Every attack takes the same inputs — what the server observed, the
model architecture, the attacker's knowledge, a budget — and returns a Reconstruction."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar
from dataclasses import dataclass, field

import torch

from fedleak.core.components import GRADIENT, UPDATE, Component, applicability
from fedleak.core.errors import ConfigError, NotApplicableError
from fedleak.core.options import check_size
from fedleak.threat_models.knowledge import AttackerKnowledge
from fedleak.threat_models.observation import Observation


@dataclass(frozen=True)
class Budget:
    iterations: int = 1000
    restarts: int = 1

    def __post_init__(self) -> None:
        try:
            check_size("attack.iterations", self.iterations, "iterations")
            check_size("attack.restarts", self.restarts, "restarts")
        except ConfigError as e:
            raise ConfigError(str(e)) from None


@dataclass(frozen=True)
class PresetBudget:
    """A budget under one budget preset (smoke | ci | paper): an attack's own (`Attack.budgets`, the
    published one under paper) or a matrix config's (`[budgets.<preset>]`, an attack entry's `budgets`;
    only these set `images`, victims per context when `[images].indices` is empty). None leaves a value
    to the next, more general level (harness.matrix.config.MatrixConfig.budget); the resolved numbers an
    attack runs with are a `Budget`."""
    iterations: int | None = None
    restarts: int | None = None
    images: int | None = None

    def __post_init__(self) -> None:
        for key in ("iterations", "restarts", "images"):
            if getattr(self, key) is not None:
                check_size(key, getattr(self, key), key)

    def over(self, base: "PresetBudget") -> "PresetBudget":
        """This budget's values, `base`'s where this one leaves them open."""
        return PresetBudget(*(mine if mine is not None else theirs
                              for mine, theirs in zip((self.iterations, self.restarts, self.images),
                                                      (base.iterations, base.restarts, base.images))))


@dataclass
class Reconstruction:
    images: torch.Tensor              # (B,C,H,W) in [0,1], the chosen restart
    labels: torch.Tensor              # (B,) labels the attack used or recovered
    loss_trace: list[float]           # objective of the chosen restart per iteration
    gradient_loss: float              # final matching loss of the chosen restart (no regulariser)
    restart_losses: list[float] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


class Attack(Component, ABC):
    """Options: a frozen dataclass `options_class` (self.options), parsed and checked before the
    attack exists (core.components). `applies_to`: the observation kinds it runs on (a matrix
    pairs it only with threat models that share one of them). `budgets`: its own budget per
    budget preset, the published one under "paper"; a matrix config may override either. `max_images`:
    the largest batch it rebuilds (an analytic attack on one example: 1); beyond it, a ConfigError."""
    name: ClassVar[str]
    section = "attack"
    applies_to: tuple[str, ...] = (GRADIENT, UPDATE)
    budgets: dict[str, PresetBudget] = {}
    max_images: int | None = None   # the largest client batch it rebuilds (B); None: any
    # it runs the defense's own `share` (knowledge flag `defense`): the adaptive mode only, and nothing to
    # run against a defense that sends the update as it is
    needs_defense: bool = False
    # a malicious server's attack: it crafts the model the server sends (`craft`), so it runs only
    # under a threat model whose server may do so (ThreatModel.server_crafts_model)
    crafts_model: bool = False

    def craft(self, victim: Any, round: Any) -> Any:
        """What the server sends this round instead of `victim`'s global model: a
        threat_models.malicious.CraftedVictim (`round`: threat_models.malicious.ServerRound)."""
        raise NotImplementedError(f"attack '{self.name}' crafts no model")

    @abstractmethod
    def reconstruct(self, observation: Observation, model: torch.nn.Module, knowledge: AttackerKnowledge,
                    budget: Budget, seed: int = 0, progress: bool = False) -> Reconstruction:
        """Rebuild the client's batch. Runs on the device of `observation`'s tensors; `seed`
        fixes the random initialisation."""

    def check_observation(self, observation: Observation) -> None:
        """ConfigError when this attack does not run on what `observation` is."""
        reason = applicability(self, observation.kind)
        if reason:
            raise ConfigError(reason)


def attack_labels(observation: Observation, model: torch.nn.Module, knowledge: AttackerKnowledge) -> torch.Tensor:
    """True labels when the attacker knows them, else inferred from the update."""
    if knowledge.labels is not None:
        return knowledge.labels.to(observation.shared[0].device)
    from fedleak.attacks.labels import infer_labels
    return infer_labels(observation, model, knowledge)


def require_knowledge(attack: str, knowledge: AttackerKnowledge, *flags: str) -> None:
    """A ConfigError naming the first knowledge flag the attacker lacks: the attack does not apply here
    (evaluate-defense lists it as not applicable)."""
    why = {"defense": "it runs the defense itself: the adaptive mode",
           "auxiliary_data": "it trains on auxiliary images: e.g. the data_enhanced preset",
           "hyperparameters": "it replays the client's local training: e.g. the parameter_aware preset"}
    for flag in flags:
        if not getattr(knowledge.flags, flag):
            raise NotApplicableError(f"attack '{attack}' needs the knowledge flag '{flag}' ({why.get(flag, 'see docs/attacks.md')})")
