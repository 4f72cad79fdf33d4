"""LOKI (Zhao, Sharma, Elkordy, Ezzeldin, Avestimehr, Bagchi, "LOKI: Large-scale Data Reconstruction
Attack against Federated Learning through Model Manipulation", IEEE S&P 2024).

Secure aggregation hides which client an image came from and, for Robbing the Fed, pools all
clients' images into one set of bins, so collisions grow with N. LOKI sends every client its own
model: a 1×1 convolution in front routes the client's image into a channel block of its own (its
kernels copy the image, in [0, 1], into block c for client c, plus one constant channel of ones,
and leave every other block zero), and each block has its own Robbing-the-Fed bins (K rows reading
only that block: a grouped linear layer). The architecture is the same for every client; only the
routing kernels differ. A client's gradient then lands in its own rows only (the other blocks' rows
see zeros and, with thresholds above zero, stay off), so the secure sum keeps the clients apart:
client c's images come out of block c as from a single client's imprint, whatever N (§4).

The statistic is the imprint's random projection of the image plus κ times the constant channel,
κ ten of its standard deviations, so that it is positive on every image and zero on the empty
blocks; its bins are cut like the imprint's (quantiles of the server's calibration images, or a
normal law for independent pixels with the published mean and std).

The read-out returns, block by block, the bins it could read, each block padded to B images."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from fedleak.attacks.base import Attack, Budget, Reconstruction
from fedleak.attacks.imprint import ANALYTIC, STATISTICS, query_direction
from fedleak.attacks.malicious_blocks import (BLOCK, RoutedRowBlock, bin_differences, body_labels,
                                              calibration_images, gaussian_thresholds, padded, prepend, ratios,
                                              row_gradients, thresholds, unit_affine)
from fedleak.core.components import GRADIENT
from fedleak.core.options import check_choice, check_integer, check_number

FLOOR = 1e-6  # the lowest threshold: above zero, so the empty blocks' rows never fire
OFFSET = 10.0  # κ in standard deviations of the statistic


@dataclass(frozen=True)
class LokiOptions:
    bins: int = 512             # K rows per client
    statistic: str = "random"   # the imprint's linear query: a random direction | brightness
    gain: float = 1.0

    def __post_init__(self):
        check_integer("bins", self.bins, low=2)
        check_choice("statistic", self.statistic, STATISTICS)
        check_number("gain", self.gain, low=0, low_open=True)


class Loki(Attack):
    name = "loki"
    options_class = LokiOptions
    applies_to = (GRADIENT,)
    crafts_model = True
    budgets = ANALYTIC

    def craft(self, victim, round):
        o = self.options
        shape, clients = victim.data.shape, round.clients
        size, pixels = math.prod(shape), math.prod(shape[1:])
        direction = query_direction(o.statistic, size, torch.Generator().manual_seed(round.seed))
        std, mean = unit_affine(victim.data, shape)
        spread = float((direction.pow(2) @ std.pow(2)).sqrt()) if o.statistic == "random" else float(direction @ std)
        offset = OFFSET * spread
        if round.flags.auxiliary_data:
            cuts = thresholds(calibration_images(victim, round).flatten(1) @ direction + offset, o.bins)
        else:  # independent pixels (random query) or one pixel's variation (brightness), published mean and std
            cuts = gaussian_thresholds(float(direction @ mean) + offset, spread, o.bins)
        # the row reads the image and, in its constant channel, κ spread over the channel's pixels
        weight = torch.cat([direction, torch.full((pixels,), offset / pixels)])
        block = RoutedRowBlock(shape, clients, o.bins, o.gain)
        with torch.no_grad():
            block.rows.weight.copy_(weight.view(1, -1, 1).expand(clients * o.bins, -1, 1))
            block.rows.bias.copy_((-torch.cat([torch.tensor([FLOOR]), cuts.clamp_min(2 * FLOOR)])).repeat(clients))
        sent = prepend(victim, block, self.name)
        variants = [replace(sent, params={**sent.params, **self.routing(victim, c, clients)}) for c in range(clients)]
        return replace(variants[0], variants=tuple(variants))

    @staticmethod
    def routing(victim, client: int, clients: int) -> dict[str, torch.Tensor]:
        """Client `client`'s kernels: its image in [0, 1] and a channel of ones into block `client`,
        zeros elsewhere."""
        channels = victim.data.shape[0]
        width = channels + 1
        device = next(iter(victim.params.values())).device
        weight = torch.zeros(width * clients, channels, 1, 1, device=device)
        bias = torch.zeros(width * clients, device=device)
        for j in range(channels):
            weight[client * width + j, j] = victim.data.std[j]
            bias[client * width + j] = victim.data.mean[j]
        bias[client * width + channels] = 1.0
        return {f"{BLOCK}.route.weight": weight, f"{BLOCK}.route.bias": bias}

    def reconstruct(self, observation, model, knowledge, budget: Budget, seed: int = 0, progress: bool = False):
        self.check_observation(observation)
        weight_grad, bias_grad = row_gradients(observation, "rows")
        bins, size = self.options.bins, math.prod(knowledge.image_shape)
        clients = len(bias_grad) // bins
        per_client = knowledge.num_images // clients
        found, images = [], []
        for c in range(clients):
            rows = slice(c * bins, (c + 1) * bins)
            found.append(ratios(*bin_differences(weight_grad[rows], bias_grad[rows]))[:, :size])  # the image part
            images.append(padded(found[-1], per_client, knowledge.image_shape))
        unit = torch.cat(images).float().clamp(0, 1)
        mean = torch.tensor(knowledge.mean, device=unit.device).view(-1, 1, 1)
        std = torch.tensor(knowledge.std, device=unit.device).view(-1, 1, 1)
        return Reconstruction(unit, body_labels(model, observation, (unit - mean) / std), [], 0.0, [0.0],
                              extras={"recovered": [len(f) for f in found]})
