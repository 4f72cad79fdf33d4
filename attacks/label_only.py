"""What an attacker rebuilds from the label alone: the reference every reconstruction is read against.

A class-conditional generative prior draws plausible images of a class whatever the update says: on
digits fedleak's DCGAN prior puts a digit of the right class at 8-25 dB PSNR from the victim with no
information beyond its label, and GGL under strong noise does exactly that. So "the attack rebuilt a
digit of the right class" and "the attack rebuilt this digit" are different findings (issue #12, item
3). For every class this module gives the label-only attacker's candidates:

* the class mean of the auxiliary images (the estimate that minimises the expected squared error
  given only the class, so the best label-only answer under PSNR);
* `draws` images of the class from the dataset's shipped generative prior (attacks/generators), where
  one exists for the dataset and fits its shape: what GGL/GIFD produce when the update carries nothing.

harness/matrix/checks.py scores them against each victim; the baseline of a (victim, class) pair is, per
metric, the better of the class mean's score and the median draw's (what such an attacker gets
without a lucky draw)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

DRAWS = 32


@dataclass(frozen=True)
class LabelOnly:
    """Candidates per class: `means` (classes, C, H, W) and `draws` (classes, K, C, H, W) or None,
    images in [0, 1]; `source` says what produced them."""
    means: torch.Tensor
    draws: torch.Tensor | None
    source: str


def label_only_candidates(data, draws: int = DRAWS, seed: int = 0) -> LabelOnly:
    """The class means of `data`'s auxiliary (train) split and, where fedleak ships a prior for the
    dataset that matches its shape and classes, `draws` prior images per class (seeded)."""
    means = torch.stack([_class_mean(data, c) for c in range(data.num_classes)])
    prior = _shipped_prior(data)
    if prior is None or draws < 1:
        return LabelOnly(means, None, "class mean of the auxiliary images")
    generator = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for c in range(data.num_classes):
            latent = torch.randn((draws, *prior.latent_shape), generator=generator)
            labels = torch.full((draws,), c, dtype=torch.long)
            images = prior.forward_from(0, prior.stem(latent, labels), latent, labels)
            if tuple(images.shape[-2:]) != tuple(data.shape[-2:]):
                images = torch.nn.functional.interpolate(images, size=data.shape[-2:], mode="area")
            out.append(images.clamp(0, 1))
    return LabelOnly(means, torch.stack(out), f"class mean of the auxiliary images and {draws} draws of the "
                                               f"shipped '{data.name}' prior per class")


def _class_mean(data, c: int) -> torch.Tensor:
    members = data.train_images[data.train_labels == c]
    return members.mean(0) if len(members) else data.train_images.mean(0)


def _shipped_prior(data):
    from fedleak.attacks.generators.store import SHIPPED, load_prior
    if data.name not in SHIPPED:
        return None
    prior = load_prior(data.name)
    if prior.channels != data.shape[0] or prior.num_classes != data.num_classes:
        return None
    return prior
