"""Connecting a prior to one attack run: threat-model check, shape check, and the map from the
generator's images to the victim model's normalised input.

A generator trained on auxiliary data is side knowledge of the attacker (GGL, Li et al., CVPR
2022, Sec. 3: "a GAN trained on public data of the same domain"), so the generative attacks
require the `auxiliary_data` knowledge flag rather than quietly granting it."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fedleak.attacks.generators.base import GenerativePrior
from fedleak.core.errors import ConfigError, NotApplicableError
from fedleak.threat_models.knowledge import AttackerKnowledge


class BoundPrior:
    def __init__(self, prior: GenerativePrior, knowledge: AttackerKnowledge, device):
        self.prior = prior.to(device)
        self.size = tuple(knowledge.image_shape[-2:])
        self.mean = torch.tensor(knowledge.mean, device=device).view(-1, 1, 1)
        self.std = torch.tensor(knowledge.std, device=device).view(-1, 1, 1)

    def image(self, k: int, h, latent: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Images in [0, 1] at the dataset's size, generated from h_k."""
        unit = self.prior.forward_from(k, h, latent, self.condition(labels))
        if tuple(unit.shape[-2:]) != self.size:
            unit = F.interpolate(unit, size=self.size, mode="area")
        return unit

    def generate(self, latent: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.image(0, self.prior.stem(latent, self.condition(labels)), latent, labels)

    def condition(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        return labels if self.prior.num_classes is not None else None

    def model_input(self, unit: torch.Tensor) -> torch.Tensor:
        return (unit - self.mean) / self.std


def bind_prior(prior: str | GenerativePrior, knowledge: AttackerKnowledge, attack: str, device) -> BoundPrior:
    if not knowledge.flags.auxiliary_data:
        raise NotApplicableError(
            f"attack '{attack}' uses a generator trained on auxiliary data: enable the knowledge flag, e.g. "
            "--knowledge data_enhanced or --set 'threat_model.knowledge={preset=\"eavesdropper\", auxiliary_data=true}'")
    if not isinstance(prior, GenerativePrior):
        from fedleak.attacks.generators.store import load_prior
        prior = load_prior(prior)
    channels = knowledge.image_shape[0]
    if prior.channels != channels:
        raise ConfigError(f"attack '{attack}': the prior makes {prior.channels}-channel images, the data has {channels}")
    if prior.num_classes is not None and prior.num_classes != knowledge.num_classes:
        raise ConfigError(f"attack '{attack}': the prior is conditioned on {prior.num_classes} classes, "
                          f"the data has {knowledge.num_classes}")
    return BoundPrior(prior, knowledge, device)


def describe_prior(prior: str | GenerativePrior) -> dict | str:
    return prior.describe() if isinstance(prior, GenerativePrior) else str(prior)
