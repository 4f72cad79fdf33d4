"""One run, top to bottom: data -> victim -> threat model + defense -> observation -> attack ->
reconstruction -> scores -> rows (written after every batch, so an interruption loses nothing
that finished) -> grid + Markdown report."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from fedleak.attacks import Budget, build_attack
from fedleak.defenses import build_defense
from fedleak.harness.config import RunConfig
from fedleak.data.datasets import load_dataset
from fedleak.core.errors import ConfigError
from fedleak.metrics.image import match_to_ground_truth, score_images
from fedleak.core.io import atomic_write_bytes, check_writable
from fedleak.harness.results import versions, write_rows
from fedleak.threat_models import build_threat_model
from fedleak.threat_models.base import REPLAY_EXACT_BELOW
from fedleak.threat_models.knowledge import knowledge_flags


@dataclass
class RunResult:
    rows: pd.DataFrame
    directory: Path
    ground_truth: torch.Tensor
    reconstructions: torch.Tensor


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: '{name}' requested but CUDA is not available on this machine")
    return torch.device(name)


def run_attack(config: RunConfig, progress: bool = False) -> RunResult:
    device = resolve_device(config.device)
    out = Path(config.output)
    check_writable(out)
    tm = config.threat_model
    defense = build_defense(config.defense.name, **config.defense.options)
    threat = build_threat_model(tm.name, tm.local_training(), defense, **tm.options)
    flags = knowledge_flags(tm.knowledge)
    attack = build_attack(config.attack.name, **config.attack.options)
    budget = Budget(config.attack.iterations, config.attack.restarts)
    data = load_dataset(config.data.name, root=config.data.root, **config.data.options)
    victim = threat.build_victim(config.victim, data, defense, progress=progress).to(device)

    provenance = {"config_hash": config.digest(), "config": config.to_dict(), "seed": config.seed,
                  "device": str(device), "versions": versions(), "knowledge": flags.as_dict(),
                  "attack": attack.name, "attack_params": attack.describe(), "defense": defense.name,
                  "defense_params": defense.describe(), "threat_model": threat.name, "dataset": data.name,
                  **victim.describe(), "iterations": budget.iterations, "restarts": budget.restarts,
                  "batch_size": config.data.batch_size}
    indices = config.data.victim_indices()
    batches = [indices[i:i + config.data.batch_size] for i in range(0, len(indices), config.data.batch_size)]
    rows, truths, recons = [], [], []
    for number, batch in enumerate(batches):
        x, y = data.victims(batch)
        x, y = x.to(device), y.to(device)
        started = time.perf_counter()
        observation, knowledge = threat.observe(victim, x, y, defense, flags, seed=config.seed + number, client_id=number)
        replay_error = threat.replay_error(victim.model, victim.params, victim.buffers, victim.normalise(x), y,
                                           knowledge, seed=config.seed + number)
        reconstruction = attack.reconstruct(observation, victim.model, knowledge, budget,
                                            seed=config.seed * 7919 + number, progress=progress)
        wall = time.perf_counter() - started
        truth = threat.private_input(x)  # vertical FL: only the attacked party's columns
        order = match_to_ground_truth(reconstruction.images, truth)
        matched = reconstruction.images[order]
        scores = {k: v.cpu() for k, v in score_images(matched, truth).items()}
        matched_labels = reconstruction.labels[order] if len(reconstruction.labels) == len(x) else reconstruction.labels
        batch_label_acc = multiset_label_accuracy(reconstruction.labels, y)
        for i, index in enumerate(batch):
            rows.append({**provenance, "batch": number, "image_index": index, "true_label": int(y[i]),
                         "predicted_label": int(matched_labels[i]), "label_correct": bool(matched_labels[i] == y[i]),
                         "batch_label_accuracy": batch_label_acc, "psnr": float(scores["psnr"][i]),
                         "ssim": float(scores["ssim"][i]), "lpips": float(scores["lpips"][i]), "mse": float(scores["mse"][i]),
                         "gradient_loss": reconstruction.gradient_loss, "wall_time_s": wall,
                         "bytes_sent": observation.public.get("bytes_sent"), **replay_columns(replay_error),
                         # the arithmetic the attack really ran (IG's opt-in bfloat16 replay can fall back)
                         "precision": reconstruction.extras.get("precision", "fp32")})
        truths.append(truth.cpu())
        recons.append(matched.cpu())
        frame = write_rows(rows, out)
        save_images(out / "images.pt", torch.cat(truths), torch.cat(recons))
    result = RunResult(frame, out, torch.cat(truths), torch.cat(recons))
    from fedleak.reports.run_report import write_run_report
    write_run_report(result)
    return result


def replay_columns(error: float | None) -> dict:
    """Whether the attacker's model of the client's local training reproduces what the client did
    (ThreatModel.replay_error): None where the threat model has no such replay."""
    return {"replay_error": error, "replay_exact": None if error is None else error < REPLAY_EXACT_BELOW}


def multiset_label_accuracy(predicted: torch.Tensor, true: torch.Tensor) -> float:
    """Fraction of the batch's labels recovered, order-free (label counts, repeats included)."""
    classes = int(max(predicted.max(), true.max())) + 1
    hits = torch.minimum(torch.bincount(predicted.cpu(), minlength=classes), torch.bincount(true.cpu(), minlength=classes))
    return float(hits.sum()) / len(true)


def save_images(path: Path, ground_truth: torch.Tensor, reconstructions: torch.Tensor) -> None:
    """Atomically, like the rows beside it: a killed run never leaves half a tensor file."""
    import io
    buffer = io.BytesIO()
    torch.save({"ground_truth": ground_truth, "reconstructions": reconstructions}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
