"""The report of a matrix folder: report.md (+ PNGs beside it) and report.html (self-contained).
A view of stored results only (harness.matrix_results): the same folder gives the same bytes."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from harness.errors import DataError
from harness.gate import check_gate, describe_gate, violations_table
from harness.matrix_config import GateConfig
from harness.matrix_results import read_matrix_outputs
from harness.config import from_dict
from reports.document import Document, Heading, Image, Paragraph, Table, to_html, to_markdown
from reports.heatmap import colour, save_heatmap
from reports.matrix_grids import save_reconstruction_grid
from reports.matrix_tables import METRICS, context_title, contexts, heat_table, strongest_attack, with_utility
from reports.privacy_utility import point_label, save_privacy_utility

METRIC_NOTE = ("Metrics: images in [0,1]; PSNR over all channels; SSIM Gaussian 11/σ1.5 per channel, averaged; "
               "LPIPS AlexNet v0.1. Leakage is the attacker's best: higher PSNR/SSIM, lower LPIPS.")


def write_matrix_report(root: str | Path, folder: str | Path | None = None) -> tuple[Path, Path]:
    root = Path(root)
    if root.is_file():
        root = root.parent
    results, utility, failed, matrix = read_matrix_outputs(root)
    if "cell" not in results.columns:
        raise DataError(f"{root}: results.parquet is not a matrix's (no cell column); run `fedleak matrix` first")
    folder = Path(folder) if folder else root / "report"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):  # a figure of a context that is gone must not linger
        stale.unlink()
    doc = Document("fedleak attack × defense matrix")
    doc.add(*_overview(results, utility, matrix))
    gate = from_dict(GateConfig, matrix.get("matrix", {}).get("gate", {}), "gate")
    if gate.enabled:
        doc.add(*_gate_section(results, gate))
    for number, (context, frame) in enumerate(contexts(results), start=1):
        doc.add(*_context_section(number, context, frame, utility, root, folder))
    if failed:
        doc.add(Heading("Cells that did not run"),
                Paragraph("Each is retried by the next run of the same matrix."),
                Table(["task", "key", "error"], [[f["task"], f["key"], f["error"]] for f in failed]))
    doc.add(Heading("Provenance"), *_provenance(results))
    markdown, page = folder / "report.md", folder / "report.html"
    markdown.write_text(to_markdown(doc, folder))
    page.write_text(to_html(doc))
    return markdown, page


def _overview(results: pd.DataFrame, utility: pd.DataFrame, matrix: dict) -> list:
    budgets = results.groupby("attack_label", sort=False)[["iterations", "restarts"]].first()
    budget_text = ", ".join(f"{a} {int(r.iterations)}×{int(r.restarts)}" for a, r in budgets.iterrows())
    preset = matrix.get("matrix", {}).get("preset", results["preset"].iloc[0])
    lines = [f"{results['cell'].nunique()} cells, {len(results)} attacked images (rows), preset `{preset}`; "
             f"attacks {', '.join(pd.unique(results['attack_label']))}; "
             f"defenses {', '.join(pd.unique(results['defense_label']))}.",
             f"Budgets (iterations × restarts): {budget_text}. Every attack runs non-adaptive (it matches the "
             f"server's decoding) and adaptive (it knows the defense and simulates it).",
             "Results: `results.parquet` / `results.csv` (one row per image, full provenance)" +
             (", `utility.csv`." if not utility.empty else "; utility was not measured (`[utility] enabled = false`).")]
    return [Paragraph(line) for line in lines] + [Paragraph(METRIC_NOTE)]


def _gate_section(results: pd.DataFrame, gate: GateConfig) -> list:
    violations = check_gate(results, gate)
    blocks = [Heading("Gate"), Paragraph(f"Thresholds: {describe_gate(gate)}. "
                                         + ("PASSED." if not violations else f"FAILED in {len({v.cell for v in violations})} cells."))]
    if violations:
        blocks.append(violations_table(violations, gate))
    return blocks


def _context_section(number: int, context: dict, frame: pd.DataFrame, utility: pd.DataFrame,
                     root: Path, folder: Path) -> list:
    title = context_title(context)
    blocks = [Heading(f"{number}. {title}")]
    summary = with_utility(strongest_attack(frame), utility, context)
    blocks += [Heading("What each defense buys", 3), _summary_table(summary)]
    plot = save_privacy_utility(summary, title, folder / f"c{number}-privacy-utility.png")
    if plot is not None:
        blocks.append(Image(plot, "privacy-utility"))
    for metric in METRICS:
        table = heat_table(frame, metric)
        blocks += [Heading(f"{metric.upper()}: attack × defense", 3),
                   Image(save_heatmap(table, metric, title, folder / f"c{number}-heat-{metric}.png"), f"{metric} heat map"),
                   Table(["attack"] + [str(c) for c in table.columns],
                         [[str(i)] + [_number(v, metric) for v in row] for i, row in zip(table.index, table.to_numpy())],
                         [[""] + [colour(v, metric) for v in row] for row in table.to_numpy()])]
    blocks.append(Heading("Reconstructions", 3))
    for k, (defense, group) in enumerate(frame.groupby("defense_label", sort=False), start=1):
        blocks += [Paragraph(f"Defense `{defense}`: ground truth, then each attack's reconstruction (PSNR below)."),
                   Image(save_reconstruction_grid(group, root, folder / f"c{number}-grid-{k}.png"), f"grid {defense}")]
    return blocks


def _summary_table(summary: pd.DataFrame) -> Table:
    extra = [c for c in ("accuracy", "epsilon", "delta") if c in summary.columns]
    header = ["defense", "PSNR", "SSIM", "LPIPS", "strongest attack", "adaptive gain (dB)", "label acc."] + extra + ["bytes sent"]
    rows = []
    for _, r in summary.iterrows():
        attacked = pd.notna(r["psnr"])
        gain = r["adaptive_gain"]
        rows.append([point_label(r) if "epsilon" in extra else r["defense_label"], _number(r["psnr"], "psnr"),
                     _number(r["ssim"], "ssim"), _number(r["lpips"], "lpips"),
                     r["strongest"] if attacked else "not attacked (reference)",
                     "–" if gain is None or pd.isna(gain) else f"{gain:+.2f}",
                     f"{r['label_accuracy']:.0%}" if attacked else "–"]
                    + [_number(r[c], c) for c in extra] + [_bytes(r["bytes_sent"])])
    colours = [["", *(colour(r[m], m) for m in METRICS)] + [""] * (len(header) - 4) for _, r in summary.iterrows()]
    return Table(header, rows, colours)


def _provenance(results: pd.DataFrame) -> list:
    versions = sorted(pd.unique(results["versions"]))
    devices = sorted(pd.unique(results["device"].astype(str)))
    return [Paragraph(f"Versions: {'; '.join(_versions(v) for v in versions)}. Devices: {', '.join(devices)}."),
            Paragraph("Every row carries its cell's config hash (`cell`, `config_hash`) and full config (`config`); "
                      "`cells/<cell>/` holds its files and `cell.json`.")]


def _versions(text: str) -> str:
    try:
        return ", ".join(f"{k} {v}" for k, v in sorted(json.loads(text).items()))
    except (TypeError, ValueError):
        return str(text)


def _number(value, metric: str) -> str:
    if value is None or pd.isna(value):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.2f}" if metric == "psnr" else f"{value:.3f}" if metric in ("ssim", "lpips", "accuracy") else f"{value:.3g}"


def _bytes(value) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{int(value):,}"
