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

from fedleak.core.errors import ConfigError
from fedleak.models.functional import LocalTraining


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
    # the protocol (threat_models.base.ThreatModel.attacker_view): its replay, with its options
    threat_model: object | None = None

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
