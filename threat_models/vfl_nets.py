"""Two-party vertical-FL networks (HashVFL, Qiu et al., TIFS 2024, §III; methods.md §11): each
passive party runs a bottom model on its own column slice of the image and sends a message
(a real embedding, or whatever a codec defense makes of it, e.g. a hash code); the active party
concatenates the messages and runs the top model Linear(2·width→16) + ReLU + Linear(16→classes).

The bottom model is a small CNN instead of HashVFL's ImageNet ResNet-18, so CPU runs take
seconds; the protocol and the attack surface are the same."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fedleak.core.errors import ConfigError, DataError

STAGES = ("sent", "pre", "raw")  # what the party sends | codec output before quantisation | bottom output


class BottomCNN(nn.Module):
    """conv 3×3 (C→16) ReLU, 2×2 max-pool, conv 3×3 (16→32) ReLU, 2×2 max-pool, Linear → width."""

    def __init__(self, in_shape: tuple[int, int, int], width: int):
        super().__init__()
        c, h, w = in_shape
        if h < 4 or w < 4:
            raise DataError(f"VFL bottom model cannot take a party slice of shape {tuple(in_shape)}: needs >= 4x4")
        self.conv1 = nn.Conv2d(c, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * (h // 4) * (w // 4), width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


class PlainCodec(nn.Module):
    """No defense: the party sends its embedding as is."""

    def pre(self, e: torch.Tensor) -> torch.Tensor:
        return e

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return e


def split_columns(width: int, split: float) -> list[tuple[int, int]]:
    """[(0, s), (s, W)]: party 0 holds the left `split` fraction of the columns."""
    s = round(width * split)
    if not 0 < s < width:
        raise ConfigError(f"threat_model.options.split: {split} leaves a party no columns of {width}")
    return [(0, s), (s, width)]


class VFLNet(nn.Module):
    """All parties' bottom models and codecs plus the top model, for a white-box attacker.

    forward(x) → logits for full images; forward(x_party, party=p, stage=...) → party p's
    message for its own slice (stage "sent"), the codec's real-valued output before quantisation
    ("pre") or the raw bottom output ("raw"). One forward keeps torch.func.functional_call usable."""

    def __init__(self, in_shape: tuple[int, int, int], num_classes: int, split: float, width: int, codec_factory=None):
        super().__init__()
        c, h, w = in_shape
        self.in_shape, self.num_classes, self.width = tuple(in_shape), num_classes, width
        self.columns = split_columns(w, split)
        self.bottoms = nn.ModuleList([BottomCNN((c, h, b - a), width) for a, b in self.columns])
        # codec_factory(width) -> a module, or None for the plain embedding (Defense.codec)
        self.codecs = nn.ModuleList([_codec(codec_factory, width) for _ in self.columns])
        self.top = nn.Sequential(nn.Linear(len(self.columns) * width, 16), nn.ReLU(), nn.Linear(16, num_classes))

    def party_slice(self, x: torch.Tensor, party: int) -> torch.Tensor:
        a, b = self.columns[party]
        return x[..., a:b]

    def forward(self, x: torch.Tensor, party: int | None = None, stage: str = "sent") -> torch.Tensor:
        if party is None:
            return self.top(torch.cat([self.message(self.party_slice(x, p), p) for p in range(len(self.columns))], dim=1))
        return self.message(x, party, stage)

    def message(self, x_party: torch.Tensor, party: int, stage: str = "sent") -> torch.Tensor:
        e = self.bottoms[party](x_party)
        if stage == "raw":
            return e
        codec = self.codecs[party]
        return codec(e) if stage == "sent" else codec.pre(e)


def _codec(factory, width: int) -> nn.Module:
    made = None if factory is None else factory(width)
    return PlainCodec() if made is None else made
