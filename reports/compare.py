"""The comparison of two runs (harness.verdict.compare) as a document: a verdict line, the regressions, the
cells one run lacks, and every cell's before → after (Δ) per metric; a pure view."""
from __future__ import annotations

import math

import pandas as pd

from fedleak.metrics.record import METRICS
from fedleak.reports.document import Document, Heading, Paragraph, Table

REGRESSED_COLOUR = "#f4c7c3"


def comparison_document(table: pd.DataFrame, metrics: list[str], tolerance: dict, statistic: str,
                        only_before: pd.DataFrame, only_after: pd.DataFrame, before: str, after: str,
                        every_cell: bool = True) -> Document:
    doc = Document("fedleak compare")
    regressions = table[table["regressed"]]
    judged = ", ".join(f"{m} {'+' if METRICS[m].larger_leaks else '−'}{tolerance[m]:g}" for m in metrics if m in tolerance)
    verdict = ("REGRESSED" if len(regressions) or len(only_before) else "no regression")
    doc.add(Paragraph(f"Before: `{before}`; after: `{after}`. Per cell the {statistic} over the images both runs "
                      f"attacked; a move towards more leakage beyond the tolerance ({judged}) is a regression."),
            Paragraph(f"{verdict}: {len(regressions)} of {len(table)} cells leak more"
                      + (f", {len(only_before)} cells of before are missing after" if len(only_before) else "")
                      + (f", {len(only_after)} new cells" if len(only_after) else "") + "."))
    if len(regressions):
        doc.add(Heading("Regressions"), delta_table(regressions, metrics, tolerance))
    if len(only_before):
        doc.add(Heading("Cells missing after"), _identity_table(only_before))
    if len(only_after):
        doc.add(Heading("New cells"), _identity_table(only_after))
    if every_cell:
        doc.add(Heading("Every cell"), delta_table(table, metrics, tolerance))
    return doc


def delta_table(table: pd.DataFrame, metrics: list[str], tolerance: dict) -> Table:
    header = ["defense", "attack", "context", "seed", "n", *(f"{m.upper()} before → after (Δ)" for m in metrics), "regressed"]
    rows, colours = [], []
    for _, r in table.iterrows():
        flagged = set(filter(None, str(r["regressed_metrics"]).split(", ")))
        rows.append([r["defense_label"], _attack(r), _context(r), str(r["seed"]), str(r["n_images"]),
                     *(_delta(r, m) for m in metrics), ", ".join(sorted(flagged)) or "–"])
        colours.append(["", "", "", "", "", *(REGRESSED_COLOUR if m in flagged else "" for m in metrics),
                        REGRESSED_COLOUR if flagged else ""])
    return Table(header, rows, colours)


def _identity_table(frame: pd.DataFrame) -> Table:
    return Table(["defense", "attack", "context", "seed"],
                 [[r["defense_label"], _attack(r), _context(r), str(r["seed"])] for _, r in frame.iterrows()])


def _attack(r) -> str:
    return f"{r['attack_label']}{' (adaptive)' if r['adaptive'] else ''}"


def _context(r) -> str:
    return f"{r['dataset']}/{r['model']}/{r['victim_state']}/{r['threat_model']}/{r['knowledge_preset']}"


def _delta(r, m: str) -> str:
    record = METRICS[m]
    a, b, d = r[f"{m}_before"], r[f"{m}_after"], r[f"{m}_delta"]
    sign = "±" if d == 0 else ("+" if d > 0 else "−")
    magnitude = "–" if d is None or (isinstance(d, float) and math.isnan(d)) else f"{sign}{record.format(abs(d))}"
    return f"{record.format(a)} → {record.format(b)} ({magnitude})"
