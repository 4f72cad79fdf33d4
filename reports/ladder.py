"""The leakage ladder as a table (harness/flower/ladder.py): one line per rung, easiest first, so the reader sees
where rebuilding stops. A pure view of the ladder's rows."""
from __future__ import annotations

import pandas as pd


def ladder_table(frame: pd.DataFrame) -> str:
    """Markdown: per rung, the images, median / worst / best PSNR (dB), median SSIM and LPIPS, the share of
    exact replays, what stopped the attacks and the median wall time per image."""
    lines = ["| rung | setting | images | median PSNR | worst PSNR | best PSNR | median SSIM | median LPIPS | "
             "replay exact | stopped by | s / image |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rung, rows in frame.groupby("ladder_rung", sort=True):
        stopped = rows["stopped_by"].fillna("-").value_counts() if "stopped_by" in rows else pd.Series(dtype=int)
        exact = rows["replay_exact"].dropna()
        lines.append(f"| {rung} | {rows['ladder_label'].iloc[0]} | {len(rows)} | {rows['psnr'].median():.2f} | "
                     f"{rows['psnr'].min():.2f} | {rows['psnr'].max():.2f} | {rows['ssim'].median():.3f} | "
                     f"{rows['lpips'].median():.3f} | {f'{exact.mean():.0%}' if len(exact) else '-'} | "
                     f"{', '.join(f'{k} {v}' for k, v in stopped.items()) or '-'} | "
                     f"{rows['time_per_image_s'].median():.1f} |")
    return "\n".join(lines)
