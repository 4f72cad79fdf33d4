"""Privacy-utility view: per defense setting, its model accuracy against the strongest attack's
leakage (median over images of the best PSNR any attack reached on each; the bar spans the
interval the summary carries, `psnr_low`..`psnr_high`: the verdict's 95% bootstrap interval of that
median), ε in the label where the defense is DP. Up
and to the left is what a defense wants: an accurate model, little rebuilt.

Settings that land on the same point share one label; labels are placed so none overlaps another
or a point; reconstructions equal to their image (100 dB) sit on an "exact" mark past the axis
break instead of squeezing every other point to the left."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from fedleak.metrics.record import PSNR  # noqa: E402
from fedleak.reports.document import FigureOptions, save_figure  # noqa: E402

POINT_COLOUR = "#1f4e79"   # one dark blue: readable in grey and by every kind of colour vision


def point_label(row: pd.Series) -> str:
    epsilon = row.get("epsilon")
    if epsilon is None or pd.isna(epsilon):
        return str(row["defense_label"])
    return f"{row['defense_label']} (ε={'∞' if math.isinf(epsilon) else f'{epsilon:.3g}'})"


def save_privacy_utility(summary: pd.DataFrame, title: str, path: Path,
                         figures: FigureOptions | None = None) -> Path | None:
    """`summary`: reports.verdicts.verdict_points joined with utility (needs `accuracy`); None if unmeasured."""
    if "accuracy" not in summary or summary["accuracy"].isna().all():
        return None
    measured = summary.dropna(subset=["accuracy"])
    points, references = measured[measured["psnr"].notna()], measured[measured["psnr"].isna()]
    finite = [v for v in points["psnr"] if not PSNR.is_exact(v)]
    exact_at = (max(finite, default=PSNR.scale[1]) // 5 + 2) * 5  # the axis break: two ticks past the largest finite value
    place = lambda v: exact_at if PSNR.is_exact(v) else v
    fig, ax = plt.subplots(figsize=(6.8, 4.4), layout="constrained")
    for _, row in points.iterrows():
        x = place(row["psnr"])
        low, high = row.get("psnr_low"), row.get("psnr_high")
        if low is not None and high is not None and not (pd.isna(low) or pd.isna(high)):
            ax.plot([place(low), place(high)], [row["accuracy"]] * 2, color=POINT_COLOUR, linewidth=1.2, alpha=0.6,
                    solid_capstyle="butt", zorder=2)
            for end in (place(low), place(high)):
                ax.plot([end, end], [row["accuracy"] - 0.008, row["accuracy"] + 0.008], color=POINT_COLOUR,
                        linewidth=1.2, alpha=0.6, zorder=2)
        ax.scatter([x], [row["accuracy"]], color=POINT_COLOUR, s=28, zorder=3)
    for _, row in references.iterrows():  # utility measured, not attacked: a level to compare against
        ax.axhline(row["accuracy"], color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"{point_label(row)} (not attacked)", (0.01, row["accuracy"]), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(0, 2), fontsize=7, color="dimgrey")
    ax.set_xlabel(f"strongest-attack leakage: median of each image's best {PSNR.title}\n"
                  "(bar: 95% bootstrap interval of the median)", fontsize=9)
    ax.set_ylabel("accuracy (held-out)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    low_x = min([place(v) for v in points["psnr"]] + [place(v) for v in points.get("psnr_low", pd.Series(dtype=float)).dropna()],
                default=0)
    ax.set_xlim(min(low_x, PSNR.scale[0]) - 2, exact_at + 5)
    accuracies = measured["accuracy"]
    ax.set_ylim(max(0.0, accuracies.min() - 0.08), min(1.02, accuracies.max() + 0.08))
    if any(PSNR.is_exact(v) for v in points["psnr"]):
        ticks = [t for t in ax.get_xticks() if t < exact_at - 2.5] + [exact_at]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks[:-1]] + ["exact"])
        ax.axvline(exact_at - 2.5, color="grey", linewidth=0.8, linestyle=(0, (4, 3)))
    _place_labels(ax, fig, points, place)
    data = points.assign(x=[place(v) for v in points["psnr"]], label=[point_label(r) for _, r in points.iterrows()])
    columns = [c for c in ("label", "defense_label", "psnr", "psnr_low", "psnr_high", "accuracy", "epsilon", "x")
               if c in data]
    return save_figure(fig, path, figures, data[columns])


def _place_labels(ax, fig, points: pd.DataFrame, place) -> None:
    """One label per distinct point (settings on the same point joined), each at the first of a few
    candidate offsets where its box overlaps no label placed before, no point and stays inside the axes."""
    groups: dict[tuple[float, float], list[str]] = {}
    for _, row in points.iterrows():
        groups.setdefault((round(place(row["psnr"]), 6), round(row["accuracy"], 6)), []).append(point_label(row))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes_box = ax.get_window_extent(renderer)
    marks = [ax.transData.transform(xy) for xy in groups]
    placed = []
    offsets = [(6, 4), (6, -12), (-6, 4), (-6, -12), (6, 14), (-6, 14), (6, -22), (-6, -22), (0, 24), (0, -30)]
    for (x, y), labels in sorted(groups.items(), key=lambda item: (item[0][0], -item[0][1])):
        text = ",\n".join(labels) if len(labels) > 1 else labels[0]
        best = None
        for dx, dy in offsets:
            note = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=7,
                               ha="left" if dx >= 0 else "right", va="bottom")
            box = note.get_window_extent(renderer).expanded(1.05, 1.1)
            clear = (not any(box.overlaps(b) for b in placed)
                     and not any(box.contains(*m) for m in marks)
                     and axes_box.contains(box.x0, box.y0) and axes_box.contains(box.x1, box.y1))
            if clear:
                best = (note, box)
                break
            note.remove()
        if best is None:  # nowhere clear: the first candidate, with a leader line so it still reads
            note = ax.annotate(text, (x, y), textcoords="offset points", xytext=(10, 18), fontsize=7,
                               arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.6})
            best = (note, note.get_window_extent(renderer))
        placed.append(best[1])
