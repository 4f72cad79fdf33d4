"""The report of a matrix: report.md (+ PNGs beside it) and report.html (self-contained).
A pure view: the application (fedleak.harness.matrix.results.report_matrix_folder) reads the stored
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
from fedleak.reports.document import (Document, FigureOptions, Heading, Image, Paragraph, Table, md_code, md_text, to_html,
                                      to_markdown)
from fedleak.reports.heatmap import CMAP, colour, save_heatmap, scale_note
from fedleak.reports.image_views import image_gallery
from fedleak.reports.matrix_grids import save_mosaic
from fedleak.reports.matrix_tables import CONTEXT, context_title, contexts, heat_table, model_check_table, with_utility
from fedleak.reports.privacy_utility import save_privacy_utility
from fedleak.reports.verdicts import VERDICT_NOTE, identical_pairs, verdict_points, verdict_table

METRIC_NOTE = ("Metrics: images in [0,1]; PSNR over all channels; SSIM Gaussian 11/σ1.5 per channel, averaged; "
               f"LPIPS AlexNet v0.1. Leakage is the attacker's best: {direction_note()}.")


@dataclass(frozen=True)
class GateOutcome:
    """What the gate decided, as the report shows it."""
    description: str            # thresholds, statistic and scope
    failed_cells: int           # gated verdicts that failed
    violations: Table | None    # one row per failed verdict, with why; None when the gate passed


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
    verdicts: tuple = ()                             # reports.verdicts.Verdict, one per context and defense setting
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
        verdicts = [v for v in view.verdicts
                    if all(str(v.context.get(k)) == str(context[k]) for k in [*CONTEXT, "threat_model_params"])]
        doc.add(*_context_section(number, context, frame, utility, verdicts, view.cell_images, folder, view.figures))
    checks = model_check_table(results)
    if len(checks):
        doc.add(Heading("Client-side model check"),
                Paragraph("Each client round where the `model-check` defense inspected the model it received: on the "
                          "global model a flag is a false positive, on a model an attack crafted it is a detection. "
                          "A flagged model is not trained on (the client drops out of the round)."),
                Table(list(checks.columns[:-2]) + ["rate", "reads as"],
                      [[*r[:-2], f"{r[-2]:.0%}", r[-1]] for r in checks.itertuples(index=False)]))
    if view.failed:
        doc.add(Heading("Cells that did not run"),
                Paragraph("Each is retried by the next run of the same matrix. A failed one is a gap in its verdict "
                          "(INCONCLUSIVE where gated); a not-applicable one is the attack's declared requirement, "
                          "or fails without any defense too."),
                Table(["task", "key", "outcome", "error"],
                      [[f["task"], f["key"], "not applicable" if f.get("not_applicable") else "failed", f["error"]]
                       for f in view.failed]))
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
    verdict = "PASSED." if gate.violations is None else f"FAILED for {gate.failed_cells} verdicts."
    blocks = [Heading("Gate"), Paragraph(f"Thresholds: {gate.description}. {verdict}")]
    if gate.violations is not None:
        blocks.append(gate.violations)
    return blocks


def _context_section(number: int, context: dict, frame: pd.DataFrame, utility: pd.DataFrame, verdicts: list,
                     cell_images: Callable[[str], dict], folder: Path, figures: FigureOptions) -> list:
    title = context_title(context)
    blocks = [Heading(f"{number}. {title}")]
    by_label = {}
    if not utility.empty:
        summary = with_utility(verdict_points(verdicts), utility, context)
        by_label = {r["defense_label"]: r for r in summary.to_dict("records")}
    blocks += [Heading("What each defense buys", 3), verdict_table(verdicts, by_label), Paragraph(VERDICT_NOTE)]
    for v in verdicts:
        if v.reasons:
            blocks.append(Paragraph(f"{md_code(v.defense_label)}: {v.status or 'not gated'}: "
                                    f"{md_text('; '.join(v.reasons))}."))
    references = [r for label, r in by_label.items() if label not in {v.defense_label for v in verdicts}]
    if references:
        columns = [c for c in ("accuracy", "accuracy_drop", "epsilon", "bytes_sent") if c in references[0]]
        blocks += [Paragraph("Reference settings (utility measured, not attacked):"),
                   Table(["defense", *columns], [[r["defense_label"], *(_number(r.get(c), c) for c in columns)]
                                                 for r in references])]
    if by_label:
        plot = save_privacy_utility(pd.DataFrame(list(by_label.values())), title, folder / f"c{number}-privacy-utility.png",
                                    figures)
        if plot is not None:
            blocks += [Image(plot, "privacy-utility"),
                       Paragraph("Per defense setting: accuracy against the verdict's PSNR (median over images of each "
                                 "image's best); the bar is its 95% bootstrap interval. Settings on the same point share a "
                                 f"label. Data: `{plot.with_suffix('.csv').name}`.")]
    identical = identical_pairs(verdicts)
    for metric in (m.name for m in REPORTED):
        table = heat_table(frame, metric, identical)
        path = save_heatmap(table, metric, title, folder / f"c{number}-heat-{metric}.png", figures)
        blocks += [Heading(f"{metric.upper()}: attack × defense", 3), Image(path, f"{metric} heat map"),
                   Paragraph(f"Median over images of each attack's best per image; colour map {CMAP} (colour-blind "
                             f"safe), brighter = more leaked, {scale_note(metric)}. Data: `{path.with_suffix('.csv').name}`."),
                   Table(["attack"] + [str(c) for c in table.columns],
                         [[str(i)] + [_number(v, metric) for v in row] for i, row in zip(table.index, table.to_numpy())],
                         [[""] + [colour(v, metric) for v in row] for row in table.to_numpy()])]
    if identical:
        blocks.append(Paragraph("Adaptive rows appear only where knowing the defense changed the attack; an empty "
                                "cell repeated the non-adaptive row exactly (" +
                                ", ".join(f"{a} vs {d}" for a, d in sorted(identical)) + ")."))
    mosaic = save_mosaic(frame, cell_images, title, folder / f"c{number}-mosaic.png", figures)
    blocks += [Heading("Reconstructions", 3), Image(mosaic, "reconstruction mosaic"),
               Paragraph("Rows: defense settings; columns: the ground truth, then each attack (and mode); one image, its "
                         f"PSNR under each reconstruction. Data: `{mosaic.with_suffix('.csv').name}`."),
               Heading("Per image", 3), image_gallery(frame, cell_images, f"c{number}")]
    return blocks


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
