"""The per-image view of a matrix report: for each victim image of a context, its ground truth and
what every attack (and mode) rebuilt of it under every defense setting, each with its PSNR, SSIM,
LPIPS and the attack's final matching loss; listed in one sortable index. A pure view of stored
rows and images (the first seed's attempts, as the mosaic)."""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
import pandas as pd
import torch

from fedleak.metrics.record import METRICS, PSNR
from fedleak.reports.document import Gallery, ImageView, Tile
from fedleak.reports.matrix_tables import attack_row, row_order

HEADER = ["index", "label", "best PSNR", "by (attack, defense)"]


def png(image: torch.Tensor) -> bytes:
    """One image (C,H,W) in [0,1] as a PNG (no metadata: same pixels, same bytes)."""
    from PIL import Image as PILImage
    pixels = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_gallery(frame: pd.DataFrame, cell_images: Callable[[str], dict], prefix: str) -> Gallery:
    """`frame`: one context's rows; `prefix`: makes the views' element ids unique in the page."""
    frame = frame[frame["seed"] == frame["seed"].min()].assign(attack=attack_row)
    columns = row_order(frame.assign(row=frame["attack"]))
    rows = list(pd.unique(frame["defense_label"]))
    views = []
    for index, group in frame.groupby("image_index", sort=True):
        tiles, truth = {}, None
        for hit in group.drop_duplicates(["defense_label", "attack"]).itertuples():
            stored = cell_images(hit.cell)
            truth = stored["ground_truth"][int(hit.position)] if truth is None else truth
            caption = [f"PSNR {PSNR.format(hit.psnr)}", f"SSIM {METRICS['ssim'].format(hit.ssim)}",
                       f"LPIPS {METRICS['lpips'].format(hit.lpips)}", f"loss {hit.gradient_loss:.3g}"]
            tiles[(hit.defense_label, hit.attack)] = Tile(png(stored["reconstructions"][int(hit.position)]), caption)
        best = group.loc[PSNR.most_leaked_index(group["psnr"])]
        summary = [str(index), str(best["true_label"]), PSNR.format(best["psnr"]),
                   f"{best['attack']}, {best['defense_label']}"]
        views.append(ImageView(f"{prefix}-image-{index}", f"image {index} (label {best['true_label']})", png(truth),
                               rows, columns, tiles, summary))
    return Gallery(HEADER, views)
