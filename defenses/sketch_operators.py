"""Random linear sketches R ∈ ℝ^{s×d} with E[RᵀR] = I (the "coordinate-wise embedding" family of
Song, Wang, Yu, Zhang, ICML 2023, notes §10), applied without ever holding a dense d×s matrix
beyond a small cache.

* Gaussian: i.i.d. N(0, 1/s) entries. R is generated in column blocks of at most
  `BLOCK_ENTRIES` entries, each block from its own seed, so R·v and Rᵀ·y regenerate exactly the
  same matrix in O(block) memory; if the whole matrix has at most `CACHE_ENTRIES` entries the
  blocks are kept, because the adaptive attack applies the same R at every iteration.
* CountSketch (Charikar, Chen, Farach-Colton 2002): one hashed bucket h(i) ∈ [s] and a sign
  σ(i) = ±1 per coordinate; R·v = Σ_i σ(i) v_i e_{h(i)}, O(d) time and memory.

Memory is bounded for both; TIME is not for the Gaussian sketch, O(s·d) per application (a
few seconds per call beyond ~10⁹ entries): use CountSketch, or `per_layer`, on large models.

Both are deterministic functions of (d, s, seed): client and server share the seed."""
from __future__ import annotations

import math

import torch

from fedleak.defenses import seeding

BLOCK_ENTRIES = 1 << 21   # 8 MB of float32 per generated block
CACHE_ENTRIES = 1 << 23   # 32 MB: larger Gaussian sketches are regenerated per call


class SketchOperator:
    def __init__(self, d: int, s: int, seed: int):
        self.d, self.s, self.seed = d, s, seed

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """R·v for a flat (d,) tensor; differentiable in v."""
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Rᵀ·y for a flat (s,) tensor."""
        raise NotImplementedError


class GaussianSketch(SketchOperator):
    def __init__(self, d: int, s: int, seed: int):
        super().__init__(d, s, seed)
        self.width = max(1, BLOCK_ENTRIES // s)
        self._cache: dict[tuple[int, torch.device], torch.Tensor] | None = {} if d * s <= CACHE_ENTRIES else None

    def _blocks(self, device: torch.device, dtype: torch.dtype):
        for index, start in enumerate(range(0, self.d, self.width)):
            stop = min(start + self.width, self.d)
            key = (index, device)
            block = self._cache.get(key) if self._cache is not None else None
            if block is None or block.dtype != dtype:
                gen = seeding.generator("gaussian-sketch", self.seed, index)
                block = (torch.randn(self.s, stop - start, generator=gen) / math.sqrt(self.s)).to(device, dtype)
                if self._cache is not None:
                    self._cache[key] = block
            yield start, stop, block

    def apply(self, v):
        out = None
        for start, stop, block in self._blocks(v.device, v.dtype):
            part = block @ v[start:stop]
            out = part if out is None else out + part
        return out

    def adjoint(self, y):
        return torch.cat([block.T @ y for _, _, block in self._blocks(y.device, y.dtype)])


class CountSketch(SketchOperator):
    def __init__(self, d: int, s: int, seed: int):
        super().__init__(d, s, seed)
        gen = seeding.generator("count-sketch", seed)
        self.buckets = torch.randint(0, s, (d,), generator=gen)
        self.signs = torch.randint(0, 2, (d,), generator=gen).float() * 2 - 1

    def _on(self, t: torch.Tensor):
        if self.buckets.device != t.device:
            self.buckets, self.signs = self.buckets.to(t.device), self.signs.to(t.device)
        return self.buckets, self.signs.to(t.dtype)

    def apply(self, v):
        buckets, signs = self._on(v)
        return torch.zeros(self.s, dtype=v.dtype, device=v.device).index_add(0, buckets, signs * v)

    def adjoint(self, y):
        buckets, signs = self._on(y)
        return signs * y[buckets]


OPERATORS = {"gaussian": GaussianSketch, "countsketch": CountSketch}
