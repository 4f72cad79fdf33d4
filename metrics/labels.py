"""How many of a batch's labels an attack recovered."""
from __future__ import annotations

import torch


def multiset_label_accuracy(predicted: torch.Tensor, true: torch.Tensor) -> float:
    """Fraction of the batch's labels recovered, order-free (label counts, repeats included)."""
    classes = int(max(predicted.max(), true.max())) + 1
    hits = torch.minimum(torch.bincount(predicted.cpu(), minlength=classes), torch.bincount(true.cpu(), minlength=classes))
    return float(hits.sum()) / len(true)
