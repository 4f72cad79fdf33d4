"""Leakage vs cost of the dp / sketch / prune / quantize defenses, each at two strengths:
Inverting Gradients (or DLG) with and without knowledge of the defense (adaptive: `KnowledgeFlags.defense`
on, the attack matches `observation.shared` through `Defense.simulate`; non-adaptive: off, it
matches the server's decoding), median PSNR / SSIM / LPIPS over held-out victims (FedSGD, B=1,
known labels), next to what the defense costs (harness/matrix/utility.py): accuracy after R FedAvg
rounds with vs without it, upload bytes per client per round, ε where it is DP.

Every reconstruction is also scored on one common yardstick, the adaptive objective (distance in
the space of what was sent), so an adaptive attack that does worse than the non-adaptive one can
be told apart as an optimisation failure (better yardstick, worse image) or a modelling one.

    python tools/defense_matrix.py --output runs/defense-matrix             # everything (~30-60 min, 1 core)
    python tools/defense_matrix.py --only sketch prune --skip-utility --iterations 100
    python tools/defense_matrix.py --attack dlg --iterations 40 --only dp quantize --output runs/defense-matrix-dlg

Rows are appended to <output>/rows.csv after every (defense, path) cell, and finished cells are
skipped on a rerun, so an interrupted matrix resumes; utility results are cached by harness/matrix/utility.py."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from fedleak.attacks import Budget, build_attack
from fedleak.attacks.objective import GradientMatcher
from fedleak.defenses import build_defense
from fedleak.data.datasets import load_dataset
from fedleak.metrics.image import score_images
from fedleak.harness.matrix.utility import measure_utility
from fedleak.threat_models import THREAT_MODELS
from fedleak.threat_models.victim import VictimSpec, build_victim

# LeNet (sigmoid) needs small batches and lr 0.5 to train at all in a few rounds: 0.89 after 6.
UTILITY_ROUNDS = 6
CLIENTS = 5
LOCAL_BATCH = 8
LOCAL_EPOCHS = 2
LOCAL_LR = 0.5
# Clipping scales picked from the untrained LeNet on digits: a B=1 gradient has norm ~23 and
# |entries| q99 ~0.9; a client round's Δθ has norm ~8-12 and |entries| q99 ~0.3-0.4.
UPDATE_CLIP = 10.0
EXAMPLE_CLIP = 5.0
RQM_CLIP = 0.5


def defense_grid(rounds: int, shard: int) -> list[tuple[str, str, dict]]:
    """(label, defense, options). The DP-SGD row is calibrated for the utility run's own
    accounting: rounds × local steps, sampling rate local batch / shard."""
    steps = rounds * LOCAL_EPOCHS * -(-shard // LOCAL_BATCH)
    return [
        ("none", "none", {}),
        ("dp update σ=0.01", "dp", {"mode": "update", "clip": UPDATE_CLIP, "sigma": 0.01}),
        ("dp update σ=0.1", "dp", {"mode": "update", "clip": UPDATE_CLIP, "sigma": 0.1}),
        ("dp dpsgd ε=8", "dp", {"mode": "dpsgd", "clip": EXAMPLE_CLIP, "target_epsilon": 8.0, "delta": 1e-5,
                                "steps": steps, "sampling_rate": LOCAL_BATCH / shard}),
        ("sketch cs r=0.1", "sketch", {"kind": "countsketch", "ratio": 0.1}),
        ("sketch cs r=0.01", "sketch", {"kind": "countsketch", "ratio": 0.01}),
        ("sketch gauss/layer r=0.1", "sketch", {"kind": "gaussian", "ratio": 0.1, "per_layer": True}),
        ("sketch gauss/layer r=0.01", "sketch", {"kind": "gaussian", "ratio": 0.01, "per_layer": True}),
        ("prune keep 0.1", "prune", {"ratio": 0.1}),
        ("prune keep 0.01", "prune", {"ratio": 0.01}),
        ("rqm m=16", "quantize", {"clip": RQM_CLIP, "levels": 16, "keep": 0.5}),
        ("rqm m=4", "quantize", {"clip": RQM_CLIP, "levels": 4, "keep": 0.5}),
    ]


def attack_cell(victim, defense_name, options, adaptive: bool, victims: list[int], budget: Budget, attack: str,
                attack_options: dict) -> list[dict]:
    from fedleak.threat_models.knowledge import KnowledgeFlags
    rows = []
    threat = THREAT_MODELS.create("fedsgd")
    for index in victims:
        x, y = victim.data.victims([index])
        defense = build_defense(defense_name, **options)
        started = time.perf_counter()
        observation, knowledge = threat.observe(victim, x, y, defense, KnowledgeFlags(labels=True, defense=adaptive),
                                                seed=index, client_id=index)
        result = build_attack(attack, **attack_options).reconstruct(observation, victim.model, knowledge, budget, seed=index)
        wall = time.perf_counter() - started
        _, informed = threat.observe(victim, x, y, defense, KnowledgeFlags(labels=True, defense=True), seed=index, client_id=index)
        distance = attack_options.get("distance", "l2" if attack in ("dlg", "idlg") else "cosine")
        yardstick = GradientMatcher(observation, victim.model, informed, distance)(victim.normalise(result.images), y).item()
        scores = score_images(result.images, x)
        rows.append({"victim": index, "adaptive": adaptive, "psnr": float(scores["psnr"][0]), "ssim": float(scores["ssim"][0]),
                     "lpips": float(scores["lpips"][0]), "gradient_loss": result.gradient_loss,
                     "adaptive_objective": yardstick, "bytes_sent": observation.public.get("bytes_sent"), "wall_s": wall})
    return rows


def summarise(rows: pd.DataFrame, utility: dict) -> str:
    lines = ["| defense | path | PSNR | SSIM | LPIPS | adaptive objective | accuracy (no defense) | bytes/client/round | ε "
             "| client time × |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, group in rows.groupby("label", sort=False):
        u = utility.get(label, {})
        acc = f"{u['accuracy']:.3f} ({u['accuracy_baseline']:.3f})" if u else "–"
        eps = u.get("epsilon")
        eps = "–" if eps is None else ("∞" if eps == float("inf") else f"{eps:.3g}")
        nbytes = u.get("bytes_sent", group["bytes_sent"].iloc[0])
        overhead = f"{u['compute_overhead']:.1f}" if u else "–"
        for adaptive, cell in group.groupby("adaptive"):
            m = cell.median(numeric_only=True)
            path = "adaptive" if adaptive else "non-adaptive"
            lines.append(f"| {label} | {path} | {m.psnr:.2f} | {m.ssim:.3f} | {m.lpips:.3f} | {m.adaptive_objective:.3g} | "
                         f"{acc} | {nbytes} | {eps} | {overhead} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/defense-matrix")
    parser.add_argument("--model", default="lenet")
    parser.add_argument("--width", type=int, default=8, help="convnet/resnet18/mlp width")
    parser.add_argument("--victims", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--attack", default="ig", choices=["ig", "dlg"])
    parser.add_argument("--tv", type=float, default=1e-2, help="IG's total-variation weight")
    parser.add_argument("--only", nargs="*", default=None, help="defense names to run (plus the baseline)")
    parser.add_argument("--skip-utility", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the machine is shared; more threads only oversubscribe it

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("digits")
    options = {"width": args.width} if args.model in ("convnet", "resnet18", "mlp") else {}
    spec = VictimSpec(model=args.model, options=options, clients=CLIENTS, local_batch_size=LOCAL_BATCH,
                      local_lr=LOCAL_LR, local_epochs=LOCAL_EPOCHS)
    victim = build_victim(spec, data)  # untrained: the attacked round is the first
    shard = len(data.train_images) // CLIENTS
    grid = [g for g in defense_grid(UTILITY_ROUNDS, shard) if args.only is None or g[1] in (*args.only, "none")]

    rows_path = out / "rows.csv"
    done = pd.read_csv(rows_path) if rows_path.exists() else pd.DataFrame(columns=["label", "adaptive"])
    budget = Budget(args.iterations, args.restarts)
    for label, name, opts in grid:
        for adaptive in ((False,) if name == "none" else (False, True)):
            if ((done["label"] == label) & (done["adaptive"] == adaptive)).any():
                continue
            started = time.perf_counter()
            attack_options = {"tv": args.tv} if args.attack == "ig" else {}
            cell = pd.DataFrame(attack_cell(victim, name, opts, adaptive, list(range(args.victims)), budget, args.attack,
                                            attack_options))
            cell.insert(0, "label", label)
            cell.insert(1, "defense", name)
            cell.insert(2, "options", json.dumps(opts, sort_keys=True))
            done = pd.concat([done, cell], ignore_index=True) if len(done) else cell
            done.to_csv(rows_path, index=False)
            print(f"{label:>20} {'adaptive' if adaptive else 'plain':>8}: median PSNR {cell.psnr.median():.2f} "
                  f"({time.perf_counter() - started:.0f}s)", flush=True)

    utility = {}
    if not args.skip_utility:
        for label, name, opts in grid:
            started = time.perf_counter()
            utility[label] = measure_utility(data, spec, build_defense(name, **opts), rounds=UTILITY_ROUNDS)
            print(f"{label:>20} utility: accuracy {utility[label]['accuracy']:.3f} ({time.perf_counter() - started:.0f}s)", flush=True)
        (out / "utility.json").write_text(json.dumps(utility, indent=1, default=str))
    rows = done[done["label"].isin([g[0] for g in grid])]
    table = summarise(rows, utility)
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
