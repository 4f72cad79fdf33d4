"""Adapter: a user's StyleGAN2 generator (Karras et al., CVPR 2020) as a GenerativePrior.

Expects the module layout of rosinality's stylegan2-pytorch `Generator`, the port GIAS and
GIFD build on: `style` (mapping network z -> w), `input` (ConstantInput), `conv1` and
`to_rgb1` (4x4), `convs` (pairs: upsampling conv, conv per resolution), `to_rgbs`, `noises`
(buffers `noise_0..`), `n_latent`, `num_layers`, called as `conv(h, w, noise=...)` and
`to_rgb(h, w, skip)`. The weights are the user's; nothing is downloaded here.

Blocks: block 0 is conv1 + to_rgb1 at 4x4, block j >= 1 is one resolution (two convs and its
to_rgb). The state after a block is (features, RGB skip image), both searched by GIFD; the
head returns the skip image. The latent is W+ (n_latent x style_dim, GIFD's choice;
`latent_space="w+"`) or z (`"z"`, mapped by `style` inside every block). Every block reads its
styles, so GIFD keeps optimising the latent in its feature stages (`latent_drives_blocks`).
Noise maps are the module's fixed `noises` buffers (rosinality's `randomize_noise=False`);
unlike GIFD they are not optimised."""
from __future__ import annotations

import torch
from torch import nn

from fedleak.attacks.generators.base import GenerativePrior
from fedleak.core.errors import ConfigError

_REQUIRED = ("style", "style_dim", "input", "conv1", "to_rgb1", "convs", "to_rgbs", "noises", "n_latent", "num_layers")


class StyleGAN2Prior(GenerativePrior):
    latent_drives_blocks = True

    def __init__(self, module: nn.Module, latent_space: str = "w+", image_size: int | tuple[int, int] | None = None):
        super().__init__()
        missing = [a for a in _REQUIRED if not hasattr(module, a)]
        if missing:
            raise ConfigError(f"StyleGAN2Prior: module lacks {', '.join(missing)}; expected rosinality's "
                              "stylegan2-pytorch Generator layout")
        if latent_space not in ("w+", "z"):
            raise ConfigError(f"StyleGAN2Prior: latent_space must be 'w+' or 'z', got '{latent_space}'")
        self.module = module
        self.latent_space = latent_space
        self.style_dim = module.style_dim
        self.latent_shape = (module.n_latent, self.style_dim) if latent_space == "w+" else (self.style_dim,)
        self.num_blocks = 1 + len(module.to_rgbs)
        self.channels = 3
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else image_size

    def sample_latent(self, n, generator=None):
        z = torch.randn((n, self.style_dim), generator=generator)
        if self.latent_space == "z":
            return z
        with torch.no_grad():
            w = self.module.style(z.to(self._device()))
        return w.unsqueeze(1).repeat(1, self.module.n_latent, 1).cpu()

    def _device(self):
        return next(self.module.parameters()).device

    def _styles(self, latent):
        if self.latent_space == "w+":
            return latent
        return self.module.style(latent).unsqueeze(1).repeat(1, self.module.n_latent, 1)

    def _noise(self, i):
        return getattr(self.module.noises, f"noise_{i}")

    def stem(self, latent, labels):
        return self.module.input(latent)

    def block(self, k, h, latent, labels):
        m, w = self.module, self._styles(latent)
        if k == 0:
            out = m.conv1(h, w[:, 0], noise=self._noise(0))
            return out, m.to_rgb1(out, w[:, 1])
        out, skip = h
        out = m.convs[2 * k - 2](out, w[:, 2 * k - 1], noise=self._noise(2 * k - 1))
        out = m.convs[2 * k - 1](out, w[:, 2 * k], noise=self._noise(2 * k))
        return out, m.to_rgbs[k - 1](out, w[:, 2 * k + 1], skip)

    def head(self, h):
        return h[1]

    def describe(self) -> dict:
        return {**super().describe(), "latent_space": self.latent_space}
