"""What the attacker knows, as flags (the threat model) and as values (handed to an attack).

The named presets follow the threat-model taxonomy used by gradient-inversion surveys: every
attacker sees the shared update and the global weights of the round (an honest-but-curious server
has both); the presets differ in what else it knows.

| preset              | labels   | local hyperparameters | BN statistics | auxiliary data |
|---------------------|----------|-----------------------|---------------|----------------|
| eavesdropper        | inferred | no                    | no            | no             |
| parameter_aware     | inferred | yes                   | no            | no             |
| informed            | known    | yes                   | no            | no             |
| data_enhanced       | known    | yes                   | no            | yes            |
| statistics_informed | known    | yes                   | yes           | no             |

`defense` (the attacker knows which defense runs and its public parameters) is on by default:
a defense is only credited when it survives the attack that knows it (Kerckhoffs).

`dropout_masks` is an ORACLE flag, in no preset: the attacker gets the Bernoulli masks the
client's dropout drew for the update it shared (`AttackerKnowledge.dropout_masks`, one list per
client forward pass, one 0/1 tensor per dropout layer). A real server never sees them; it is the
upper bound "WIIG" of Scheliga et al. (AAAI 2023) that `dia-oracle` measures.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch

from harness.errors import ConfigError


@dataclass(frozen=True)
class KnowledgeFlags:
    labels: bool = False
    hyperparameters: bool = False
    bn_statistics: bool = False
    auxiliary_data: bool = False
    defense: bool = True
    dropout_masks: bool = False  # oracle: the client's true dropout masks

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "KnowledgeFlags":
        known = {f.name for f in fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"threat_model.knowledge: unknown flag '{key}'; known: {', '.join(sorted(known))}")
            if not isinstance(value, bool):
                raise ConfigError(f"threat_model.knowledge.{key}: expected true/false, got {value!r}")
        return cls(**values)


KNOWLEDGE_PRESETS: dict[str, KnowledgeFlags] = {
    "eavesdropper": KnowledgeFlags(),
    "parameter_aware": KnowledgeFlags(hyperparameters=True),
    "informed": KnowledgeFlags(labels=True, hyperparameters=True),
    "data_enhanced": KnowledgeFlags(labels=True, hyperparameters=True, auxiliary_data=True),
    "statistics_informed": KnowledgeFlags(labels=True, hyperparameters=True, bn_statistics=True),
}


def knowledge_flags(spec: str | dict) -> KnowledgeFlags:
    """A preset name, or a table of flags (optionally starting from `preset = "..."`)."""
    if isinstance(spec, str):
        if spec not in KNOWLEDGE_PRESETS:
            raise ConfigError(f"threat_model.knowledge: unknown preset '{spec}'; known: {', '.join(KNOWLEDGE_PRESETS)}")
        return KNOWLEDGE_PRESETS[spec]
    spec = dict(spec)
    base = knowledge_flags(spec.pop("preset", "eavesdropper")).as_dict()
    base.update(spec)
    return KnowledgeFlags.from_dict(base)


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


@dataclass
class AttackerKnowledge:
    """Values the attacker may use; fields the flags do not grant are None."""
    flags: KnowledgeFlags
    num_images: int
    image_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: torch.Tensor | None = None
    local_training: LocalTraining | None = None
    bn_statistics: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    auxiliary_images: torch.Tensor | None = None
    auxiliary_labels: torch.Tensor | None = None
    defense: object | None = None  # defenses.base.Defense when flags.defense
    dropout_masks: list[list[torch.Tensor]] | None = None  # per client forward pass, per dropout layer

    def box(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounds of valid images in the model's normalised input space, shaped (C,1,1)."""
        m = torch.tensor(self.mean, device=device).view(-1, 1, 1)
        s = torch.tensor(self.std, device=device).view(-1, 1, 1)
        return (0 - m) / s, (1 - m) / s

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised model input -> image in [0,1]."""
        m = torch.tensor(self.mean, device=x.device).view(-1, 1, 1)
        s = torch.tensor(self.std, device=x.device).view(-1, 1, 1)
        return (x * s + m).clamp(0, 1)
