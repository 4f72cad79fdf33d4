"""Trap weights (Boenisch, Dziedzic, Schuster, Shamsabadi, Shumailov, Papernot, "When the Curious
Abandon Honesty: Federated Learning Is Not Private", EuroS&P 2023).

The malicious server puts a ReLU layer of K "trap" rows in front of the model it sends (attacks/
malicious_blocks.py; breaching's CuriousAbandonHonesty block). Each row takes a random half of the
input entries with negative weights −|g| and the other half with the same magnitudes scaled by
s < 1, so on images in [0, 1] its pre-activation s·Σ|g|x⁺ − Σ|g|x⁻ is negative unless the image is
unusually contrasted along that row's random split: each row fires for few images, and a row that
exactly one image of the (aggregated) batch fires gives that image as its weight gradient ÷ its
bias gradient (§4). The rows act on the image in [0, 1] (the layer folds the public normalisation
into its weights and bias). The scaling factor is the paper's knob; unless set, the server
calibrates it on its calibration images (auxiliary data, or independent pixels): the factor
that isolates the most images in batches of N·B of them.

Which rows isolated one image is unknown to the server: the read-out returns every distinct ratio
(those recurring most first: a lone image gives the same ratio in every row it fires alone), at
least the N·B images the update covers, padded with blanks."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fedleak.attacks.base import Attack, Budget, Reconstruction
from fedleak.attacks.imprint import ANALYTIC
from fedleak.attacks.malicious_blocks import (RowBlock, body_labels, calibration_images, distinct, padded, prepend,
                                              ratios, row_gradients, unit_affine)
from fedleak.core.components import GRADIENT
from fedleak.core.options import check_integer, check_number


@dataclass(frozen=True)
class TrapOptions:
    rows: int = 4096             # K: more rows isolate more images
    scale: float | None = None   # s, the positive weights' factor; None: calibrated (module docstring)
    sigma: float = 0.5           # the magnitudes' N(0, σ²) (breaching's CAH case)
    gain: float = 1.0

    def __post_init__(self):
        check_integer("rows", self.rows, low=1)
        if self.scale is not None:
            check_number("scale", self.scale, low=0, low_open=True)
        check_number("sigma", self.sigma, low=0, low_open=True)
        check_number("gain", self.gain, low=0, low_open=True)


def calibrated_scale(negative, positive, images, batch: int, generator, trials: int = 8) -> float:
    """The s that isolates the most images in batches of `batch` calibration images. A row fires on
    an image iff s > Σ⁻/Σ⁺ (its negative over its positive weighted sum), so each candidate s is a
    quantile of those ratios, at the rates around 1/batch where a row most often fires for exactly
    one image; the images' uneven contrast moves the best rate, which the trial batches measure."""
    with torch.no_grad():
        ratio = (images @ negative.T) / (images @ positive.T).clamp_min(1e-12)
    batch = min(batch, len(images))
    picks = [torch.randperm(len(images), generator=generator)[:batch] for _ in range(trials)]
    sample = ratio.flatten()[torch.randperm(ratio.numel(), generator=generator)[:1 << 20]].double()
    best, best_isolated = 1.0, -1.0
    for rate in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0):
        scale = float(torch.quantile(sample, min(rate / batch, 1.0)))
        isolated = 0.0
        for pick in picks:
            fires = ratio[pick] < scale                       # images × rows
            alone = fires[:, fires.sum(0) == 1].any(1)       # an image some row fires for alone
            isolated += float(alone.float().mean()) / trials
        if isolated > best_isolated:
            best, best_isolated = scale, isolated
    return best


class TrapWeights(Attack):
    name = "trap-weights"
    options_class = TrapOptions
    applies_to = (GRADIENT,)
    crafts_model = True
    budgets = ANALYTIC

    def craft(self, victim, round):
        o = self.options
        shape, size = victim.data.shape, math.prod(victim.data.shape)
        generator = torch.Generator().manual_seed(round.seed)
        half = size // 2
        magnitudes = (torch.randn(o.rows, half, generator=generator) * o.sigma).abs()
        split = torch.stack([torch.randperm(size, generator=generator) for _ in range(o.rows)])
        negative = torch.zeros(o.rows, size).scatter_(1, split[:, :half], magnitudes)
        positive = torch.zeros(o.rows, size).scatter_(1, split[:, half:2 * half], magnitudes)
        scale = o.scale if o.scale is not None else calibrated_scale(
            negative, positive, calibration_images(victim, round).flatten(1), round.clients * round.batch_size, generator)
        weight = scale * positive - negative          # on images in [0, 1]
        std, mean = unit_affine(victim.data, shape)   # folded: W·x_unit = (W·std)·x_norm + W·mean
        block = RowBlock(shape, o.rows, o.gain)
        with torch.no_grad():
            block.rows.weight.copy_(weight * std)
            block.rows.bias.copy_(weight @ mean)
        return prepend(victim, block, self.name)

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        self.check_observation(observation)
        found = ratios(*row_gradients(observation, "rows"))
        unique, counts = distinct(knowledge.to_unit(found.float().view(-1, *knowledge.image_shape)).flatten(1))
        images = padded(unique, max(knowledge.num_images, len(unique)), knowledge.image_shape)
        low, high = knowledge.box(images.device)
        normalised = (images - torch.tensor(knowledge.mean, device=images.device).view(-1, 1, 1)) \
            / torch.tensor(knowledge.std, device=images.device).view(-1, 1, 1)
        return Reconstruction(images, body_labels(model, observation, normalised.clamp(low, high)), [], 0.0, [0.0],
                              extras={"rows_fired": len(found), "distinct": len(unique),
                                      "recurring": int((counts > 1).sum())})
