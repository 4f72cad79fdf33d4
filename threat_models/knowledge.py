"""What the attacker knows, as flags (the threat model) and as values (handed to an attack).

The named presets follow the threat-model taxonomy used by gradient-inversion surveys: every
attacker sees the shared update and the global weights of the round (an honest-but-curious server
has both); the presets differ in what else it knows.

| preset              | labels   | local hyperparameters | local optimiser | BN statistics | auxiliary data |
|---------------------|----------|-----------------------|-----------------|---------------|----------------|
| eavesdropper        | inferred | no                    | no              | no            | no             |
| parameter_aware     | inferred | yes                   | yes             | no            | no             |
| informed            | known    | yes                   | yes             | no            | no             |
| data_enhanced       | known    | yes                   | yes             | no            | yes            |
| statistics_informed | known    | yes                   | yes             | yes           | no             |

`hyperparameters` is the local loop (`LocalTraining`: learning rate, epochs, mini-batch size, last
partial batch, whether the client shuffles and trains BatchNorm in train mode); `optimizer` is the
optimiser on top of it (momentum, Nesterov, weight decay, Adam). An attacker told the loop but not
the optimiser replays plain SGD (`LocalTraining.without_optimizer`), which is fedleak's original
FedAvg attacker. Nobody is told a shuffling client's mini-batch order: only the client knows it.

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
    optimizer: bool = False      # the local optimiser too (momentum, Nesterov, weight decay, Adam)
    bn_statistics: bool = False
    auxiliary_data: bool = False
    defense: bool = True
    dropout_masks: bool = False  # oracle: the client's true dropout masks

    def __post_init__(self):
        if self.optimizer and not self.hyperparameters:
            raise ConfigError("threat_model.knowledge.optimizer: needs hyperparameters = true (the optimiser runs "
                              "inside the local loop the attacker would have to be told)")

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
    "parameter_aware": KnowledgeFlags(hyperparameters=True, optimizer=True),
    "informed": KnowledgeFlags(labels=True, hyperparameters=True, optimizer=True),
    "data_enhanced": KnowledgeFlags(labels=True, hyperparameters=True, optimizer=True, auxiliary_data=True),
    "statistics_informed": KnowledgeFlags(labels=True, hyperparameters=True, optimizer=True, bn_statistics=True),
}


def told_training(training: LocalTraining, flags: KnowledgeFlags) -> LocalTraining | None:
    """The local training an attacker with `flags` is told: all of it, the loop without the
    optimiser, or nothing."""
    if not flags.hyperparameters:
        return None
    return training if flags.optimizer else training.without_optimizer()


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
