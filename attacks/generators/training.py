"""Training fedleak's DCGAN prior on a dataset's auxiliary (train) split, never on victims.

Recipe, chosen to be stable on a few thousand small images in minutes on one CPU thread:
* hinge loss (Lim & Ye 2017; Miyato et al., ICLR 2018) with a spectrally normalised
  projection discriminator (Miyato & Koyama, ICLR 2018) for the class condition;
* Adam lr 2e-4, betas (0.5, 0.999), one D step per G step, batch 32: on 4,000 images the number
  of steps, not the batch, limits quality (batch 64 for the same epochs gave blobby digits);
* an exponential moving average of the generator weights (Karras et al., ICLR 2018; Yazıcı
  et al., ICLR 2019) is what is shipped, with decay 0.995 (a ~200-step horizon: 0.999 averaged
  in weights from the first third of a 4,000-step run); its BatchNorm statistics are
  re-estimated at the end because averaged weights invalidate the live generator's.
Default 30 epochs x 125 steps: about 6 CPU-minutes on one thread for digits."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from fedleak.attacks.generators.dcgan import DCGANConfig, DCGANGenerator


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    ema_decay: float = 0.995
    seed: int = 0
    latent_dim: int = 64
    width: int = 16
    conditional: bool = True


@dataclass
class TrainResult:
    generator: DCGANGenerator
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


class ProjectionDiscriminator(nn.Module):
    """Strided SN-convs -> features φ(x); score = w·φ(x) + <embed(y), φ(x)>."""

    def __init__(self, channels: int, side: int, num_classes: int | None, width: int = 32):
        super().__init__()
        sn = spectral_norm
        self.trunk = nn.Sequential(
            sn(nn.Conv2d(channels, width, 3, 1, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * width, 4 * width, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(4 * width, 4 * width, 3, 1, 1)), nn.LeakyReLU(0.2),
        )
        self.linear = sn(nn.Linear(4 * width, 1))
        self.embed = sn(nn.Embedding(num_classes, 4 * width)) if num_classes else None

    def forward(self, x, labels):
        phi = self.trunk(x).sum(dim=(2, 3))  # global sum pooling, as in SNGAN's ResNet D
        score = self.linear(phi).squeeze(1)
        if self.embed is not None:
            score = score + (self.embed(labels) * phi).sum(1)
        return score


def train_dcgan(images: torch.Tensor, labels: torch.Tensor, num_classes: int, config: TrainConfig,
                device: torch.device | str = "cpu", progress=None) -> TrainResult:
    """`images` (N,C,H,W) in [0,1]. `progress(epoch, stats)` is called after every epoch."""
    torch.manual_seed(config.seed)
    device = torch.device(device)
    n, channels, side, _ = images.shape
    gen = DCGANGenerator(DCGANConfig(latent_dim=config.latent_dim, num_classes=num_classes if config.conditional else None,
                                     channels=channels, side=side, width=config.width)).to(device)
    disc = ProjectionDiscriminator(channels, side, num_classes if config.conditional else None).to(device)
    ema = copy.deepcopy(gen).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt_g = torch.optim.Adam(gen.parameters(), lr=config.lr, betas=config.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=config.betas)
    real_all = (images * 2 - 1).to(device)
    labels = labels.to(device)
    order_rng = torch.Generator().manual_seed(config.seed)
    history, started = [], time.perf_counter()
    steps = n // config.batch_size
    for epoch in range(config.epochs):
        gen.train()
        perm = torch.randperm(n, generator=order_rng)
        sums = {"loss_d": 0.0, "loss_g": 0.0}
        for s in range(steps):
            idx = perm[s * config.batch_size:(s + 1) * config.batch_size].to(device)
            real, y = real_all[idx], labels[idx]
            z = torch.randn(len(idx), config.latent_dim, device=device)
            fake = gen.head(gen.features(gen.num_blocks, z, y if gen.num_classes else None))
            loss_d = F.relu(1 - disc(real, y)).mean() + F.relu(1 + disc(fake.detach(), y)).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            loss_g = -disc(fake, y).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            _ema_update(ema, gen, config.ema_decay)
            sums["loss_d"] += loss_d.item()
            sums["loss_g"] += loss_g.item()
        stats = {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in sums.items()},
                 "seconds": time.perf_counter() - started}
        history.append(stats)
        if progress is not None:
            progress(epoch + 1, stats)
    recalibrate_batch_norm(ema, num_classes if config.conditional else None, device, seed=config.seed)
    return TrainResult(ema.cpu().freeze(), history, time.perf_counter() - started)


@torch.no_grad()
def _ema_update(ema: nn.Module, live: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), live.parameters()):
        e.lerp_(p, 1 - decay)


@torch.no_grad()
def recalibrate_batch_norm(gen: DCGANGenerator, num_classes: int | None, device, seed: int,
                           batches: int = 20, batch_size: int = 256) -> None:
    """Cumulative (momentum=None) BN statistics of the EMA weights over fresh prior samples."""
    bns = [m for m in gen.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    gen.train()
    rng = torch.Generator().manual_seed(seed + 1)
    for _ in range(batches):
        z = torch.randn(batch_size, gen.latent_shape[0], generator=rng).to(device)
        y = torch.randint(0, num_classes, (batch_size,), generator=rng).to(device) if num_classes else None
        gen.features(gen.num_blocks, z, y)
    for bn in bns:
        bn.momentum = 0.1
    gen.eval()


