"""Privacy-utility view: per defense setting, its model accuracy against the strongest attack's
leakage (median over images of the best PSNR any attack reached on each), ε in the label where
the defense is DP. Up and to the left is what a defense wants: accurate model, little rebuilt."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from fedleak.metrics.record import PSNR  # noqa: E402
from fedleak.reports.document import save_figure  # noqa: E402


def point_label(row: pd.Series) -> str:
    epsilon = row.get("epsilon")
    if epsilon is None or pd.isna(epsilon):
        return str(row["defense_label"])
    return f"{row['defense_label']} (ε={'∞' if math.isinf(epsilon) else f'{epsilon:.3g}'})"


def save_privacy_utility(summary: pd.DataFrame, title: str, path: Path) -> Path | None:
    """`summary`: strongest_attack rows joined with utility (needs `accuracy`); None if unmeasured."""
    if "accuracy" not in summary or summary["accuracy"].isna().all():
        return None
    measured = summary.dropna(subset=["accuracy"])
    points, references = measured[measured["psnr"].notna()], measured[measured["psnr"].isna()]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter(points["psnr"], points["accuracy"], color="tab:blue", zorder=3)
    for _, row in points.iterrows():
        ax.annotate(point_label(row), (row["psnr"], row["accuracy"]), textcoords="offset points", xytext=(5, 4),
                    fontsize=7)
    for _, row in references.iterrows():  # utility measured, not attacked: a level to compare against
        ax.axhline(row["accuracy"], color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"{point_label(row)} (not attacked)", (0.01, row["accuracy"]), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(0, 2), fontsize=6, color="grey")
    ax.set_xlabel(f"strongest-attack leakage: median best {PSNR.title} per image")
    ax.set_ylabel("accuracy (held-out)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
