"""An offline stand-in for the part of `flwr_datasets` that `flwr new`'s PyTorch template calls, so the app runs
here unmodified without downloading CIFAR-10 (fedleak reads no network at run time).

It serves fedleak's 32x32 photo crops (scikit-image's photos, `fedleak.data.datasets` "photos", held-out split)
in the shape the template reads: `FederatedDataset(dataset=..., partitioners={"train": IidPartitioner(n)})`,
`.load_partition(p)` (IMAGES_PER_PARTITION images, partition p the p-th slice), `.train_test_split(test_size,
seed)` (Hugging Face's rule: ceil(test_size * n) test rows after a seeded shuffle), `.with_transform(fn)` and
rows {"img": PIL image, "label": int}. The `dataset` name is ignored: the auditor, not the app, chooses the data.

The auditor's hooks (../fedleak_hooks.py) put this folder first on sys.path; the app's own code is not edited."""
from __future__ import annotations

import math

import numpy as np

IMAGES_PER_PARTITION = 5  # 4 train + 1 test after the template's 80/20 split


def partition_rows(partition_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, 32, 32, 3), labels) of one partition: the photos' held-out crops, quantised to 8 bits
    as an image file would hold them."""
    from fedleak.data.datasets import load_dataset
    start = partition_id * IMAGES_PER_PARTITION
    x, y = load_dataset("photos").victims(list(range(start, start + IMAGES_PER_PARTITION)))
    pixels = (x.permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    return pixels, y.numpy()


class Partition:
    """The rows of one partition (or one side of its split), optionally with a transform on access."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, transform=None):
        self.pixels, self.labels, self.transform = pixels, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        from PIL import Image
        row = {"img": [Image.fromarray(self.pixels[i])], "label": [int(self.labels[i])]}
        if self.transform is not None:
            row = self.transform(row)
        return {k: v[0] for k, v in row.items()}

    def train_test_split(self, test_size: float, seed: int) -> "Splits":
        order = np.random.default_rng(seed).permutation(len(self))
        n_test = math.ceil(test_size * len(self))
        test, train = order[:n_test], np.sort(order[n_test:])
        return Splits(train=Partition(self.pixels[train], self.labels[train]),
                      test=Partition(self.pixels[test], self.labels[test]))

    def with_transform(self, transform) -> "Partition":
        return Partition(self.pixels, self.labels, transform)


class Splits(dict):
    """{"train": ..., "test": ...}, with a transform for both (as a Hugging Face DatasetDict)."""

    def with_transform(self, transform) -> "Splits":
        return Splits({k: v.with_transform(transform) for k, v in self.items()})


class FederatedDataset:
    def __init__(self, dataset: str, partitioners: dict, **_):
        self.partitioners = partitioners

    def load_partition(self, partition_id: int, split: str = "train") -> Partition:
        return Partition(*partition_rows(partition_id))
