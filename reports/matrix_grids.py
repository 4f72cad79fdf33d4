"""Reconstruction grids of a matrix: under one defense setting, the ground truth above what each
attack (and mode) rebuilt of the same images, from the images every cell stores."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from fedleak.reports.grid import save_grid
from fedleak.reports.matrix_tables import attack_row, row_order

MAX_IMAGES = 8


def save_reconstruction_grid(frame: pd.DataFrame, cell_images: Callable[[str], dict], path: Path) -> Path:
    """`frame`: one context's rows under one defense setting; the first seed's attempts are shown.
    `cell_images(cell)` gives that cell's stored {"ground_truth", "reconstructions"}."""
    frame = frame[frame["seed"] == frame["seed"].min()].assign(row=attack_row)
    indices = sorted(frame["image_index"].unique())[:MAX_IMAGES]
    truth: dict[int, torch.Tensor] = {}
    rows, captions = [], [[]]
    for label in row_order(frame):
        group = frame[frame["row"] == label]
        by_index = group.drop_duplicates("image_index").set_index("image_index")
        images, notes = [], []
        for index in indices:
            if index not in by_index.index:
                images.append(None)
                notes.append("not run")
                continue
            hit = by_index.loc[index]
            stored = cell_images(hit["cell"])
            truth[index] = stored["ground_truth"][int(hit["position"])]
            images.append(stored["reconstructions"][int(hit["position"])])
            notes.append(f"{hit['psnr']:.1f} dB")
        rows.append((label, images))
        captions.append(notes)
    shape = next(iter(truth.values())).shape
    blank = torch.ones(shape)
    stack = lambda images: torch.stack([blank if im is None else im for im in images])
    grid = [("ground truth", stack([truth.get(i) for i in indices]))] + [(label, stack(ims)) for label, ims in rows]
    return save_grid(grid, path, captions)
