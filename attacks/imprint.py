"""Robbing the Fed (Fowl, Geiping, Czaja, Goldblum, Goldstein, ICLR 2022): the imprint module.

The malicious server puts a linear layer of K rows in front of the model it sends (attacks/
malicious_blocks.py). Every row projects the input on the same direction w (the "linear query":
a random direction, or brightness) and thresholds it at c_k, the k/K quantile of the statistic
w·x over the server's calibration data, so each bin (c_k, c_{k+1}] holds a 1/K share of images
drawn like them (§3.1; with no auxiliary data the server assumes independent unit-variance pixels,
for which w·x is standard normal, breaching's default). Row k fires for every image above c_k, so
the gradients of adjacent rows differ by the images of one bin, and a bin with one image gives it
exactly as the difference of weight gradients ÷ the difference of bias gradients (§3, Prop. 1).
Aggregation does not help the clients: a mean of N clients' gradients is the gradient of their
N·B images' union, and the bins split that union the same way (§4.3). What limits recovery is
collisions, two images in one bin: with n images and K equal-mass bins an image is alone with
probability (1 − 1/K)^(n−1).

The attack returns every bin it could read (at most one per image), padded with blanks to the
N·B images the update covers."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fedleak.attacks.base import Attack, Budget, PresetBudget, Reconstruction
from fedleak.attacks.malicious_blocks import (RowBlock, bin_differences, body_labels, calibration_images,
                                              gaussian_thresholds, padded, prepend, ratios, row_gradients,
                                              thresholds, unit_affine)
from fedleak.core.components import GRADIENT
from fedleak.core.options import check_choice, check_integer, check_number

STATISTICS = ("random", "brightness")
# analytic: one read-out, whatever the preset
ANALYTIC = {preset: PresetBudget(iterations=1, restarts=1) for preset in ("smoke", "ci", "paper")}


@dataclass(frozen=True)
class ImprintOptions:
    bins: int = 1024            # K rows; breaching's RtF case uses 64-128 for batches of 64, more bins fewer collisions
    statistic: str = "random"   # the linear query: a random direction (breaching "randn") | brightness ("avg")
    gain: float = 1.0           # how strongly the block's output shifts the input the model sees

    def __post_init__(self):
        check_integer("bins", self.bins, low=2)
        check_choice("statistic", self.statistic, STATISTICS)
        check_number("gain", self.gain, low=0, low_open=True)


def query_direction(kind: str, size: int, generator: torch.Generator) -> torch.Tensor:
    """A unit direction in the model's (normalised) input space: zero-mean random, or the mean."""
    if kind == "brightness":
        return torch.full((size,), 1 / math.sqrt(size))
    direction = torch.randn(size, generator=generator)
    direction = direction - direction.mean()
    return direction / direction.norm()


class Imprint(Attack):
    name = "imprint"
    options_class = ImprintOptions
    applies_to = (GRADIENT,)
    crafts_model = True
    budgets = ANALYTIC

    def craft(self, victim, round):
        o = self.options
        shape = victim.data.shape
        direction = query_direction(o.statistic, math.prod(shape), torch.Generator().manual_seed(round.seed))
        if round.flags.auxiliary_data:
            std, mean = unit_affine(victim.data, shape)
            values = ((calibration_images(victim, round).flatten(1) - mean) / std) @ direction
            cuts, floor = thresholds(values, o.bins), float(values.min() - 10 * values.std())
        else:  # independent unit-variance pixels: w·x ~ N(0, 1)
            cuts, floor = gaussian_thresholds(0.0, 1.0, o.bins), -10.0
        block = RowBlock(shape, o.bins, o.gain)
        with torch.no_grad():
            block.rows.weight.copy_(direction.repeat(o.bins, 1))
            block.rows.bias.copy_(-torch.cat([torch.tensor([floor]), cuts]))
        return prepend(victim, block, self.name)

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        self.check_observation(observation)
        found = ratios(*bin_differences(*row_gradients(observation, "rows")))
        images = padded(found, knowledge.num_images, knowledge.image_shape).float()
        return Reconstruction(knowledge.to_unit(images), body_labels(model, observation, images), [], 0.0, [0.0],
                              extras={"recovered": len(found)})
