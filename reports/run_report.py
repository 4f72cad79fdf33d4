"""The report of one attack run: a grid PNG and a short Markdown page, a view of stored results."""
from __future__ import annotations

from pathlib import Path

from fedleak.core.io import atomic_write
from fedleak.metrics.record import METRICS, PSNR
from fedleak.reports.document import md_code, md_text
from fedleak.reports.grid import save_grid


def write_run_report(result, extra: list[str] = (), figures=None) -> None:
    """report.md + grid.png (+ grid.csv, its numbers) beside the run's rows; `extra` lines close the
    page (the Flower audit's per-client table); `figures`: reports.document.FigureOptions."""
    frame, out = result.rows, result.directory
    first = frame.iloc[0]
    captions = [[], [PSNR.format(p, compact=True) + ("" if PSNR.is_exact(p) else " dB") for p in frame["psnr"]]]
    data = frame[[c for c in ("batch", "image_index", "true_label", "predicted_label", "psnr", "ssim", "lpips", "mse",
                              "gradient_loss") if c in frame]]
    save_grid([("ground truth", result.ground_truth), (first["attack"], result.reconstructions)],
              out / "grid.png", captions, figures=figures, data=data)
    title = f"{first['attack']} vs {first['defense']} — {first['dataset']} / {first['model']} ({first['victim_state']})"
    lines = [f"# {md_text(title)}", "",
             f"Threat model {md_code(first['threat_model'])}, B={first['batch_size']}, {first['iterations']} iterations × "
             f"{first['restarts']} restarts, device {md_code(first['device'])}, config `{first['config_hash']}`.", "",
             "| metric | median | mean | best | worst |", "|---|---|---|---|---|"]
    for m in METRICS.values():
        if m.name not in frame:  # psnr_over_label exists only where a matrix measured the label baseline
            continue
        col = frame[m.name]
        lines.append(f"| {m.name} | {col.median():.4f} | {col.mean():.4f} | {m.most_leaked(col):.4f} | {m.least_leaked(col):.4f} |")
    lines += ["", f"Label accuracy: {frame['label_correct'].mean():.1%} per image, "
              f"{frame.groupby('batch')['batch_label_accuracy'].first().mean():.1%} as label counts per batch.",
              f"Wall time: {frame.groupby('batch')['wall_time_s'].first().sum():.1f} s.", "", "![grid](grid.png)", "",
              "| image | label | predicted | PSNR | SSIM | LPIPS |", "|---|---|---|---|---|---|"]
    for _, r in frame.iterrows():
        lines.append(f"| {r['image_index']} | {r['true_label']} | {r['predicted_label']} | {r['psnr']:.2f} | "
                     f"{r['ssim']:.3f} | {r['lpips']:.3f} |")
    lines += ["", "Metrics: images in [0,1]; PSNR over all channels; SSIM Gaussian 11/σ1.5 per channel, averaged; "
              "LPIPS AlexNet v0.1 (grey replicated to RGB). See docs/metrics.md."]
    atomic_write(out / "report.md", "\n".join([*lines, *extra]) + "\n")


def write_index(results, directory) -> Path:
    """One page linking the runs of a multi-run job (the demo), with their headline numbers."""
    directory = Path(directory)
    lines = ["# fedleak report", "", "| run | attack | model | victims | median PSNR | median SSIM | median LPIPS | label acc. |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        f, name = r.rows, r.directory.name
        lines.append(f"| [{md_text(name)}]({name}/report.md) | {md_text(f['attack'].iloc[0])} | {md_text(f['model'].iloc[0])} | {len(f)} | "
                     f"{f['psnr'].median():.2f} | {f['ssim'].median():.3f} | {f['lpips'].median():.3f} | {f['label_correct'].mean():.0%} |")
    lines += [""] + [f"![{r.directory.name}]({r.directory.name}/grid.png)" for r in results]
    path = directory / "report.md"
    atomic_write(path, "\n".join(lines) + "\n")
    return path
