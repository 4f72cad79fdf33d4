"""Attack × defense heat maps as figures (for the pages and a paper) and as cell colours (for the
tables). One colour-blind-safe sequential map (cividis) that reads the same way for every metric:
brighter = more leaked, whatever the metric's direction. The colour spans the metric's scale
(metrics.record: PSNR 5-35 dB, SSIM 0-1, LPIPS 0.8-0); values beyond it saturate, which the colour
bar's arrows and its label say. PSNR's 100 dB (a reconstruction equal to its image) reads "exact"."""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fedleak.metrics.record import METRICS  # noqa: E402
from fedleak.reports.document import FigureOptions, save_figure  # noqa: E402

CMAP = "cividis"
MISSING = "#e6e6e6"   # a pair that did not run (no defense has no adaptive mode)


def leak_fraction(value: float, metric: str) -> float:
    """0 (nothing leaked) to 1 (all), along the metric's colour scale (values beyond it saturate)."""
    record = METRICS[metric]
    low, high = record.scale
    t = float(np.clip((value - low) / (high - low), 0, 1))
    return t if record.larger_leaks else 1 - t


def colour(value: float, metric: str) -> str:
    """A table cell's background: the heat map's colour, lightened so black text stays legible."""
    if pd.isna(value):
        return ""
    r, g, b, _ = plt.get_cmap(CMAP)(leak_fraction(value, metric))
    return "#{:02x}{:02x}{:02x}".format(*(int(round(255 * (0.5 + 0.5 * c))) for c in (r, g, b)))


def scale_note(metric: str) -> str:
    """What the colour of `metric` means, for captions and the colour bar."""
    record = METRICS[metric]
    low, high = record.scale
    ends = f"{high:g} to {low:g}" if not record.larger_leaks else f"{low:g} to {high:g}"
    exact = f"; {record.exact:g} dB (the image itself) reads \"exact\"" if record.exact is not None else ""
    return f"colour clipped to {ends}{' dB' if metric == 'psnr' else ''} (beyond saturates){exact}"


def save_heatmap(table: pd.DataFrame, metric: str, title: str, path: Path,
                 figures: FigureOptions | None = None) -> Path:
    """`table`: rows attack (mode) then the two "best attack" rows, columns defense settings."""
    record = METRICS[metric]
    values = table.to_numpy(dtype=float)
    shades = np.vectorize(lambda v: np.nan if np.isnan(v) else leak_fraction(v, metric))(values)
    rows, columns = table.shape
    width = max(6.0, 3.2 + 0.95 * columns)
    fig, ax = plt.subplots(figsize=(width, 1.7 + 0.36 * rows), layout="constrained")
    cmap = plt.get_cmap(CMAP).with_extremes(bad=MISSING)
    image = ax.imshow(np.ma.masked_invalid(shades), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(columns), [str(c) for c in table.columns], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(rows), [str(i) for i in table.index], fontsize=8)
    ax.axhline(rows - 2.5, color="white", linewidth=2)  # the two "best attack" rows below
    for (r, c), v in np.ndenumerate(values):
        text = "not run" if np.isnan(v) else record.format(v, compact=True)
        dark = not np.isnan(v) and shades[r, c] < 0.55
        ax.text(c, r, text, ha="center", va="center", fontsize=7.5, color="white" if dark else "black")
    low, high = record.scale
    bar = fig.colorbar(image, ax=ax, extend="both", fraction=0.05, pad=0.02)
    ticks = np.linspace(0, 1, 4)
    bar.set_ticks(ticks, labels=[f"{(low + t * (high - low)) if record.larger_leaks else (high - t * (high - low)):g}"
                                 for t in ticks])
    bar.ax.tick_params(labelsize=7)
    bar.set_label(f"{record.title}, brighter = more leaked", fontsize=7.5)
    wrap = max(40, int(width * 13))
    ax.set_title("\n".join([f"{record.title}: attack × defense", *textwrap.wrap(title, wrap),
                            *textwrap.wrap(scale_note(metric), wrap)]), fontsize=8)
    data = table.rename_axis("attack").reset_index()
    return save_figure(fig, path, figures, data)
