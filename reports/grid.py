"""Reconstruction grids: ground truth above each reconstruction, scores underneath."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from fedleak.reports.document import save_figure  # noqa: E402


def save_grid(rows: list[tuple[str, torch.Tensor]], path: Path, captions: list[list[str]] | None = None,
              max_columns: int = 16) -> Path:
    """`rows`: (label, images (N,C,H,W) in [0,1]); every row shows the same N images' columns."""
    n = min(max(len(images) for _, images in rows), max_columns)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n + 1.2, 1.5 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c >= len(images):
                continue
            img = images[c].detach().cpu().clamp(0, 1)
            ax.imshow(img[0] if img.shape[0] == 1 else img.permute(1, 2, 0), cmap="gray" if img.shape[0] == 1 else None,
                      vmin=0, vmax=1, interpolation="nearest")
            if captions and captions[r] and c < len(captions[r]):
                ax.set_xlabel(captions[r][c], fontsize=7)
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
