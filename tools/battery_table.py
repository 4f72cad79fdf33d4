"""The broken-defense battery table of docs/attacks.md, built from `fedleak evaluate-defense` output folders
(issue #20: the battery through the user's own command, so a weaker preset shows as a lower number here).

    # one empty folder per defense, e.g.
    mkdir /tmp/bat/sign-only && cd /tmp/bat/sign-only && \
        /usr/bin/time -v -o time.txt fedleak evaluate-defense fedleak.examples.broken_defenses:SignOnly --budget ci
    python tools/battery_table.py /tmp/bat/*/runs/evaluate-*          # markdown on stdout

Per evaluated defense (its own rows only, FedSGD): per image the best PSNR of the old attacks (every attack but
the evaluator's adaptive ones, both modes) and of the new ones (`NEW`), each the median over the images, as
tools/adaptive_battery.py counts them; the label baseline (what the true label alone gives, median); then the
verdict as evaluate-defense printed it: the worst image, the images recovered, the median [95% interval], the
strongest attack and the status, and how many of the tasks against the defense failed (failures.json).
`REFERENCE` is the battery's best-new-attack column before issue #20 (tools/adaptive_battery.py on the
trust-attacks branch, 2026-11-28); a run more than `TOLERANCE` dB below it
is marked: the user's command is weaker than the battery there. Where a `time.txt` of GNU time (-v) lies in the
folder or up to two folders above it, the CPU time (user + sys) and wall time are listed too."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd

NEW = ("defense-loop", "analytic-fc", "layer-subset", "learn-to-invert")
TOLERANCE = 3.0
# defense name (and options) -> (row label, the battery's best new attack before issue #20; None: not run then)
REFERENCE = {
    "none": ("none", 100.0),
    "dp (clip=1.0, mode=update, sigma=0.01)": ("dp σ = 0.01", 22.2),
    "dp (clip=1.0, mode=update, sigma=0.1)": ("dp σ = 0.1", 11.9),
    "dp (clip=1.0, mode=update, sigma=1.0)": ("dp σ = 1", None),
    "prune (ratio=0.01)": ("prune (top 1%)", 26.6),
    "quantize": ("quantize (RQM)", 34.6),
    "public-rotation": ("public rotation", 100.0),
    "public-seed-noise": ("public-seed noise", 100.0),
    "clip-only": ("clipping only", 80.6),
    "representation-pruning": ("Soteria-style representation pruning", 92.1),
    "two-bit-rounding": ("two-bit rounding", 19.9),
    "sign-only": ("sign-only", None),
    "sketch (kind=countsketch, ratio=0.1)": ("count sketch (10%)", None),
    "public-permutation": ("public permutation", None),
    "constant-output": ("constant output", None),
    "independent-noise": ("private noise", None),
}


def summarise(folder: Path) -> dict:
    """One table row from one evaluate-defense output folder."""
    verdicts = json.loads((folder / "verdicts.json").read_text())
    matrix = json.loads((folder / "matrix.json").read_text()) if (folder / "matrix.json").is_file() else {}
    gated = [v for v in verdicts if v.get("gated")]
    if not gated:
        raise SystemExit(f"{folder}: no gated verdict (not an evaluate-defense folder?)")
    verdict = next((v for v in gated if v["context"]["threat_model"] == "fedsgd"), gated[0])
    label = verdict["defense_label"]
    rows = pd.read_parquet(folder / "results.parquet")
    rows = rows[(rows["defense_label"] == label) & (rows["threat_model"] == verdict["context"]["threat_model"])]
    if "image_error" in rows:
        rows = rows[rows["image_error"].fillna("") == ""]
    new = rows["attack"].isin(NEW)
    per_image = lambda frame: frame.groupby("image_index")["psnr"].max()  # noqa: E731
    new_best = per_image(rows[new])
    strongest = rows[new].loc[rows[new].groupby("image_index")["psnr"].idxmax()]
    right_label = rows[rows["predicted_label"] == rows["true_label"]]
    reference = REFERENCE.get(label, (label, None))
    new_median = float(new_best.median()) if len(new_best) else float("nan")
    row = {
        "defense": reference[0], "label only": float(right_label.groupby("image_index")["label_baseline_psnr"].first().median()),
        "best old attack": float(per_image(rows[~new]).median()) if (~new).any() else float("nan"),
        "best new attack": new_median,
        "strongest new attack": strongest["attack_label"].mode().iloc[0] if len(strongest) else "–",
        "worst image": verdict["worst_psnr"], "recovered": f"{verdict['recovered']}/{verdict['n_images']}",
        "median [95% CI]": f"{verdict['psnr']:.1f} [{verdict['psnr_interval'][0]:.1f}, {verdict['psnr_interval'][1]:.1f}]",
        "best attack": verdict["best_attack"], "verdict": verdict["status"], "failed tasks": _failed(folder, label),
        "before #20": reference[1],
        "within 3 dB": "–" if reference[1] is None else
        ("yes" if new_median >= reference[1] - TOLERANCE else f"NO ({new_median - reference[1]:+.1f} dB)"),
        "preset": matrix.get("matrix", {}).get("preset", ""),
    }
    timing = _timing(folder)
    return {**row, **timing}


def _failed(folder: Path, label: str) -> int:
    """Tasks against the defense that failed (attack cells, its utility run; not those declared not applicable):
    a gap the verdict counts, so the table shows it too."""
    path = folder / "failures.json"
    failures = json.loads(path.read_text()) if path.is_file() else []
    return sum(1 for f in failures if f.get("labels", {}).get("defense_label") == label and not f.get("not_applicable"))


def _timing(folder: Path) -> dict:
    for where in (folder, folder.parent, folder.parent.parent):
        path = where / "time.txt"
        if path.is_file():
            text = path.read_text()
            user, system = (float(re.search(rf"{k} time \(seconds\): ([\d.]+)", text).group(1)) for k in ("User", "System"))
            wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text).group(1)
            seconds = sum(float(part) * 60 ** i for i, part in enumerate(reversed(wall.split(":"))))
            return {"CPU s": round(user + system), "wall s": round(seconds)}
    return {}


def markdown(table: pd.DataFrame) -> str:
    def cell(value):
        if value is None:
            return "–"
        if isinstance(value, float):
            return "–" if value != value else f"{value:.1f}"
        return str(value)
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in record) + " |" for record in table.itertuples(index=False)]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="evaluate-defense output folders")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV")
    args = parser.parse_args(argv)
    table = pd.DataFrame([summarise(folder) for folder in args.folders])
    order = {label: i for i, (label, _) in enumerate(REFERENCE.values())}
    table = table.sort_values("defense", key=lambda s: s.map(lambda d: order.get(d, len(order)))).reset_index(drop=True)
    print(markdown(table))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
