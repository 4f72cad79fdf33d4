"""The report of a Flower audit: the run report (grid, summary, per image) plus one line per
client update, since one audit attacks every client in every round."""
from __future__ import annotations

from fedleak.reports.run_report import write_run_report


def write_flower_report(result) -> None:
    frame = result.rows
    first = frame.iloc[0]
    lines = ["", "## Per client update", "",
             f"Flower app `{first['flower_server_app']}` + `{first['flower_client_app']}`; what the server saw in each "
             "round, attacked on its own.", "",
             "| round | partition | node id | examples | median PSNR | median SSIM | median LPIPS | labels | matching loss |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (rnd, partition), group in frame.groupby(["round", "partition_id"], sort=True):
        g = group.iloc[0]
        lines.append(f"| {rnd} | {partition} | {g['client_id']} | {len(group)} | {group['psnr'].median():.2f} | "
                     f"{group['ssim'].median():.3f} | {group['lpips'].median():.3f} | {g['batch_label_accuracy']:.0%} | "
                     f"{g['gradient_loss']:.4f} |")
    write_run_report(result, lines)
