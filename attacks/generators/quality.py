"""How good a prior is, in three numbers plus a sample grid.

* class accuracy: a small CNN trained on the auxiliary split classifies samples drawn for
  class c; the fraction labelled c (Ravuri & Vinyals 2019 "classification accuracy score"
  in its simplest direction). For an unconditional prior: the fraction of the classifier's
  predicted classes covered, reported as `class_coverage` instead.
* Fréchet distance (Heusel et al., NeurIPS 2017, FID) between that classifier's penultimate
  features of samples and of the held-out images, next to the same distance for the
  auxiliary images themselves (`fd_floor`): the prior cannot be expected to beat real data.
  The held-out images only score the prior here; nothing is trained on them.
* nearest-neighbour RMSE of samples to the auxiliary split, next to that of held-out images
  (`nn_floor`): a ratio well below 1 would mean the prior memorised its training images.
Everything is seeded, so the same prior always gets the same figures."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

from fedleak.attacks.generators.base import GenerativePrior

EVAL_SEED = 12345


@dataclass
class PriorQuality:
    class_accuracy: float | None
    class_coverage: float
    fd: float
    fd_floor: float
    nn_rmse: float
    nn_floor: float
    classifier_accuracy: float   # of the reference classifier on held-out images, for context
    samples: int

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        acc = "n/a" if self.class_accuracy is None else f"{self.class_accuracy:.1%}"
        return (f"class accuracy {acc} (classifier: {self.classifier_accuracy:.1%} on held-out), "
                f"FD {self.fd:.2f} (real aux: {self.fd_floor:.2f}), "
                f"NN-RMSE to aux {self.nn_rmse:.3f} (held-out: {self.nn_floor:.3f})")


class _Classifier(nn.Module):
    def __init__(self, channels: int, num_classes: int, side: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                   nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                   nn.Linear(32 * (side // 4) ** 2, 64), nn.ReLU())
        self.out = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.out(self.trunk(x))


def train_classifier(images, labels, num_classes, epochs: int = 4, seed: int = EVAL_SEED) -> _Classifier:
    torch.manual_seed(seed)
    net = _Classifier(images.shape[1], num_classes, images.shape[-1])
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    rng = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(images), generator=rng).split(64):
            loss = F.cross_entropy(net(images[idx] * 2 - 1), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def sample_prior(prior: GenerativePrior, n: int, num_classes: int, seed: int = EVAL_SEED):
    """n samples in [0,1] with balanced labels (class-conditional) or none."""
    rng = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    z = prior.sample_latent(n, rng)
    images = torch.cat([prior(zc, lc if prior.num_classes else None) for zc, lc in zip(z.split(250), labels.split(250))])
    return images.clamp(0, 1), labels


def evaluate_prior(prior: GenerativePrior, data, samples: int = 1000) -> PriorQuality:
    """`data` is a data.datasets.ImageData; the prior must produce images of its shape."""
    net = train_classifier(data.train_images, data.train_labels, data.num_classes)
    with torch.no_grad():
        return _score(prior, data, net, samples)


def _score(prior, data, net, samples) -> PriorQuality:
    fake, labels = sample_prior(prior.freeze(), samples, data.num_classes)
    held = data.victim_images[:samples]
    aux = data.train_images
    feats = lambda x: torch.cat([net.trunk(c * 2 - 1) for c in x.split(500)]).double().numpy()
    logits = torch.cat([net(c * 2 - 1) for c in fake.split(500)])
    predicted = logits.argmax(1)
    held_acc = float((net(held * 2 - 1).argmax(1) == data.victim_labels[:samples]).float().mean())
    aux_sub = aux[torch.randperm(len(aux), generator=torch.Generator().manual_seed(EVAL_SEED))[:samples]]
    return PriorQuality(
        class_accuracy=float((predicted == labels).float().mean()) if prior.num_classes else None,
        class_coverage=len(predicted.unique()) / data.num_classes,
        fd=frechet_distance(feats(fake), feats(held)),
        fd_floor=frechet_distance(feats(aux_sub), feats(held)),
        nn_rmse=nearest_rmse(fake, aux), nn_floor=nearest_rmse(held, aux),
        classifier_accuracy=held_acc, samples=samples)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    # dead ReLU features make both covariances singular; a tiny ridge keeps sqrtm well defined
    ridge = 1e-6 * np.eye(a.shape[1])
    cov_a, cov_b = np.cov(a, rowvar=False) + ridge, np.cov(b, rowvar=False) + ridge
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root.real))


def nearest_rmse(queries: torch.Tensor, pool: torch.Tensor) -> float:
    """Mean over queries of the per-pixel RMSE to the closest pool image."""
    q, p = queries.flatten(1), pool.flatten(1)
    best = torch.cat([torch.cdist(c, p).min(1).values for c in q.split(256)])
    return float((best / q.shape[1] ** 0.5).mean())


def class_samples(prior: GenerativePrior, num_classes: int, per_class: int = 10) -> list[tuple[str, torch.Tensor]]:
    """`per_class` fixed-seed samples of every class (one row of samples for an unconditional
    prior), as (row label, images in [0,1]): what a sample grid shows."""
    rows = []
    with torch.no_grad():
        z = prior.sample_latent(per_class * num_classes, torch.Generator().manual_seed(EVAL_SEED))
        for c in range(num_classes if prior.num_classes else 1):
            zc = z[c * per_class:(c + 1) * per_class]
            y = torch.full((per_class,), c, dtype=torch.long) if prior.num_classes else None
            rows.append((f"class {c}" if prior.num_classes else "samples", prior(zc, y).clamp(0, 1)))
    return rows
