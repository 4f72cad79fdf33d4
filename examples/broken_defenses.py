"""Defenses that look protective and are not: a test battery for fedleak's adaptive attacks.

Every class here is written the way a hurried author would write it: `share` only, with the default
(identity) `simulate` and `decode`, so the adaptive attack that relies on the author's `simulate` learns
nothing from knowing the defense. Their true leakage is known by construction:

| defense | what it does | true leakage |
|---|---|---|
| `PublicPermutation` | shuffles all coordinates, permutation from the PUBLIC round seed | undefended (invertible) |
| `PublicRotation` | random orthogonal rotation of coordinate blocks, public seed | undefended (Qᵀ undoes it) |
| `PublicSeedNoise` | adds large Gaussian noise drawn from the public seed | undefended (regenerate, subtract) |
| `ClipOnly` | scales the update to a small L2 norm | undefended (direction intact) |
| `RepresentationPruning` | Soteria-style: zeroes most classifier weight-gradient columns | near undefended (other layers intact) |
| `TwoBitRounding` | rounds every coordinate to one of 4 levels of its tensor's scale | lossy: much, not all |
| `SignOnly` | sends only the signs (signSGD) | lossy |
| `ConstantOutput` | sends zeros | nothing: the label baseline at most |
| `IndependentNoise` | sends private noise, independent of the update | nothing: the label baseline at most |

    fedleak evaluate-defense fedleak.examples.broken_defenses:PublicSeedNoise --budget ci

`tests/test_adaptive_attacks.py` checks fedleak's attacks against each of them; the full-size figures
are in docs/attacks.md (`tools/adaptive_battery.py`)."""
from __future__ import annotations

import math

import torch

from fedleak.defenses.base import Defense, ShareContext
from fedleak.defenses.seeding import generator, mix


def _public(context: ShareContext, tag: str) -> torch.Generator:
    """A stream anyone who knows the round's public context can regenerate."""
    return generator(tag, context.seed, context.client_id, context.round)


def _flat(update: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([u.detach().reshape(-1) for u in update])


class PublicPermutation(Defense):
    name = "public-permutation"

    def share(self, update, context):
        flat = _flat(update)
        order = torch.randperm(flat.numel(), generator=_public(context, "permutation")).to(flat.device)
        return [flat[order]], {}


class PublicRotation(Defense):
    """The update, padded to a multiple of `block`, cut into blocks; each block multiplied by one random
    orthogonal matrix (QR of a Gaussian), after a random permutation: all from the public seed."""
    name = "public-rotation"

    def __init__(self, block: int = 64):
        self.block = int(block)

    def share(self, update, context):
        flat = _flat(update)
        gen = _public(context, "rotation")
        q, _ = torch.linalg.qr(torch.randn(self.block, self.block, generator=gen, dtype=torch.float64))
        order = torch.randperm(flat.numel(), generator=gen).to(flat.device)
        padded = torch.cat([flat[order], flat.new_zeros(-flat.numel() % self.block)])
        return [(padded.view(-1, self.block) @ q.to(flat).T).reshape(-1)], {}


class PublicSeedNoise(Defense):
    """Adds N(0, std²) noise from the round's public seed: it looks like strong DP (std ≫ the update)."""
    name = "public-seed-noise"

    def __init__(self, std: float = 1.0):
        self.std = float(std)

    def share(self, update, context):
        gen = _public(context, "noise")
        return [u.detach() + self.std * torch.randn(u.shape, generator=gen).to(u) for u in update], {}


class ClipOnly(Defense):
    """Clips the update to L2 norm `clip` (a DP recipe without its noise)."""
    name = "clip-only"

    def __init__(self, clip: float = 1e-3):
        self.clip = float(clip)

    def share(self, update, context):
        norm = math.sqrt(sum(float(u.detach().pow(2).sum()) for u in update))
        factor = min(1.0, self.clip / (norm + 1e-12))
        return [u.detach() * factor for u in update], {}


class RepresentationPruning(Defense):
    """Soteria-style (Sun et al., CVPR 2021): zeroes a fraction `prune` of the columns of the classifier's
    weight gradient (the last 2-D parameter: its columns are the representation's features), keeping the
    columns of smallest norm; every other layer is sent as it is."""
    name = "representation-pruning"

    def __init__(self, prune: float = 0.9):
        self.prune = float(prune)

    def share(self, update, context):
        sent = [u.detach().clone() for u in update]
        index = max(i for i, u in enumerate(sent) if u.dim() == 2)
        weight = sent[index]
        drop = weight.norm(dim=0).topk(max(1, round(self.prune * weight.shape[1]))).indices
        weight[:, drop] = 0
        return sent, {}


class TwoBitRounding(Defense):
    """Each coordinate rounded to the nearest of 4 levels, s·{−1, −1/3, 1/3, 1}, s = the tensor's max |u|."""
    name = "two-bit-rounding"

    def share(self, update, context):
        sent = []
        for u in update:
            u = u.detach()
            scale = u.abs().max().clamp(min=1e-12)
            level = torch.clamp(torch.round((u / scale * 1.5) + 1.5), 0, 3)   # 0..3
            sent.append((level - 1.5) / 1.5 * scale)
        return sent, {}


class SignOnly(Defense):
    name = "sign-only"

    def share(self, update, context):
        return [torch.sign(u.detach()) for u in update], {}


class ConstantOutput(Defense):
    name = "constant-output"

    def share(self, update, context):
        return [torch.zeros_like(u) for u in update], {}


class IndependentNoise(Defense):
    """Sends N(0, 1) noise from the client's secret: the update itself never leaves the client."""
    name = "independent-noise"

    def __init__(self, secret: int = 0):
        self.secret = int(secret)

    def share(self, update, context):
        gen = generator(mix("independent", self.secret), context.seed, context.client_id, context.round)
        return [torch.randn(u.shape, generator=gen).to(u) for u in update], {}


BATTERY = (PublicPermutation, PublicRotation, PublicSeedNoise, ClipOnly, RepresentationPruning, TwoBitRounding,
           SignOnly, ConstantOutput, IndependentNoise)
