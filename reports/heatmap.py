"""Attack × defense heat maps as PNG (for the pages) and as cell colours (for the tables).
Colour always reads the same way: red = more leaked, whatever the metric's direction."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fedleak.metrics.record import METRICS  # noqa: E402
from fedleak.reports.document import save_figure  # noqa: E402

CMAP = "RdYlGn_r"


def leak_fraction(value: float, metric: str) -> float:
    """0 (nothing leaked) to 1 (all), along the metric's colour scale (values beyond it saturate)."""
    record = METRICS[metric]
    low, high = record.scale
    t = float(np.clip((value - low) / (high - low), 0, 1))
    return t if record.larger_leaks else 1 - t


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
        ax.text(c, r, METRICS[metric].format(v, compact=True), ha="center", va="center", fontsize=8)
    ax.set_title(f"{METRICS[metric].title}\n{title}", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
