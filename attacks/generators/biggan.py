"""Adapter: a user's BigGAN-deep generator (Brock et al., ICLR 2019) as a GenerativePrior.

Expects the module layout of the widely used PyTorch port `pytorch_pretrained_biggan.BigGAN`
(the one GGL and GIFD load): `embeddings` (Linear, one-hot class -> class embedding) and
`generator` with `gen_z` (Linear on [z, embedding]), `layers` (GenBlocks called as
`layer(h, cond, truncation)` and a SelfAttn called as `layer(h)`), `bn`, `relu`,
`conv_to_rgb`, `tanh` and `config.channel_width`. The weights are the user's; nothing is
downloaded here.

Blocks are the entries of `generator.layers` (GIFD's BigGAN stages: 12 GenBlocks + attention
= 13 for biggan-deep-256), h_0 is the 4x4 map made by `gen_z`, the head is BN-ReLU-conv-tanh.
Every GenBlock reads the conditioning vector [z, embed(y)] through its conditional BNs, so
blocks take the latent; GIFD nevertheless freezes z after stage 0 for BigGAN
(`latent_drives_blocks = False`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedleak.attacks.generators.base import GenerativePrior
from fedleak.core.errors import ConfigError

_REQUIRED = ("embeddings", "generator")
_REQUIRED_GENERATOR = ("gen_z", "layers", "bn", "relu", "conv_to_rgb", "tanh", "config")


class BigGANPrior(GenerativePrior):
    def __init__(self, module: nn.Module, truncation: float = 1.0, image_size: int | tuple[int, int] | None = None):
        super().__init__()
        missing = [a for a in _REQUIRED if not hasattr(module, a)]
        missing += [f"generator.{a}" for a in _REQUIRED_GENERATOR if not missing and not hasattr(module.generator, a)]
        if missing:
            raise ConfigError(f"BigGANPrior: module lacks {', '.join(missing)}; expected the "
                              "pytorch_pretrained_biggan.BigGAN layout")
        if not 0 < truncation <= 1:
            raise ConfigError(f"BigGANPrior: truncation must be in (0, 1], got {truncation}")
        self.module = module
        self.truncation = float(truncation)
        self.num_classes = module.embeddings.in_features
        self.latent_shape = (module.embeddings.out_features,)
        self.num_blocks = len(module.generator.layers)
        self.channels = 3
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else image_size

    def _cond(self, latent, labels):
        if labels is None:
            raise ValueError("BigGAN is class-conditional: pass labels")
        onehot = F.one_hot(labels, self.num_classes).to(latent.dtype)
        return torch.cat([latent, self.module.embeddings(onehot)], dim=1)

    def stem(self, latent, labels):
        g = self.module.generator
        h = g.gen_z(self._cond(latent, labels))
        # the port keeps TF's NHWC order for the projection's output
        return h.view(-1, 4, 4, 16 * g.config.channel_width).permute(0, 3, 1, 2).contiguous()

    def block(self, k, h, latent, labels):
        layer = self.module.generator.layers[k]
        if type(layer).__name__ == "SelfAttn":
            return layer(h)
        return layer(h, self._cond(latent, labels), self.truncation)

    def head(self, h):
        g = self.module.generator
        x = g.conv_to_rgb(g.relu(g.bn(h, self.truncation)))
        return g.tanh(x[:, :3])

    def describe(self) -> dict:
        return {**super().describe(), "truncation": self.truncation}
