"""One run, top to bottom: data -> victim -> threat model + defense -> observation -> attack ->
reconstruction -> scores -> rows (written after every batch, so an interruption loses nothing
that finished) -> grid + Markdown report."""
from __future__ import annotations

from pathlib import Path

import torch

from fedleak.attacks import Budget, build_attack
from fedleak.core.errors import ConfigError
from fedleak.core.io import check_writable
from fedleak.data.datasets import load_dataset
from fedleak.defenses import build_defense
from fedleak.harness.config import RunConfig
from fedleak.harness.provenance import row_provenance
from fedleak.harness.results import ResultLog, RunResult, attack_and_score
from fedleak.models.functional import LocalTraining
from fedleak.threat_models import build_threat_model, check_applies
from fedleak.threat_models.knowledge import knowledge_flags


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: '{name}' requested but CUDA is not available on this machine")
    return torch.device(name)


def run_attack(config: RunConfig, progress: bool = False, figures=None) -> RunResult:
    """`figures`: reports.document.FigureOptions of the run's grid (default: a 100-dpi PNG)."""
    device = resolve_device(config.device)
    out = Path(config.output)
    check_writable(out)
    tm = config.threat_model
    defense = build_defense(config.defense.name, **config.defense.options)
    threat = build_threat_model(tm.name, LocalTraining(tm.lr, tm.epochs, tm.local_batch_size), defense, **tm.options)
    flags = knowledge_flags(tm.knowledge)
    attack = build_attack(config.attack.name, **config.attack.options)
    check_applies(threat.name, attack)
    budget = Budget(config.attack.iterations, config.attack.restarts)
    data = load_dataset(config.data.name, root=config.data.root, **config.data.options)
    indices = config.data.victim_indices()
    data.victims(indices)  # an index out of range is said now, not after the victim trained
    victim = threat.build_victim(config.victim, data, defense, progress=progress).to(device)

    provenance = {"config_hash": config.digest(), "config": config.to_dict(), "seed": config.seed,
                  **row_provenance(device), "knowledge": flags.as_dict(),
                  "attack": attack.name, "attack_params": attack.describe(), "defense": defense.name,
                  "defense_params": defense.describe(), "threat_model": threat.name, "dataset": data.name,
                  **victim.describe(), "iterations": budget.iterations, "restarts": budget.restarts,
                  "batch_size": config.data.batch_size}
    batches = [indices[i:i + config.data.batch_size] for i in range(0, len(indices), config.data.batch_size)]
    log = ResultLog(out)
    for number, batch in enumerate(batches):
        x, y = data.victims(batch)
        x, y = x.to(device), y.to(device)
        scored = attack_and_score(
            lambda: threat.observe(victim, x, y, defense, flags, seed=config.seed + number, client_id=number),
            attack, victim.model, budget, seed=config.seed * 7919 + number,
            truth=threat.private_input(x),  # vertical FL: only the attacked party's columns
            labels=y, progress=progress)
        log.add([{**provenance, "batch": number, "image_index": index, **row} for index, row in zip(batch, scored.rows)],
                scored)
    result = log.result()
    from fedleak.reports.run_report import write_run_report
    write_run_report(result, figures=figures)
    return result
