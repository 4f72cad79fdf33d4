"""A learned inverse from auxiliary data: an MLP trained to map what the attacker can compute for
its own images (leaked features, embeddings, hash codes) back to those images. Applied to the
victim's observed representation it returns the MMSE-style estimate E[x | representation] that
the auxiliary distribution supports (the "learning-based" inversion of model-inversion work,
e.g. He et al., ACSAC 2019; HashVFL, TIFS 2024, §VI uses it as the black-box attacker)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn


def fit_decoder(codes: torch.Tensor, images: torch.Tensor, steps: int, seed: int = 0, hidden: int = 512,
                batch_size: int = 128, lr: float = 1e-3) -> Callable[[torch.Tensor], torch.Tensor]:
    """Train code (N,d) → image (N,C,H,W) in [0,1] by MSE; returns the decoder as a function."""
    mean, std = codes.mean(0), codes.std(0).clamp_min(1e-6)  # raw codes may be on any scale
    shape = images.shape[1:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(codes.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                            nn.Linear(hidden, images[0].numel())).to(codes.device)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    inputs, targets = (codes - mean) / std, images.flatten(1)
    for _ in range(steps):
        pick = torch.randint(0, len(codes), (min(batch_size, len(codes)),), generator=generator).to(codes.device)
        loss = (torch.sigmoid(net(inputs[pick])) - targets[pick]).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.eval()

    def decode(observed: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(net((observed - mean) / std)).view(-1, *shape)
    return decode
