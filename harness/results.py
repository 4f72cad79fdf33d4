"""Result rows: one per victim image, with the provenance needed to trace and re-run it, and the
one scoring path every producer of rows shares (the runner, hence every matrix cell, and the
Flower audit): observation -> attack -> reconstruction matched to the ground truth -> scores -> rows."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from fedleak.core.errors import DataError
from fedleak.core.io import atomic_write, read_frame, save_tensors
from fedleak.metrics.image import match_to_ground_truth, score_images
from fedleak.metrics.labels import multiset_label_accuracy


@dataclass
class ScoredBatch:
    rows: list[dict]          # per image, in ground-truth order: labels, scores, cost
    truth: torch.Tensor       # (B, C, H, W) on the CPU
    matched: torch.Tensor     # reconstruction i is the one matched to truth i


def attack_and_score(observe: Callable[[], tuple], attack, model, budget, seed: int, truth: torch.Tensor,
                     labels: torch.Tensor, progress: bool = False) -> ScoredBatch:
    """`observe()` -> (observation, knowledge); the attack's reconstruction, paired with the ground
    truth (an attack recovers a batch as a set), scored. Wall time covers the observation too."""
    started = time.perf_counter()
    observation, knowledge = observe()
    reconstruction = attack.reconstruct(observation, model, knowledge, budget, seed=seed, progress=progress)
    wall = time.perf_counter() - started
    order = match_to_ground_truth(reconstruction.images, truth)
    matched = reconstruction.images[order]
    scores = {k: v.cpu() for k, v in score_images(matched, truth).items()}
    predicted = reconstruction.labels[order] if len(reconstruction.labels) == len(truth) else reconstruction.labels
    batch_label_accuracy = multiset_label_accuracy(reconstruction.labels, labels)
    rows = [{"true_label": int(labels[i]), "predicted_label": int(predicted[i]), "label_correct": bool(predicted[i] == labels[i]),
             "batch_label_accuracy": batch_label_accuracy, **{name: float(values[i]) for name, values in scores.items()},
             "gradient_loss": reconstruction.gradient_loss, "wall_time_s": wall,
             "bytes_sent": observation.public.get("bytes_sent"),
             # the arithmetic the attack really ran (IG's opt-in bfloat16 replay can fall back)
             "precision": reconstruction.extras.get("precision", "fp32")}
            for i in range(len(truth))]
    return ScoredBatch(rows, truth.cpu(), matched.cpu())


@dataclass
class RunResult:
    rows: pd.DataFrame
    directory: Path
    ground_truth: torch.Tensor
    reconstructions: torch.Tensor


class ResultLog:
    """A run's rows and images so far, rewritten (atomically) after every batch, so that an
    interruption loses nothing that finished."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.rows: list[dict] = []
        self.truths: list[torch.Tensor] = []
        self.reconstructions: list[torch.Tensor] = []
        self.frame = pd.DataFrame()

    def add(self, rows: list[dict], batch: ScoredBatch) -> None:
        self.rows += rows
        self.truths.append(batch.truth)
        self.reconstructions.append(batch.matched)
        self.frame = write_rows(self.rows, self.directory)
        save_tensors(self.directory / "images.pt", {"ground_truth": torch.cat(self.truths),
                                                    "reconstructions": torch.cat(self.reconstructions)})

    def result(self) -> RunResult:
        return RunResult(self.frame, self.directory, torch.cat(self.truths), torch.cat(self.reconstructions))


def write_rows(rows: list[dict], directory: Path) -> pd.DataFrame:
    """Write all rows so far as results.parquet and results.csv (atomically, both)."""
    return write_frame(pd.DataFrame(rows), directory)


def write_frame(frame: pd.DataFrame, directory: Path) -> pd.DataFrame:
    import io
    frame = frame.copy()
    for column in frame.columns:  # nested provenance as JSON text keeps Parquet schemas flat
        if frame[column].map(lambda v: isinstance(v, (dict, list))).any():
            frame[column] = frame[column].map(lambda v: json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list)) else v)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write(directory / "results.parquet", buffer.getvalue())
    atomic_write(directory / "results.csv", frame.to_csv(index=False).encode())
    return frame


def read_results(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if path.is_dir():
        path = path / "results.parquet"
    if not path.exists():
        raise DataError(f"no results at {path}")
    return read_frame(path, "results")
