"""The report of an audit of client updates (`audit-flower`, `audit-updates`): with ground truth,
the run report (grid, summary, per image) plus one line per client update; without it, the
reconstructions and the attack's own losses only, since there is nothing to score against."""
from __future__ import annotations

from fedleak.reports.document import md_code, md_text
from fedleak.core.io import atomic_write
from fedleak.reports.grid import save_grid
from fedleak.reports.run_report import write_run_report


def write_flower_report(result) -> None:
    frame = result.rows
    first = frame.iloc[0]
    header = []
    if not result.scored:
        save_grid([(first["attack"], result.reconstructions)], result.directory / "grid.png",
                  [[f"r{r} n{n}" for r, n in zip(frame["round"], frame["client_id"])]], max_columns=32)
        header = [f"# {md_text(first['attack'])} on {frame.groupby(['round', 'client_id']).ngroups} recorded client updates", "",
                  f"Threat model `{first['threat_model']}`, {first['iterations']} iterations × {first['restarts']} "
                  f"restarts, device `{first['device']}`, config `{first['config_hash']}`.", "",
                  "No ground truth (no `private_data` hook): the reconstructions and the attack's own matching loss "
                  "only, no scores. A low matching loss says the attack explains the update, not that the images "
                  "are right.", "", "![reconstructions](grid.png)"]
    source = f"Flower app {md_code(first['flower_server_app'])} + {md_code(first['flower_client_app'])}; " \
        if "flower_server_app" in frame else "Saved updates; "
    lines = ["", "## Per client update", "", source + "what the server saw in each round, attacked on its own. "
             "`replay exact`: whether fedleak's replay of the local training the attacker was told, run on the "
             "client's true images in their stored order, reproduces the update (1 − cos < 1e-6).", ""]
    if result.scored:
        lines += ["| round | partition | node id | examples | median PSNR | median SSIM | median LPIPS | labels | "
                  "matching loss | replay exact (1 − cos) |", "|---|---|---|---|---|---|---|---|---|---|"]
        for (rnd, partition), group in frame.groupby(["round", "partition_id"], sort=True):
            g = group.iloc[0]
            lines.append(f"| {rnd} | {partition} | {g['client_id']} | {len(group)} | {group['psnr'].median():.2f} | "
                         f"{group['ssim'].median():.3f} | {group['lpips'].median():.3f} | {g['batch_label_accuracy']:.0%} | "
                         f"{g['gradient_loss']:.4f} | {_exact(g)} |")
    else:
        lines += ["| round | node id | examples | labels used | matching loss |", "|---|---|---|---|---|"]
        for (rnd, node), group in frame.groupby(["round", "client_id"], sort=True):
            labels = " ".join(str(v) for v in group["predicted_label"])
            lines.append(f"| {rnd} | {node} | {len(group)} | {labels} | {group['gradient_loss'].iloc[0]:.4f} |")
    if result.scored:
        write_run_report(result, lines)
    else:
        atomic_write(result.directory / "report.md", "\n".join(header + lines) + "\n")


def _exact(row) -> str:
    if row.get("replay_error") is None or row["replay_error"] != row["replay_error"]:
        return "n/a"
    return f"{'yes' if row['replay_exact'] else 'no'} ({row['replay_error']:.1e})"
