"""Attack × defense heat maps as PNG (for the pages) and as cell colours (for the tables).
Colour always reads the same way: red = more leaked, whatever the metric's direction."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fedleak.reports.matrix_tables import LEAKS_HIGH  # noqa: E402

# Colour scale ends: values beyond them saturate (PSNR in dB, SSIM and LPIPS in [0,1]).
RANGES = {"psnr": (5.0, 35.0), "ssim": (0.0, 1.0), "lpips": (0.0, 0.8)}
CMAP = "RdYlGn_r"
UNITS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS"}
SAVE = {"dpi": 100, "metadata": {"Software": None}}  # no version/timestamp: same results, same bytes


def leak_fraction(value: float, metric: str) -> float:
    low, high = RANGES[metric]
    t = float(np.clip((value - low) / (high - low), 0, 1))
    return t if LEAKS_HIGH[metric] else 1 - t


def colour(value: float, metric: str) -> str:
    if pd.isna(value):
        return ""
    r, g, b, _ = plt.get_cmap(CMAP)(0.15 + 0.7 * leak_fraction(value, metric))  # pale ends keep text legible
    return "#{:02x}{:02x}{:02x}".format(*(int(round(255 * (0.55 + 0.45 * c))) for c in (r, g, b)))


def save_heatmap(table: pd.DataFrame, metric: str, title: str, path: Path) -> Path:
    values = table.to_numpy(dtype=float)
    shades = np.vectorize(lambda v: np.nan if np.isnan(v) else leak_fraction(v, metric))(values)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.8 + 1.1 * table.shape[1]), 1.3 + 0.38 * table.shape[0]))
    ax.imshow(np.ma.masked_invalid(shades), cmap=CMAP, vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(table.shape[0]), [str(i) for i in table.index], fontsize=8)
    ax.axhline(table.shape[0] - 2.5, color="black", linewidth=1)  # the two "best attack" rows below
    for (r, c), v in np.ndenumerate(values):
        ax.text(c, r, "–" if np.isnan(v) else (f"{v:.1f}" if metric == "psnr" else f"{v:.2f}"),
                ha="center", va="center", fontsize=8)
    ax.set_title(f"{UNITS[metric]}\n{title}", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **SAVE)
    plt.close(fig)
    return path
