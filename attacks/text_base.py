"""What a text attack returns, and the registry of text attacks (the image `ATTACKS` registry and its
conformance suite take image reconstructions; text attacks meet the same Observation but return token ids)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fedleak.core.components import Component
from fedleak.core.errors import ConfigError
from fedleak.core.registry import Registry
from fedleak.models.text import base_model
from fedleak.threat_models.observation import Observation

TEXT_ATTACKS: Registry[type] = Registry("text attack")


@dataclass
class TextReconstruction:
    ids: torch.Tensor                 # (K, L) token ids, K >= 1 candidates for the client's B sequences
    extras: dict = field(default_factory=dict)


class TextAttack(Component):
    """Options: one frozen dataclass. `reconstruct(observation, model, seq_len, seed)`: `model` is the
    client model as the server sent it (white box), `seq_len` the padded sequence length the protocol
    fixes (public)."""
    section = "attack"
    applies_to: tuple[str, ...] = ()

    def check_observation(self, observation: Observation) -> None:
        if observation.kind not in self.applies_to:
            raise ConfigError(f"attack '{self.name}' runs on {', '.join(self.applies_to)}, not on '{observation.kind}'")

    # whether the attack has an adaptive mode: `reconstruct(..., defense=...)` with the client's defense
    # (the evaluator's attacker knows the defense; harness.text.run passes a copy where the run is adaptive)
    adaptive: bool = False

    def reconstruct(self, observation: Observation, model: torch.nn.Module, seq_len: int, seed: int = 0,
                    defense=None) -> TextReconstruction:
        raise NotImplementedError


def transformer_of(model: torch.nn.Module):
    """The GPT2Model inside a GPT2LMHeadModel, peft-wrapped or not."""
    return base_model(model).transformer


def encoder_of(model: torch.nn.Module):
    """The BertModel inside a BertForSequenceClassification, peft-wrapped or not."""
    return base_model(model).bert


def observed(observation: Observation, suffix: str) -> torch.Tensor | None:
    """The decoded shared tensor whose parameter name ends with `suffix` (None if not shared)."""
    for name, t in zip(observation.param_names, observation.update):
        if name.endswith(suffix):
            return t
    return None
