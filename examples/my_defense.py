"""An example plugin defense: random-k sparsification with relative Gaussian noise.

Each round the client sends a random fraction `keep` of its update's coordinates, rescaled by
1/keep so the server's average stays unbiased (random-k compression), and adds Gaussian noise of
standard deviation `noise` × the layer's RMS to what it sends (relative noise: one setting means
the same thing for every layer and model).

Evaluate it against every attack, non-adaptive and adaptive, next to the built-in defenses:

    fedleak evaluate-defense fedleak.examples.my_defense:RandomKNoise --budget ci

The interface it implements is documented in docs/plugins.md. What the adaptive attacker gets:
the zero pattern is visible in what was sent, and `keep` is public, so `simulate` masks a trial
update the same way; the noise is the client's secret and cannot be simulated."""
from __future__ import annotations

import hashlib

import torch

from fedleak.defenses.base import Defense, ShareContext
from fedleak.core.errors import ConfigError


class RandomKNoise(Defense):
    name = "random-k-noise"

    def __init__(self, keep: float = 0.1, noise: float = 1.0, secret: int = 0):
        # a ConfigError is shown to the user as one line naming the option
        if not 0 < keep <= 1:
            raise ConfigError(f"defense '{self.name}': keep must be in (0, 1], got {keep}")
        if noise < 0:
            raise ConfigError(f"defense '{self.name}': noise must be >= 0, got {noise}")
        self.keep, self.noise, self.secret = float(keep), float(noise), int(secret)

    def share(self, update: list[torch.Tensor], context: ShareContext) -> tuple[list[torch.Tensor], dict]:
        # Private randomness: the server knows context.seed, so the mask and noise also mix in a
        # client-side secret it never sees; client and round make every update's draw different.
        generator = torch.Generator().manual_seed(_seed(self.secret, context.client_id, context.round, context.seed))
        sent = []
        for u in update:
            u = u.detach()
            mask = (torch.rand(u.shape, generator=generator) < self.keep).to(u.dtype).to(u.device)
            rms = u.pow(2).mean().sqrt()
            noise = torch.randn(u.shape, generator=generator).to(u.dtype).to(u.device) * self.noise * rms
            sent.append(mask * (u / self.keep + noise))
        return sent, {"keep": self.keep, "noise": self.noise}

    def simulate(self, trial: list[torch.Tensor], observation) -> list[torch.Tensor]:
        keep = observation.public["keep"]
        return [t * (s != 0).to(t.dtype) / keep for t, s in zip(trial, observation.shared)]

    def bytes_sent(self, update: list[torch.Tensor]) -> int:
        return 8 * sum(int(torch.count_nonzero(t)) for t in update)  # float32 value + int32 index

    def describe(self) -> dict:
        return {"keep": self.keep, "noise": self.noise}


def _seed(*parts: int) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1
