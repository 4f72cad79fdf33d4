"""IG vs GGL vs GIFD on the same digits victims at comparable budgets, without and with defenses.

    python tools/compare_generative.py --output runs/generative   # the table in the report
    python tools/compare_generative.py --tune --output runs/gifd_tune   # GIFD radii on AUX images

Every attack sees the same observation of the same victims (FedSGD, B=1, an untrained victim:
DLG's sigmoid LeNet by default or IG's ConvNet of width 16 with `--model convnet`; labels
inferred by the iDLG rule) and the same knowledge (`eavesdropper` + auxiliary
data, which the generative attacks need for their prior; IG ignores it). Budgets: IG, GGL-Adam
and GIFD take 400 optimiser steps x 2 restarts (each step one double-backward through the
victim); GGL-CMA takes 50 generations x 16 candidates x 2 restarts (1,600 first-order
evaluations per victim). IG uses the official inversefed CLI's TV weight 1e-4. Wall time is reported next to the
scores because the costs of a step
differ. `--tune` picks GIFD's L1 radii on auxiliary-split images (pseudo-victims the attacker
may hold), never on victims. Runs single-threaded."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

ATTACKS = {
    "ig": {"name": "ig", "iterations": 400, "restarts": 2, "options": {"tv": 1e-4}},
    "ggl-cma": {"name": "ggl", "iterations": 50, "restarts": 2, "options": {"optimizer": "cma", "population": 16}},
    "ggl-adam": {"name": "ggl", "iterations": 400, "restarts": 2, "options": {"optimizer": "adam"}},
    "gifd": {"name": "gifd", "iterations": 400, "restarts": 2, "options": {}},
    # sensitivity check, not in the default set: tighter L1 balls (more prior, less fit to noise)
    "gifd-tight": {"name": "gifd", "iterations": 400, "restarts": 2, "options": {"radii": [0.1, 0.05, 0.03]}},
}
DEFAULT_ATTACKS = ["ig", "ggl-cma", "ggl-adam", "gifd"]
DEFENSES = {
    "none": {"name": "none", "options": {}},
    # user-level DP-FedAvg noise: clip to norm 1 (the untrained ConvNet's B=1 gradients have norm ~1.25
    # over 186,826 entries) and add N(0, std^2) per entry; std 1e-2 is GGL's default
    "noise-1e-3": {"name": "dp", "options": {"mode": "update", "clip": 1.0, "sigma": 1e-3}},
    "noise-1e-2": {"name": "dp", "options": {"mode": "update", "clip": 1.0, "sigma": 1e-2}},
    # keep the 10% largest-magnitude entries of every layer
    "prune": {"name": "prune", "options": {"ratio": 0.1}},
}
KNOWLEDGE = {"preset": "eavesdropper", "auxiliary_data": True}
MODELS = {"lenet": {"model": "lenet"}, "convnet": {"model": "convnet", "options": {"width": 16}}}


def run_matrix(args) -> pd.DataFrame:
    from fedleak.harness.run.config import config_from_dict
    from fedleak.harness.run.runner import run_attack
    frames = []
    for defense in args.defenses:
        for label in args.attacks:
            spec = ATTACKS[label]
            table = {"seed": 0, "device": "cpu", "output": str(Path(args.output) / defense / label),
                     "data": {"name": "digits", "victims": list(range(args.victims)), "batch_size": 1},
                     "victim": MODELS[args.model], "threat_model": {"name": "fedsgd", "knowledge": KNOWLEDGE},
                     "defense": DEFENSES[defense], "attack": spec}
            started = time.perf_counter()
            rows = run_attack(config_from_dict(table)).rows.assign(setting=label, defense_setting=defense)
            print(f"{defense:6s} {label:9s} PSNR {rows.psnr.mean():6.2f}  SSIM {rows.ssim.mean():.3f}  "
                  f"LPIPS {rows.lpips.mean():.3f}  labels {rows.label_correct.mean():.0%}  "
                  f"{time.perf_counter() - started:.0f}s", flush=True)
            frames.append(rows)
    return pd.concat(frames, ignore_index=True)


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    grouped = rows.groupby(["defense_setting", "setting"], sort=False)
    return grouped.agg(psnr_mean=("psnr", "mean"), psnr_median=("psnr", "median"), ssim_mean=("ssim", "mean"),
                       lpips_mean=("lpips", "mean"), label_acc=("label_correct", "mean"),
                       seconds_per_victim=("wall_time_s", "mean"), victims=("psnr", "size")).reset_index()


def markdown_table(frame: pd.DataFrame) -> str:
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def tune_gifd(args) -> pd.DataFrame:
    """GIFD radii candidates scored on auxiliary (train split) images as pseudo-victims."""
    from fedleak.attacks import build_attack
    from fedleak.attacks.base import Budget
    from fedleak.defenses import NoDefense
    from fedleak.data.datasets import load_dataset
    from fedleak.metrics.image import score_images
    from fedleak.threat_models import THREAT_MODELS
    from fedleak.threat_models.knowledge import knowledge_flags
    from fedleak.threat_models.victim import VictimSpec, build_victim
    data = load_dataset("digits")
    victim = build_victim(VictimSpec(**MODELS[args.model]), data)
    threat = THREAT_MODELS.create("fedsgd")
    results = []
    for radii in ([1.0, 1.0, 1.0], [0.3, 0.2, 0.1], [0.1, 0.05, 0.03], [0.03, 0.02, 0.01], [0.0, 0.0, 0.0]):
        scores = []
        for index in range(args.victims):
            x, y = data.train_images[index:index + 1], data.train_labels[index:index + 1]
            observation, knowledge = threat.observe(victim, x, y, NoDefense(), knowledge_flags(KNOWLEDGE))
            result = build_attack("gifd", radii=radii).reconstruct(observation, victim.model, knowledge, Budget(400, 2), seed=index)
            scores.append({k: float(v) for k, v in score_images(result.images, x).items()}
                          | {"stage": result.extras["chosen_stage"], "loss": result.gradient_loss})
        frame = pd.DataFrame(scores).mean().to_dict()
        print(f"radii {radii}: PSNR {frame['psnr']:.2f} SSIM {frame['ssim']:.3f} LPIPS {frame['lpips']:.3f} "
              f"mean chosen stage {frame['stage']:.2f}", flush=True)
        results.append({"radii": str(radii), **frame})
    return pd.DataFrame(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="runs/generative")
    parser.add_argument("--victims", type=int, default=8)
    parser.add_argument("--model", default="lenet", choices=list(MODELS))
    parser.add_argument("--defenses", nargs="+", default=list(DEFENSES), choices=list(DEFENSES))
    parser.add_argument("--attacks", nargs="+", default=DEFAULT_ATTACKS, choices=list(ATTACKS))
    parser.add_argument("--tune", action="store_true", help="choose GIFD radii on auxiliary images instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if args.tune:
        tune_gifd(args).to_csv(out / "gifd_radii.csv", index=False)
        return
    rows = run_matrix(args)
    rows.to_csv(out / "rows.csv", index=False)
    summary = summarise(rows)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(markdown_table(summary))
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
