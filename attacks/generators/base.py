"""The generator interface the generative attacks (GGL, GIFD) search through.

A generator is split into a stem, K blocks and a head:

    h_0 = stem(latent, labels)
    h_{k+1} = block(k, h_k, latent, labels)      k = 0 .. K-1
    image = head(h_K)                            in [-1, 1], native size

`features(k, latent)` is h_k and `forward_from(k, h_k, latent)` runs blocks k..K-1 and the
head, so an attack can search the latent (GGL; GIFD stage 0) or any intermediate feature map
h_k (GIFD stages k >= 1, Fang et al., ICCV 2023, Sec. 3.2). Blocks receive the latent because
in BigGAN (conditional BN) and StyleGAN2 (per-layer styles) every block reads it; a block that
does not simply ignores it. A feature state is a tensor, or a tuple of tensors when a block's
output has several parts (StyleGAN2 carries the feature map and the RGB skip image).

Images leave the interface in [0, 1] at `image_size` (area-resized when the native size
differs, as GIFD resizes BigGAN's 256px output to 64px)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

State = Union[torch.Tensor, tuple]


class GenerativePrior(nn.Module, ABC):
    """Frozen generator exposed block by block. Subclasses set `latent_shape` (per sample),
    `num_blocks`, `num_classes` (None: unconditional), `channels` and `image_size`."""

    latent_shape: tuple[int, ...]
    num_blocks: int
    num_classes: int | None = None
    channels: int = 3
    image_size: tuple[int, int] | None = None
    # True when later blocks read the latent (StyleGAN2 styles): GIFD then keeps optimising it
    # in the feature stages, as the official code does for StyleGAN2 but not for BigGAN.
    latent_drives_blocks: bool = False

    @abstractmethod
    def stem(self, latent: torch.Tensor, labels: torch.Tensor | None) -> State:
        """h_0 from the latent (and the class, for a conditional generator)."""

    @abstractmethod
    def block(self, k: int, h: State, latent: torch.Tensor, labels: torch.Tensor | None) -> State:
        """h_{k+1} from h_k."""

    @abstractmethod
    def head(self, h: State) -> torch.Tensor:
        """Image in [-1, 1] at the native size from h_K."""

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents drawn from the generator's prior (default N(0, I))."""
        return torch.randn((n, *self.latent_shape), generator=generator)

    def features(self, k: int, latent: torch.Tensor, labels: torch.Tensor | None = None) -> State:
        self._check_block(k)
        h = self.stem(latent, labels)
        for j in range(k):
            h = self.block(j, h, latent, labels)
        return h

    def forward_from(self, k: int, h: State, latent: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] at `image_size`, generated from h_k onward."""
        self._check_block(k)
        for j in range(k, self.num_blocks):
            h = self.block(j, h, latent, labels)
        return self.to_image(self.head(h))

    def forward(self, latent: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_from(0, self.stem(latent, labels), latent, labels)

    def to_image(self, raw: torch.Tensor) -> torch.Tensor:
        unit = (raw + 1) / 2
        if self.image_size is not None and tuple(unit.shape[-2:]) != tuple(self.image_size):
            unit = F.interpolate(unit, size=tuple(self.image_size), mode="area")
        return unit

    def freeze(self) -> "GenerativePrior":
        """Eval mode (BN uses running statistics: a sample never depends on its batch) and no
        parameter gradients: the attacks differentiate through the generator, never train it."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def describe(self) -> dict:
        return {"generator": type(self).__name__, "latent_shape": list(self.latent_shape),
                "num_blocks": self.num_blocks, "conditional": self.num_classes is not None}

    def _check_block(self, k: int) -> None:
        if not 0 <= k <= self.num_blocks:
            raise IndexError(f"block index {k} outside 0..{self.num_blocks}")


def state_map(fn, *states: State) -> State:
    """Apply `fn` tensor-wise to one or more feature states of the same structure."""
    if isinstance(states[0], torch.Tensor):
        return fn(*states)
    return tuple(fn(*parts) for parts in zip(*states))


def state_tensors(state: State) -> list[torch.Tensor]:
    return [state] if isinstance(state, torch.Tensor) else list(state)
