"""HashVFL (Qiu, Zhang, Ji, Fu, Yang, Wang; IEEE TIFS 19:3435–3450, 2024; methods.md §11): in
vertical FL every party sends a binary hash code of its embedding instead of the embedding.

* bit balance: BatchNorm1d centres every bit, so ±1 are about equally likely (§IV-B);
* learnability: sign() forward, identity backward (straight-through, as GreedyHash, Su et al.
  NeurIPS 2018), so the bottom models still train end to end (§IV-A);
* consistency: one random unique ±1 target code per class; the loss −⟨code, T_y⟩/bits, averaged
  over parties, pulls each party's code to its class's code (§IV-C, `utils/learn.py`).

The bottom model's output width becomes `bits` (HashVFL resizes its last layer to the code
length). It applies to embeddings only, so only the `vfl` threat model runs it."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from fedleak.core.components import EMBEDDING
from fedleak.core.errors import ConfigError
from fedleak.core.options import check_integer, check_number
from fedleak.defenses.base import Defense, ShareContext


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        return torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))  # sign(0) would send a 0

    @staticmethod
    def backward(ctx, grad):
        return grad


def sign_ste(z: torch.Tensor) -> torch.Tensor:
    """±1 forward, identity gradient backward."""
    return _SignSTE.apply(z)


class HashCodec(nn.Module):
    """BatchNorm1d (bit balance) then sign with a straight-through gradient."""

    def __init__(self, bits: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(bits)

    def pre(self, e: torch.Tensor) -> torch.Tensor:
        return self.bn(e)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return sign_ste(self.bn(e))


def class_codes(num_classes: int, bits: int, seed: int) -> torch.Tensor:
    """(classes, bits) distinct random ±1 rows (HashVFL calls them "orthogonal targets")."""
    if bits < 63 and 2 ** bits < num_classes:
        raise ConfigError(f"defense 'hashing': {bits} bits give only {2 ** bits} codes for {num_classes} classes")
    generator = torch.Generator().manual_seed(seed)
    while True:
        codes = torch.randint(0, 2, (num_classes, bits), generator=generator).float() * 2 - 1
        if len(torch.unique(codes, dim=0)) == num_classes:
            return codes


@dataclass(frozen=True)
class HashingOptions:
    bits: int = 4
    consistency: float = 1.0
    seed: int = 0

    def __post_init__(self):
        check_integer("bits", self.bits, low=1)
        check_number("consistency", self.consistency, low=0)
        check_integer("seed", self.seed, low=0)


class Hashing(Defense):
    name = "hashing"
    options_class = HashingOptions
    applies_to = (EMBEDDING,)

    @property
    def bits(self) -> int:
        return self.options.bits

    # --- the vertical-FL hooks (threat_models/vfl.py) ---
    def embedding_width(self, width: int) -> int:
        return self.bits

    def codec(self, width: int) -> nn.Module:
        return HashCodec(self.bits)

    def training_loss(self, sent: list[torch.Tensor], labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        targets = class_codes(num_classes, self.bits, self.options.seed).to(labels.device)[labels]
        agreement = torch.stack([(code * targets).sum(1).mean() for code in sent]).mean()
        return -self.options.consistency * agreement / self.bits

    # --- the Defense interface ---
    def share(self, update: list[torch.Tensor], context: ShareContext) -> tuple[list[torch.Tensor], dict]:
        return [u.detach().clone() for u in update], {"bits": self.bits}

    def bytes_sent(self, update: list[torch.Tensor]) -> int:
        return math.ceil(sum(t.numel() for t in update) / 8)  # one bit per code entry
