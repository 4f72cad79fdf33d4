"""The layers a malicious server puts in front of the model it sends, and the analytic read-out they
enable (Fowl et al., "Robbing the Fed", ICLR 2022; Boenisch et al., "When the Curious Abandon
Honesty", EuroS&P 2023; Zhao et al., "LOKI", IEEE S&P 2024).

A block sits in front of the prescribed model (`Prepended`: body(block(x))). Its K rows compute
h = ReLU(W·flatten(x) + b), and it passes the input on as out = x + gain·mean_k(h_k): breaching's
parameter-free "addition" connection, so W and b are its only parameters. Every row then receives
the same backward signal from one image i, δ_i = (gain/K)·Σ_pixels ∂L_i/∂out_i, and for the mean
loss over a batch of B (IG §3; Fowl et al. §3):

    ∂L/∂W_k = (1/B) Σ_{i active at row k} δ_i x_iᵀ,      ∂L/∂b_k = (1/B) Σ_{i active at row k} δ_i.

A row (or a difference of rows) that exactly one image activates gives that image, x_i = ∂L/∂W_k ÷
∂L/∂b_k, whatever the rest of the network. Rows of the *cumulative* kind (Robbing the Fed's bins)
share one direction w and differ in their thresholds c_0 < c_1 < ..., so row k fires for the images
whose statistic w·x exceeds c_k, and the difference of adjacent rows isolates the images in the bin
(c_k, c_{k+1}]: one image, if the bin holds one. Rows of the *sparse* kind (trap weights) each fire for
few images, and a row that only one image activates gives it directly."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fedleak.threat_models.malicious import CraftedVictim, ServerRound, crafted
from fedleak.threat_models.observation import Observation

BLOCK = "block"  # the prefix of the block's parameters in what the server sends
BODY = "body"    # the prefix of the prescribed model's


class Prepended(nn.Module):
    """The prescribed model behind a malicious block: body(block(x))."""

    def __init__(self, block: nn.Module, body: nn.Module):
        super().__init__()
        self.block, self.body = block, body

    def forward(self, x):
        return self.body(self.block(x))


def _passed_on(x: torch.Tensor, h: torch.Tensor, gain: float) -> torch.Tensor:
    """out = x + gain·mean_k h_k: the input, shifted by one number per image (no parameters)."""
    return x + gain * h.mean(1).view(-1, *[1] * (x.dim() - 1))


class RowBlock(nn.Module):
    """K rows on the flattened input (Robbing the Fed's imprint module; CAH's trap layer)."""

    def __init__(self, in_shape: tuple[int, ...], rows: int, gain: float):
        super().__init__()
        self.rows = nn.Linear(math.prod(in_shape), rows)
        self.gain = gain

    def forward(self, x):
        return _passed_on(x, F.relu(self.rows(x.flatten(1))), self.gain)


class RoutedRowBlock(nn.Module):
    """LOKI's block: a 1×1 convolution routes the input into one of N blocks of C + 1 channels
    (which one is set per client by the kernels the server sends it; the other blocks stay zero),
    and K rows per block read only that block (a grouped linear layer: one group per client)."""

    def __init__(self, in_shape: tuple[int, int, int], clients: int, rows: int, gain: float):
        super().__init__()
        channels, (height, width) = in_shape[0] + 1, in_shape[1:]
        self.route = nn.Conv2d(in_shape[0], channels * clients, 1)
        self.rows = nn.Conv1d(channels * height * width * clients, rows * clients, 1, groups=clients)
        self.gain = gain

    def forward(self, x):
        routed = F.relu(self.route(x)).flatten(1).unsqueeze(-1)
        return _passed_on(x, F.relu(self.rows(routed)).squeeze(-1), self.gain)


def prepend(victim, block: nn.Module, by: str) -> CraftedVictim:
    """What the server sends: `block` in front of the victim's model, with its round's weights."""
    device = next(iter(victim.params.values())).device
    block = block.to(device)
    params = {f"{BLOCK}.{k}": v.detach().clone() for k, v in block.named_parameters()}
    params.update({f"{BODY}.{k}": v for k, v in victim.params.items()})
    buffers = {f"{BODY}.{k}": v for k, v in victim.buffers.items()}
    return crafted(victim, by, Prepended(block, victim.model), params, buffers)


def unit_affine(knowledge_or_data, shape, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(std, mean) per input entry, flattened: x_unit = std·x_norm + mean (the public normalisation)."""
    mean = torch.tensor(knowledge_or_data.mean, device=device).view(-1, 1, 1).expand(shape)
    std = torch.tensor(knowledge_or_data.std, device=device).view(-1, 1, 1).expand(shape)
    return std.reshape(-1), mean.reshape(-1)


def calibration_images(victim, round: ServerRound, count: int = 2048) -> torch.Tensor:
    """`count` images in [0, 1] the server tunes its block on: drawn from its auxiliary data where
    the knowledge grants it, else independent pixels with the published per-channel mean and std
    (clipped to [0, 1])."""
    data = victim.data
    generator = torch.Generator().manual_seed(round.seed)
    if round.flags.auxiliary_data:
        return data.train_images[torch.randperm(len(data.train_images), generator=generator)[:count]]
    std, mean = unit_affine(data, data.shape)
    noise = torch.randn(count, mean.numel(), generator=generator)
    return (noise * std + mean).clamp(0, 1).view(count, *data.shape)


def thresholds(values: torch.Tensor, bins: int) -> torch.Tensor:
    """c_1 < ... < c_{K-1}: the statistic's quantiles at k/K over the server's calibration values,
    so that each bin holds the same share of images drawn like them (Fowl et al. §3.1)."""
    levels = torch.arange(1, bins, dtype=torch.float64) / bins
    return torch.quantile(values.double().flatten(), levels.to(values.device)).to(torch.float32)


def gaussian_thresholds(mean: float, std: float, bins: int) -> torch.Tensor:
    levels = torch.arange(1, bins, dtype=torch.float64) / bins
    return (mean + std * torch.special.ndtri(levels)).to(torch.float32)


def row_gradients(observation: Observation, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂L/∂W as rows, ∂L/∂b) of the block's layer `name`, in float64: the read-out divides
    differences of sums over the whole (aggregated) batch."""
    update = dict(zip(observation.param_names, observation.update))
    weight, bias = update[f"{BLOCK}.{name}.weight"], update[f"{BLOCK}.{name}.bias"]
    sign = -1.0 if observation.descent_step else 1.0
    return sign * weight.double().flatten(1), sign * bias.double()


def bin_differences(weight_grad: torch.Tensor, bias_grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cumulative rows (row k fires above threshold c_k) -> one row per bin (c_k, c_{k+1}]."""
    return (torch.cat([weight_grad[:-1] - weight_grad[1:], weight_grad[-1:]]),
            torch.cat([bias_grad[:-1] - bias_grad[1:], bias_grad[-1:]]))


def ratios(weight_grad: torch.Tensor, bias_grad: torch.Tensor, tolerance: float = 1e-6) -> torch.Tensor:
    """∂L/∂W_k ÷ ∂L/∂b_k for every row some image activated: the row's (weighted mean) input. A row
    counts as activated when its bias gradient exceeds `tolerance` times the largest one (rounding
    leaves empty bins a few ulps from zero)."""
    scale = bias_grad.abs().max()
    if not scale > 0:
        return weight_grad.new_zeros(0, weight_grad.shape[1])
    hit = bias_grad.abs() > tolerance * scale
    return weight_grad[hit] / bias_grad[hit, None]


def distinct(candidates: torch.Tensor, decimals: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct candidates (equal to `decimals` in [0, 1]) and how many rows gave each, most first.
    A row that one image activated alone gives that image exactly, whichever row it is; mixtures
    need several images to fire together, so the same one recurs far less often."""
    if len(candidates) == 0:
        return candidates, torch.zeros(0, dtype=torch.long)
    keys = torch.round(candidates * 10 ** decimals)
    _, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    first = torch.full((len(counts),), len(candidates), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(candidates)), reduce="amin")
    order = sorted(range(len(counts)), key=lambda g: (-int(counts[g]), int(first[g])))
    return candidates[first[order]], counts[order]


def padded(images: torch.Tensor, count: int, shape) -> torch.Tensor:
    """`count` images: the first `count` given, then blanks for what was not recovered."""
    images = images[:count].reshape(-1, *shape)
    blank = images.new_zeros(count - len(images), *shape)
    return torch.cat([images, blank])


def body_labels(model: nn.Module, observation: Observation, x_norm: torch.Tensor) -> torch.Tensor:
    """The label the prescribed model (the body, with this round's weights) gives each candidate:
    how the server would label what it extracted."""
    params = {k[len(BODY) + 1:]: v for k, v in observation.global_params.items() if k.startswith(f"{BODY}.")}
    buffers = {k[len(BODY) + 1:]: v for k, v in observation.buffers.items() if k.startswith(f"{BODY}.")}
    if len(x_norm) == 0:
        return torch.zeros(0, dtype=torch.long, device=x_norm.device)
    with torch.no_grad():
        logits = functional_call(model.body, (params, buffers), (x_norm.to(next(iter(params.values())).dtype),))
    return logits.argmax(1)
