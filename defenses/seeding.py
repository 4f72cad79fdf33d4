"""Deterministic random streams for defenses.

Two kinds of randomness must never be confused: PUBLIC randomness that client and server derive
from the per-round shared seed (`ShareContext.seed`: sketch matrices), and PRIVATE randomness
that only the client has (DP noise, RQM level sampling and rounding). Private streams mix the
defense's own secret `noise_seed` with the client and round, never put it in `public`, so the
server cannot regenerate (and subtract) the noise while runs stay reproducible."""
from __future__ import annotations

import hashlib

import torch


def mix(*parts: int | str) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes, unlike hash())."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def generator(*parts: int | str) -> torch.Generator:
    return torch.Generator().manual_seed(mix(*parts))


def randn(shape, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Gaussian draws from a CPU generator, moved to the tensor's device (same numbers on any device)."""
    return torch.randn(shape, generator=gen, dtype=like.dtype).to(like.device)
