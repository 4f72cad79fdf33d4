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
from fedleak.harness.run.config import RunConfig
from fedleak.harness.run.provenance import row_provenance
from fedleak.harness.run.results import ResultLog, RunResult, attack_and_score
from fedleak.threat_models import build_threat_model, check_applies
from fedleak.threat_models.knowledge import knowledge_flags


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: '{name}' requested but CUDA is not available on this machine")
    return torch.device(name)


def run_attack(config: RunConfig, progress: bool = False, save_partial: bool = True, report: bool = True,
               figures=None) -> RunResult:
    """`save_partial`: write the rows after every batch (a standalone run: an interruption keeps what
    finished); a matrix cell writes once, into a scratch folder. `report`: the run's grid + Markdown;
    `figures`: reports.document.FigureOptions of that grid (default: a 100-dpi PNG)."""
    device = resolve_device(config.device)
    out = Path(config.output)
    check_writable(out)
    tm = config.threat_model
    defense = build_defense(config.defense.name, **config.defense.options)
    threat = build_threat_model(tm.name, tm.local_training(), defense, **tm.options)
    flags = knowledge_flags(tm.knowledge)
    attack = build_attack(config.attack.name, **config.attack.options)
    check_applies(threat.name, attack)
    budget = Budget(config.attack.iterations, config.attack.restarts)
    data = load_dataset(config.data.name, root=config.data.root, **config.data.options)
    if config.data.victims is None and config.data.num_victims > len(data.victim_images):
        raise ConfigError(f"data.num_victims: {config.data.num_victims:,} victims asked, but '{data.name}' holds "
                          f"{len(data.victim_images)} (0..{len(data.victim_images) - 1})")
    indices = config.data.victim_indices()
    data.victims(indices)  # an index out of range is said now, not after the victim trained
    victim = threat.build_victim(config.victim, data, defense, progress=progress).to(device)

    provenance = {"config_hash": config.digest(), "config": config.to_dict(), "seed": config.seed,
                  **round_privacy(defense, threat, config.data.batch_size),
                  **row_provenance(device), "knowledge": flags.as_dict(),
                  "attack": attack.name, "attack_params": attack.describe(), "defense": defense.name,
                  "defense_params": defense.describe(), "threat_model": threat.name,
                  "threat_model_params": threat.describe()["options"], "dataset": data.name,
                  **victim.describe(), "iterations": budget.iterations, "restarts": budget.restarts,
                  "batch_size": config.data.batch_size}
    batches = [indices[i:i + config.data.batch_size] for i in range(0, len(indices), config.data.batch_size)]
    log = ResultLog(out, save_partial)
    for number, batch in enumerate(batches):
        x, y = data.victims(batch)
        x, y = x.to(device), y.to(device)
        client, round_seed, attack_seed = batch_seeds(config, number, batch)
        # a malicious server's attack crafts what the server sends; otherwise it is the global model
        sent = threat.sent_model(victim, attack, len(batch), flags, seed=round_seed)
        scored = attack_and_score(
            lambda: threat.observe(sent, x, y, defense, flags, seed=round_seed, client_id=client),
            attack, sent.model, budget, seed=attack_seed,
            truth=threat.private_input(x),  # vertical FL: only the attacked party's columns
            labels=y, progress=progress,
            # the client's own update without the defense against the replay of what the attacker was told
            replay_error=lambda observation, knowledge: threat.replay_error(
                sent.model, sent.params, sent.buffers, sent.normalise(x), y, knowledge, seed=config.seed + client))
        # what the server sent: "global", or the attack that crafted it
        sent_by = getattr(sent, "crafted_by", "") or "global"
        log.add([{**provenance, "batch": number, "image_index": index, **row, "model_sent": sent_by,
                  "round_seed": round_seed}
                 for index, row in zip(batch, scored.rows)], scored)
    result = log.result()
    if report:
        from fedleak.reports.run_report import write_run_report
        write_run_report(result, figures=figures)
    return result


# "image": a batch's round seed comes from its first image's index, so that a randomised defense (DP noise,
# a dropout mask) is sampled afresh for every image instead of repeating one draw over all of them, while an
# image's result still does not depend on which cell holds it
IMAGE_SEED_STRIDE = 100_003   # a prime above any victim index: (seed, image) pairs never share a round seed


def batch_seeds(config: RunConfig, number: int, batch: list[int]) -> tuple[int, int, int]:
    """(client id, round seed, attack seed) of the `number`-th batch (DataConfig.batch_seed). "image" keeps
    client 0 (under HyperFL the client id picks the client's own state: the attacked model stays the same)
    and varies the round seed; the victim's global model is built once and never depends on either. The
    attack seed stays small (GGL multiplies it by 1009 into a 32-bit numpy seed)."""
    mode = config.data.batch_seed
    if mode == "image":
        offset = 1 + int(batch[0])
        return 0, config.seed * IMAGE_SEED_STRIDE + offset, config.seed * 7919 + offset
    client = number if mode == "position" else 0
    return client, config.seed + client, config.seed * 7919 + client


def round_privacy(defense, threat, batch_size: int) -> dict:
    """ε of the attacked update itself (a DP defense; else NaN): user level, one mechanism; example
    level, the local steps of this round on its B images; no amplification by sampling, since the
    server holds this very update (docs/privacy.md)."""
    unit = defense.privacy_unit
    privacy = defense.privacy(1 if unit == "user" else threat.local_steps(batch_size), 1.0) if unit else None
    if privacy is None:
        return {"epsilon_round": float("nan")}
    return {"epsilon_round": float(privacy["epsilon"]), "delta": float(privacy["delta"]),
            "neighbouring": privacy.get("neighbouring")}
