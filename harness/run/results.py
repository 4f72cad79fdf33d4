"""Result rows: one per victim image, with the provenance needed to trace and re-run it, and the
one scoring path every producer of rows shares (the runner, hence every matrix cell, and the
Flower audit): observation -> attack -> reconstruction matched to the ground truth -> scores -> rows."""
from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from fedleak.core.errors import DataError
from fedleak.core.io import atomic_write, read_frame, save_tensors
from fedleak.metrics.image import match_to_ground_truth, score_images
from fedleak.metrics.labels import multiset_label_accuracy
from fedleak.metrics.record import LPIPS, MSE, PSNR, SSIM
from fedleak.threat_models.base import REPLAY_EXACT_BELOW

SCORES = (PSNR, SSIM, LPIPS, MSE)  # the columns score_images fills


@dataclass
class ScoredBatch:
    rows: list[dict]              # per image, in ground-truth order: labels, scores, cost
    truth: torch.Tensor | None    # (B, C, H, W) on the CPU; None without ground truth
    matched: torch.Tensor         # reconstruction i is the one matched to truth i (as the attack gave them without)
    error: Exception | None = None  # the batch failed (its rows say why)


def replay_columns(error: float | None) -> dict:
    """Whether the attacker's model of the client's local training reproduces what the client did
    (ThreatModel.replay_error): None where the threat model has no such replay."""
    return {"replay_error": error, "replay_exact": None if error is None else error < REPLAY_EXACT_BELOW}


def attack_and_score(observe: Callable[[], tuple], attack, model, budget, seed: int, truth: torch.Tensor | None,
                     labels: torch.Tensor | None, progress: bool = False,
                     replay_error: Callable[[object, object], float | None] | None = None) -> ScoredBatch:
    """`observe()` -> (observation, knowledge); the attack's reconstruction, paired with the ground
    truth (an attack recovers a batch as a set), scored. Wall time covers the observation too.
    `replay_error(observation, knowledge)`: how far the attacker's replay of the client is from the
    client (ThreatModel.replay_error), in every row, not in the wall time. `truth` None (saved
    updates without the clients' data): the rows hold the attack's labels and losses, no scores."""
    started = time.perf_counter()
    try:
        observation, knowledge = observe()
        reconstruction = attack.reconstruct(observation, model, knowledge, budget, seed=seed, progress=progress)
    except Exception as e:  # noqa: BLE001 - one batch's failure fails its images, not the run (ResultLog.result)
        return failed_batch(e, truth, labels, time.perf_counter() - started)
    wall = time.perf_counter() - started
    cost = {"gradient_loss": reconstruction.gradient_loss, "wall_time_s": wall,
            "bytes_sent": observation.public.get("bytes_sent"),
            # whether the client's model check flagged the model it received (None: no check ran)
            "model_flagged": observation.public.get("model_check", {}).get("flagged"),
            # the arithmetic the attack really ran (IG's opt-in bfloat16 replay can fall back)
            "precision": reconstruction.extras.get("precision", "fp32"),
            # which path an adaptive attack took (defense replayed, fallback, distance): docs/attacks.md
            "attack_strategy": str(reconstruction.extras.get("strategy", "")),
            **replay_path(reconstruction.extras.get("defense_replay")), "image_error": "",
            # what ended the search: the iteration cap, the convergence tolerance or the time limit
            # (None: an attack without such a loop), and the wall time per image of the batch
            "stopped_by": reconstruction.extras.get("stopped_by"),
            "iterations_run": reconstruction.extras.get("iterations_run"),
            "time_per_image_s": wall / max(1, len(truth) if truth is not None else len(reconstruction.images)),
            **replay_columns(None if replay_error is None else replay_error(observation, knowledge))}
    if truth is None:
        unscored = {"true_label": None, "label_correct": None, "batch_label_accuracy": None,
                    **{m.name: None for m in SCORES}}
        rows = [{**unscored, "predicted_label": int(label), **cost} for label in reconstruction.labels.tolist()]
        return ScoredBatch(rows, None, reconstruction.images.cpu())
    order = match_to_ground_truth(reconstruction.images, truth)
    matched = reconstruction.images[order]
    scores = {k: v.cpu() for k, v in score_images(matched, truth).items()}
    # one label per reconstructed image follows its image; anything else is an unordered multiset. There may
    # be more reconstructions than images (an aggregate over several clients, an analytic attack's haul)
    per_image = len(reconstruction.labels) == len(reconstruction.images)
    predicted = reconstruction.labels[order] if per_image else reconstruction.labels
    batch_label_accuracy = multiset_label_accuracy(predicted if per_image else reconstruction.labels, labels)
    rows = [{"true_label": int(labels[i]), "predicted_label": int(predicted[i]), "label_correct": bool(predicted[i] == labels[i]),
             "batch_label_accuracy": batch_label_accuracy, **{name: float(values[i]) for name, values in scores.items()},
             **cost}
            for i in range(len(truth))]
    return ScoredBatch(rows, truth.cpu(), matched.cpu())


def replay_path(notes: dict | None) -> dict:
    """`defense_replay`: what stood for the defense in an adaptive attack's loop: "share" (the defense's
    own share, attacks/defense_replay.py), "simulate" (the author's model), "identity" (nothing: the
    trial itself against the server's decoding), "" (the attack runs no replay); `defense_replay_note`:
    why share was not run, where it was not (its error, or what it could not do)."""
    if not notes:
        return {"defense_replay": "", "defense_replay_note": ""}
    path = str(notes.get("path", ""))
    kind = "share" if path in ("autograd", "straight-through") else "simulate" if path == "simulate" else "identity"
    failed = notes.get("failed_mid_run") or notes.get("share_error")
    why = f"share failed: {failed}" if failed else notes.get("fallback") or ""
    return {"defense_replay": kind, "defense_replay_note": "" if kind == "share" else str(why)}


def image_error(error: BaseException) -> str:
    """One line: a FedleakError's own message; anything else with its type and where it was raised."""
    from fedleak.core.errors import FedleakError
    if isinstance(error, FedleakError):
        return str(error)
    where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    return f"{type(error).__name__}: {error}" + (f" (at {Path(where.filename).name}:{where.lineno})" if where else "")


def failed_batch(error: Exception, truth: torch.Tensor | None, labels: torch.Tensor | None, wall: float) -> ScoredBatch:
    """The rows of a batch whose observation or attack raised: every image of it failed, with the reason
    (`image_error`), and no score; its reconstructions are blank."""
    count = len(truth) if truth is not None else (len(labels) if labels is not None else 1)
    base = {"gradient_loss": None, "wall_time_s": wall, "bytes_sent": None, "model_flagged": None, "precision": "",
            "attack_strategy": "", "defense_replay": "", "defense_replay_note": "", "replay_error": None,
            "replay_exact": None, "image_error": image_error(error), "stopped_by": None, "iterations_run": None,
            "time_per_image_s": None, "predicted_label": -1, "label_correct": False,
            "batch_label_accuracy": None, **{m.name: float("nan") for m in SCORES}}
    rows = [{**base, "true_label": None if labels is None else int(labels[i])} for i in range(count)]
    blank = torch.zeros_like(truth).cpu() if truth is not None else torch.empty(0)
    return ScoredBatch(rows, None if truth is None else truth.cpu(), blank, error)


@dataclass
class RunResult:
    rows: pd.DataFrame
    directory: Path
    ground_truth: torch.Tensor | None  # None: nothing to score against (saved updates without private data)
    reconstructions: torch.Tensor


class ResultLog:
    """A run's rows and images so far, rewritten (atomically) after every batch, so that an
    interruption loses nothing that finished; with `partial` off (a matrix cell, whose scratch
    folder an interruption discards anyway) written once, by `result()`."""

    def __init__(self, directory: Path, partial: bool = True):
        self.directory = Path(directory)
        self.partial = partial
        self.rows: list[dict] = []
        self.truths: list[torch.Tensor] = []
        self.reconstructions: list[torch.Tensor] = []
        self.frame = pd.DataFrame()
        self.written = 0
        self.errors: list[Exception] = []
        self.batches = 0

    def add(self, rows: list[dict], batch: ScoredBatch) -> None:
        self.rows += rows
        if batch.truth is not None:
            self.truths.append(batch.truth)
        self.reconstructions.append(batch.matched)
        self.batches += 1
        if batch.error is not None:
            self.errors.append(batch.error)
        if self.partial:
            self._write()

    def _write(self) -> None:
        self.frame = write_rows(self.rows, self.directory)
        save_tensors(self.directory / "images.pt", {"ground_truth": torch.cat(self.truths) if self.truths else torch.empty(0),
                                                    "reconstructions": torch.cat(self.reconstructions)})
        self.written = len(self.rows)

    def result(self) -> RunResult:
        """Raises the first batch's error where every batch failed: nothing of the run was scored, and the
        run (a matrix cell) is a failed one, not rows of failures."""
        if self.errors and len(self.errors) == self.batches:
            raise self.errors[0]
        if self.written < len(self.rows):
            self._write()
        return RunResult(self.frame, self.directory, torch.cat(self.truths) if self.truths else None,
                         torch.cat(self.reconstructions))


def write_rows(rows: list[dict], directory: Path) -> pd.DataFrame:
    """Write all rows so far as results.parquet and results.csv (atomically, both)."""
    return write_frame(pd.DataFrame(rows), directory)


def write_frame(frame: pd.DataFrame, directory: Path, stem: str = "results") -> pd.DataFrame:
    """`<stem>.parquet` and `<stem>.csv` in `directory`, each written atomically."""
    import io
    frame = frame.copy()
    for column in frame.columns:  # nested provenance as JSON text keeps Parquet schemas flat
        if frame[column].map(lambda v: isinstance(v, (dict, list))).any():
            frame[column] = frame[column].map(lambda v: json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list)) else v)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write(directory / f"{stem}.parquet", buffer.getvalue())
    atomic_write(directory / f"{stem}.csv", frame.to_csv(index=False).encode())
    return frame


def read_results(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if path.is_dir():
        path = path / "results.parquet"
    if not path.exists():
        raise DataError(f"no results at {path}")
    return read_frame(path, "results")
