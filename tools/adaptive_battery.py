"""Old attacks vs the defense-agnostic adaptive attacks (issue #12), on the ci matrix's victim and knowledge:
for every broken defense of examples/broken_defenses.py and every built-in defense of the ci matrix, the
best PSNR per image over the old attacks (dlg, idlg, ig, dia, ggl, gifd at their ci budgets, non-adaptive
and adaptive) against the best over the new ones (defense-loop with IG's and with iDLG's optimiser,
analytic-fc, layer-subset, learn-to-invert), median over the images, next to what the label alone gives
(the class mean of the auxiliary images).

    python tools/adaptive_battery.py --output runs/adaptive-battery                 # 8 images, everything
    python tools/adaptive_battery.py --only prune public-seed-noise --images 2      # a quick look
    python tools/adaptive_battery.py --model lenet --only "rqm m=4" "rqm m=16" --output runs/adaptive-rqm

Victim: the ci MLP (width 128, untrained; `--model lenet`: DLG's LeNet), digits, FedSGD, B = 1, knowledge
`data_enhanced`. One row per
(defense, attack, mode, image) is appended to <output>/rows.csv as it finishes; a rerun skips finished rows.
<output>/table.md is the summary (docs/attacks.md quotes it). One thread: the machine is shared."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from fedleak.attacks import Budget, build_attack
from fedleak.core.errors import FedleakError
from fedleak.data.datasets import load_dataset
from fedleak.defenses import build_defense
from fedleak.examples import broken_defenses as broken
from fedleak.metrics.image import psnr
from fedleak.threat_models import THREAT_MODELS
from fedleak.threat_models.knowledge import knowledge_flags
from fedleak.threat_models.victim import VictimSpec, build_victim

# the ci matrix's built-in defenses (harness/presets/matrix-ci.toml) and the broken battery
DEFENSES = {
    "none": ("none", {}),
    "dp (sigma=0.01)": ("dp", {"mode": "update", "clip": 1.0, "sigma": 0.01}),
    "dp (sigma=0.1)": ("dp", {"mode": "update", "clip": 1.0, "sigma": 0.1}),
    "prune": ("prune", {"ratio": 0.01}),
    "quantize": ("quantize", {}),
    "sketch": ("sketch", {"kind": "countsketch", "ratio": 0.1}),
    "dropout": ("dropout", {"p": 0.5}),
    **{cls.name: (cls, {}) for cls in broken.BATTERY},
    # RQM as tools/defense_matrix.py sets it (clip 0.5: LeNet's gradients), where the old adaptive IG lost to
    # the non-adaptive one; not in the ci matrix: run them with --only
    "rqm m=4": ("quantize", {"clip": 0.5, "levels": 4, "keep": 0.5}),
    "rqm m=16": ("quantize", {"clip": 0.5, "levels": 16, "keep": 0.5}),
}
DEFAULT = [label for label in DEFENSES if not label.startswith("rqm")]
# (label, attack, options, iterations); old: the ci matrix's attacks and budgets
OLD = [("dlg", "dlg", {}, 10), ("idlg", "idlg", {}, 10), ("ig", "ig", {}, 200), ("dia", "dia", {}, 200),
       ("ggl", "ggl", {}, 20), ("gifd", "gifd", {}, 50)]
NEW = [("defense-loop", "defense-loop", {}, 200), ("defense-loop lbfgs", "defense-loop", {"optimizer": "lbfgs"}, 10),
       ("analytic-fc", "analytic-fc", {}, 200), ("layer-subset", "layer-subset", {}, 200),
       ("learn-to-invert", "learn-to-invert", {}, 300)]


def make_defense(label):
    factory, options = DEFENSES[label]
    return build_defense(factory, **options) if isinstance(factory, str) else factory(**options)


def label_baseline(data, index) -> float:
    x, y = data.victims([index])
    return psnr(data.train_images[data.train_labels == y[0]].mean(0, keepdim=True), x).item()


def attack_row(victim, label, attack, options, iterations, adaptive, index) -> dict:
    x, y = victim.data.victims([index])
    flags = knowledge_flags({"preset": "data_enhanced", "defense": adaptive})
    observation, knowledge = THREAT_MODELS.create("fedsgd").observe(victim, x, y, make_defense(label), flags,
                                                                     seed=index, client_id=index)
    started = time.perf_counter()
    try:
        result = build_attack(attack, **options).reconstruct(observation, victim.model, knowledge, Budget(iterations),
                                                              seed=index)
    except FedleakError as e:  # not applicable here (e.g. needs the defense): recorded, not fatal
        return {"psnr": float("nan"), "wall_s": time.perf_counter() - started, "strategy": f"n/a: {e}"}
    except RuntimeError as e:  # an old attack whose simulate cannot meet what was sent (a permuted vector)
        return {"psnr": float("nan"), "wall_s": time.perf_counter() - started, "strategy": f"crashed: {str(e)[:120]}"}
    return {"psnr": psnr(result.images, x).item(), "wall_s": time.perf_counter() - started,
            "strategy": str(result.extras.get("strategy", ""))}


def summarise(rows: pd.DataFrame, baselines: dict) -> str:
    lines = ["| defense | label only | best old attack | best new attack | gain | " + " | ".join(a for a, _, _, _ in NEW) + " |",
             "|---|---|---|---|---|" + "---|" * len(NEW)]
    for label in DEFENSES:
        cell = rows[rows["defense"] == label]
        if cell.empty:
            continue
        per_image = cell.pivot_table(index="image", columns=["family", "attack", "adaptive"], values="psnr", aggfunc="first")
        old = per_image["old"].max(axis=1)
        new = per_image["new"].max(axis=1)
        strongest = lambda family: per_image[family].median().idxmax()
        best_old, best_new = strongest("old"), strongest("new")
        label_only = pd.Series([baselines[i] for i in per_image.index]).median()
        mode = lambda key: f"{key[0]}{' (adaptive)' if key[1] else ''}"
        new_medians = " | ".join(f"{per_image['new'][(a, True)].median():.1f}" if (a, True) in per_image["new"] else "–"
                                 for a, _, _, _ in NEW)
        lines.append(f"| {label} | {label_only:.1f} | {old.median():.1f} ({mode(best_old)}) | {new.median():.1f} "
                     f"({mode(best_new)}) | {new.median() - old.median():+.1f} | {new_medians} |")
    timing = rows[rows["family"] == "new"].groupby("attack")["wall_s"].median()
    lines += ["", "Median seconds per image (new attacks, all defenses): "
              + ", ".join(f"{a} {timing[a]:.1f}" for a, _, _, _ in NEW if a in timing)]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/adaptive-battery")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--only", nargs="*", default=None, help="defense labels to run")
    parser.add_argument("--model", default="mlp", help="the victim: mlp (the ci matrix's, width 128) or lenet")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("digits")
    victim = build_victim(VictimSpec(model=args.model, options={"width": 128} if args.model == "mlp" else {}), data)
    rows_path = out / "rows.csv"
    rows = pd.read_csv(rows_path) if rows_path.exists() else pd.DataFrame(
        columns=["defense", "family", "attack", "adaptive", "image", "psnr", "wall_s", "strategy"])
    done = {(r.defense, r.attack, bool(r.adaptive), int(r.image)) for r in rows.itertuples()}
    images = list(range(args.images))
    labels = [label for label in DEFENSES if (label in DEFAULT if args.only is None else label in args.only)]
    for label in labels:
        for family, attacks in (("old", OLD), ("new", NEW)):
            for attack, name, options, iterations in attacks:
                modes = (True,) if family == "new" else ((False,) if label == "none" else (False, True))
                for adaptive in modes:
                    for index in images:
                        if (label, attack, adaptive, index) in done:
                            continue
                        row = {"defense": label, "family": family, "attack": attack, "adaptive": adaptive, "image": index,
                               **attack_row(victim, label, name, options, iterations, adaptive, index)}
                        rows = pd.concat([rows, pd.DataFrame([row])], ignore_index=True) if len(rows) else pd.DataFrame([row])
                        rows.to_csv(rows_path, index=False)
                        done.add((label, attack, adaptive, index))
                print(f"{label:>24} {attack:>16}: median {rows[(rows.defense == label) & (rows.attack == attack)].psnr.median():.1f} dB",
                      flush=True)
    rows["adaptive"] = rows["adaptive"].astype(bool)
    selected = rows[rows["defense"].isin(labels) & rows["image"].isin(images)]
    table = summarise(selected, {i: label_baseline(data, i) for i in images})
    (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
