"""fedleak's own prior: a small class-conditional DCGAN generator (Radford et al., ICLR 2016),
with nearest-neighbour upsampling + 3x3 convolutions in place of transposed convolutions
(Odena et al., Distill 2016: no checkerboard artefacts) and the one-hot class concatenated to
the latent (Mirza & Osindero 2014), so GGL's "search within the inferred class" applies.

Blocks (for 28x28, base width w):
    h_0 = z                                   (latent_dim)
    block 0: linear([z, onehot]) -> 4w x s x s, BN, ReLU        s = side / 4
    block 1: up x2, conv 4w -> 2w, BN, ReLU
    block 2: up x2, conv 2w ->  w, BN, ReLU
    block 3: conv w -> w, BN, ReLU            (full resolution refinement)
    head:    conv w -> C, tanh
Distinct intermediate maps at three resolutions give GIFD its feature stages."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedleak.attacks.generators.base import GenerativePrior


@dataclass(frozen=True)
class DCGANConfig:
    latent_dim: int = 64
    num_classes: int | None = 10
    channels: int = 1
    side: int = 28          # output side; must be divisible by 4
    width: int = 16

    def to_dict(self) -> dict:
        return asdict(self)


class NearestUp2x(nn.Module):
    """Nearest-neighbour x2 upsampling by broadcasting: on CPU several times faster than
    F.interpolate's kernel at these sizes, and twice differentiable like it."""

    def forward(self, x):
        n, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


def _up_block(c_in: int, c_out: int, upsample: bool) -> nn.Sequential:
    layers = [NearestUp2x()] if upsample else []
    return nn.Sequential(*layers, nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class DCGANGenerator(GenerativePrior):
    def __init__(self, config: DCGANConfig | None = None, **options):
        super().__init__()
        c = self.config = config or DCGANConfig(**options)
        if c.side % 4:
            raise ValueError(f"DCGAN side must be divisible by 4, got {c.side}")
        self.latent_shape = (c.latent_dim,)
        self.num_classes = c.num_classes
        self.channels = c.channels
        self.image_size = (c.side, c.side)
        self.num_blocks = 4
        self._base = c.side // 4
        w = c.width
        self.project = nn.Linear(c.latent_dim + (c.num_classes or 0), 4 * w * self._base ** 2, bias=False)
        self.project_bn = nn.BatchNorm2d(4 * w)
        self.blocks = nn.ModuleList([_up_block(4 * w, 2 * w, True), _up_block(2 * w, w, True), _up_block(w, w, False)])
        self.to_rgb = nn.Conv2d(w, c.channels, 3, padding=1)

    def stem(self, latent, labels):
        return latent

    def block(self, k, h, latent, labels):
        if k > 0:
            return self.blocks[k - 1](h)
        if self.num_classes is not None:
            if labels is None:
                raise ValueError("this DCGAN prior is class-conditional: pass labels")
            h = torch.cat([h, F.one_hot(labels, self.num_classes).to(h.dtype)], dim=1)
        x = self.project(h).view(h.shape[0], -1, self._base, self._base)
        return F.relu(self.project_bn(x))

    def head(self, h):
        return torch.tanh(self.to_rgb(h))

    def describe(self) -> dict:
        return {**super().describe(), **self.config.to_dict()}
