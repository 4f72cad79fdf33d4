"""One reconstruction mosaic per context: rows the defense settings, columns the ground truth then
every attack (and mode) in matrix order, each tile one victim image as that attack rebuilt it
under that defense, its PSNR underneath. The image is the context's first (lowest index, first
seed), so every tile shows the same image; the HTML report's per-image view has all of them."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from fedleak.metrics.record import PSNR  # noqa: E402
from fedleak.reports.document import FigureOptions, save_figure  # noqa: E402
from fedleak.reports.matrix_tables import attack_row, row_order  # noqa: E402

GROUND_TRUTH = "ground truth"


def mosaic_tiles(frame: pd.DataFrame) -> tuple[int, list[str], list[str], pd.DataFrame]:
    """(image index, defense settings, attack columns, one row per tile that ran: defense_label,
    attack, cell, position, psnr, ssim, lpips) of one context's rows."""
    frame = frame[frame["seed"] == frame["seed"].min()].assign(attack=attack_row)
    image = int(frame["image_index"].min())
    defenses = list(pd.unique(frame["defense_label"]))
    attacks = row_order(frame.assign(row=frame["attack"]))
    tiles = frame[frame["image_index"] == image].drop_duplicates(["defense_label", "attack"])
    tiles = tiles[["defense_label", "attack", "image_index", "cell", "position", "psnr", "ssim", "lpips"]]
    return image, defenses, attacks, tiles.reset_index(drop=True)


def save_mosaic(frame: pd.DataFrame, cell_images: Callable[[str], dict], title: str, path: Path,
                figures: FigureOptions | None = None) -> Path:
    """`frame`: one context's rows; `cell_images(cell)` gives a cell's stored {"ground_truth", "reconstructions"}."""
    image, defenses, attacks, tiles = mosaic_tiles(frame)
    by_pair = {(t.defense_label, t.attack): t for t in tiles.itertuples()}
    columns = [GROUND_TRUTH, *attacks]
    size = 0.95
    fig, axes = plt.subplots(len(defenses), len(columns), squeeze=False, layout="constrained",
                             figsize=(1.6 + size * len(columns), 0.9 + (size + 0.2) * len(defenses)))
    for r, defense in enumerate(defenses):
        truth = next((t for (d, _), t in by_pair.items() if d == defense), None)
        for c, column in enumerate(columns):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if column == GROUND_TRUTH:
                tile, key, note = truth, "ground_truth", ""
            else:
                tile, key = by_pair.get((defense, column)), "reconstructions"
                note = "not run" if tile is None else PSNR.format(tile.psnr, compact=True) + \
                    ("" if PSNR.is_exact(tile.psnr) else " dB")
            if tile is not None:
                pixels = cell_images(tile.cell)[key][int(tile.position)].detach().cpu().clamp(0, 1)
                grey = pixels.shape[0] == 1
                ax.imshow(pixels[0] if grey else pixels.permute(1, 2, 0), cmap="gray" if grey else None, vmin=0, vmax=1,
                          interpolation="nearest")
            ax.set_xlabel(note, fontsize=7, labelpad=2)
            if r == 0:
                ax.set_title(column.replace(" (adaptive)", "\n(adaptive)"), fontsize=7)
            if c == 0:
                ax.set_ylabel(defense, fontsize=7, rotation=0, ha="right", va="center", labelpad=4)
    fig.suptitle(f"{title}: image {image}, PSNR under each reconstruction", fontsize=8)
    return save_figure(fig, path, figures, tiles)
