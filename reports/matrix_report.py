"""The report of a matrix: report.md (+ PNGs beside it) and report.html (self-contained).
A pure view: the application (fedleak.harness.matrix_results.report_matrix_folder) reads the stored
results and judges the gate, then hands both here; the same inputs give the same bytes."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from fedleak.core.io import atomic_write
from fedleak.metrics.record import METRICS, REPORTED, direction_note
from fedleak.reports.document import (Document, FigureOptions, Heading, Image, Paragraph, Table, to_html,
                                      to_markdown)
from fedleak.reports.heatmap import CMAP, colour, save_heatmap, scale_note
from fedleak.reports.image_views import image_gallery
from fedleak.reports.matrix_grids import save_mosaic
from fedleak.reports.matrix_tables import context_title, contexts, heat_table, strongest_attack, with_utility
from fedleak.reports.privacy_utility import point_label, save_privacy_utility

METRIC_NOTE = ("Metrics: images in [0,1]; PSNR over all channels; SSIM Gaussian 11/σ1.5 per channel, averaged; "
               f"LPIPS AlexNet v0.1. Leakage is the attacker's best: {direction_note()}.")


@dataclass(frozen=True)
class GateOutcome:
    """What the gate decided, as the report shows it."""
    description: str            # thresholds, statistic and scope
    failed_cells: int
    violations: Table | None    # one row per broken threshold; None when the gate passed


@dataclass(frozen=True)
class MatrixView:
    """Everything the report shows of one matrix run."""
    results: pd.DataFrame                            # merged rows, one per image and cell
    utility: pd.DataFrame                            # one row per defense setting (may be empty)
    failed: list[dict]                               # tasks whose last attempt failed
    preset: str
    gate: GateOutcome | None                         # None: the matrix has no [gate]
    cell_images: Callable[[str], dict]               # cell key -> {"ground_truth", "reconstructions"}
    not_applicable: tuple[str, ...] = ()             # pairs the components' declarations left out, with why
    figures: FigureOptions = FigureOptions()         # formats and resolution of every figure


def write_matrix_report(view: MatrixView, folder: str | Path) -> tuple[Path, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for pattern in ("*.png", "*.pdf", "*.svg", "*.csv"):  # a figure of a context that is gone must not linger
        for stale in folder.glob(pattern):
            stale.unlink()
    results, utility = view.results, view.utility
    doc = Document("fedleak attack × defense matrix")
    doc.add(*_overview(results, utility, view.preset))
    if view.gate is not None:
        doc.add(*_gate_section(view.gate))
    for number, (context, frame) in enumerate(contexts(results), start=1):
        doc.add(*_context_section(number, context, frame, utility, view.cell_images, folder, view.figures))
    if view.failed:
        doc.add(Heading("Cells that did not run"),
                Paragraph("Each is retried by the next run of the same matrix."),
                Table(["task", "key", "error"], [[f["task"], f["key"], f["error"]] for f in view.failed]))
    if view.not_applicable:
        doc.add(Heading("Pairs not applicable"),
                Paragraph("An attack or defense runs only under the threat models that share what it declares it "
                          "applies to; these pairs of the matrix were therefore not run."),
                Table(["why"], [[line] for line in view.not_applicable]))
    doc.add(Heading("Provenance"), *_provenance(results))
    markdown, page = folder / "report.md", folder / "report.html"
    atomic_write(markdown, to_markdown(doc, folder))
    atomic_write(page, to_html(doc))
    return markdown, page


def _overview(results: pd.DataFrame, utility: pd.DataFrame, preset: str) -> list:
    budgets = results.groupby("attack_label", sort=False)[["iterations", "restarts"]].first()
    budget_text = ", ".join(f"{a} {int(r.iterations)}×{int(r.restarts)}" for a, r in budgets.iterrows())
    lines = [f"{results['cell'].nunique()} cells, {len(results)} attacked images (rows), preset `{preset}`; "
             f"attacks {', '.join(pd.unique(results['attack_label']))}; "
             f"defenses {', '.join(pd.unique(results['defense_label']))}.",
             f"Budgets (iterations × restarts): {budget_text}. Every attack runs non-adaptive (it matches the "
             f"server's decoding) and adaptive (it knows the defense and simulates it).",
             "Results: `results.parquet` / `results.csv` (one row per image, full provenance)" +
             (", `utility.csv`." if not utility.empty else "; utility was not measured (`[utility] enabled = false`).")]
    return [Paragraph(line) for line in lines] + [Paragraph(METRIC_NOTE)]


def _gate_section(gate: GateOutcome) -> list:
    verdict = "PASSED." if gate.violations is None else f"FAILED in {gate.failed_cells} cells."
    blocks = [Heading("Gate"), Paragraph(f"Thresholds: {gate.description}. {verdict}")]
    if gate.violations is not None:
        blocks.append(gate.violations)
    return blocks


def _context_section(number: int, context: dict, frame: pd.DataFrame, utility: pd.DataFrame,
                     cell_images: Callable[[str], dict], folder: Path, figures: FigureOptions) -> list:
    title = context_title(context)
    blocks = [Heading(f"{number}. {title}")]
    summary = with_utility(strongest_attack(frame), utility, context)
    blocks += [Heading("What each defense buys", 3), _summary_table(summary)]
    plot = save_privacy_utility(summary, title, folder / f"c{number}-privacy-utility.png", figures)
    if plot is not None:
        blocks += [Image(plot, "privacy-utility"),
                   Paragraph("Per defense setting: accuracy against the median over images of each image's best PSNR; "
                             "the bar spans the middle half of the images. Settings on the same point share a label. "
                             f"Data: `{plot.with_suffix('.csv').name}`.")]
    for metric in (m.name for m in REPORTED):
        table = heat_table(frame, metric)
        path = save_heatmap(table, metric, title, folder / f"c{number}-heat-{metric}.png", figures)
        blocks += [Heading(f"{metric.upper()}: attack × defense", 3), Image(path, f"{metric} heat map"),
                   Paragraph(f"Median over images of each attack's best per image; colour map {CMAP} (colour-blind "
                             f"safe), brighter = more leaked, {scale_note(metric)}. Data: `{path.with_suffix('.csv').name}`."),
                   Table(["attack"] + [str(c) for c in table.columns],
                         [[str(i)] + [_number(v, metric) for v in row] for i, row in zip(table.index, table.to_numpy())],
                         [[""] + [colour(v, metric) for v in row] for row in table.to_numpy()])]
    mosaic = save_mosaic(frame, cell_images, title, folder / f"c{number}-mosaic.png", figures)
    blocks += [Heading("Reconstructions", 3), Image(mosaic, "reconstruction mosaic"),
               Paragraph("Rows: defense settings; columns: the ground truth, then each attack (and mode); one image, its "
                         f"PSNR under each reconstruction. Data: `{mosaic.with_suffix('.csv').name}`."),
               Heading("Per image", 3), image_gallery(frame, cell_images, f"c{number}")]
    return blocks


def _summary_table(summary: pd.DataFrame) -> Table:
    extra = [c for c in ("accuracy", "epsilon", "delta") if c in summary.columns]
    header = (["defense", *(m.name.upper() for m in REPORTED), "strongest attack", "adaptive gain (dB)", "label acc."]
              + extra + ["bytes sent"])
    rows = []
    for _, r in summary.iterrows():
        attacked = pd.notna(r["psnr"])
        gain = r["adaptive_gain"]
        rows.append([point_label(r) if "epsilon" in extra else r["defense_label"],
                     *(_number(r[m.name], m.name) for m in REPORTED),
                     r["strongest"] if attacked else "not attacked (reference)",
                     "–" if gain is None or pd.isna(gain) else f"{gain:+.2f}",
                     f"{r['label_accuracy']:.0%}" if attacked else "–"]
                    + [_number(r[c], c) for c in extra] + [_bytes(r["bytes_sent"])])
    colours = [["", *(colour(r[m.name], m.name) for m in REPORTED)] + [""] * (len(header) - 1 - len(REPORTED))
               for _, r in summary.iterrows()]
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
    if metric in METRICS:
        return METRICS[metric].format(value)
    return f"{value:.3f}" if metric == "accuracy" else f"{value:.3g}"


def _bytes(value) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{int(value):,}"
