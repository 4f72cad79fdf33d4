"""A matrix's stored cells merged into the files a user reads (and the report views):

    results.parquet / results.csv   one row per victim image and cell, with provenance + matrix labels
    utility.csv                     one row per defense setting (context): accuracy, ε, ...
    failures.json                   tasks whose last attempt failed, with the reason
    matrix.json                     the matrix as it ran (preset applied, gate included), and the
                                    pairs its components' declarations left out (not_applicable)

All in a fixed order (the matrix's), so the same stored cells give the same bytes."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from fedleak.core.errors import DataError, UnreadableFileError
from fedleak.core.io import atomic_write, check_writable, load_tensors, read_frame, read_json, write_json
from fedleak.harness.cell_store import CellStore
from fedleak.harness.results import write_frame
from fedleak.harness.utility_task import UTILITY_FILE

LABEL_COLUMNS = ("attack_label", "adaptive", "defense_label", "knowledge_preset", "preset")


def merge_results(cells, store: CellStore) -> pd.DataFrame:
    frames = []
    for cell in cells:
        if not store.done(cell.key):
            continue
        rows = store.rows(cell.key)
        rows.insert(0, "cell", cell.key)
        rows.insert(1, "position", range(len(rows)))  # index into the cell's images.pt
        for column in LABEL_COLUMNS:
            rows[column] = cell.labels[column]
        frames.append(rows)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def merge_utility(tasks, store: CellStore) -> pd.DataFrame:
    rows = []
    for task in tasks:
        if store.done(task.key):
            values = dict(store.read(task.key, UTILITY_FILE))
            rows.append({"utility_key": task.key, **values.pop("labels"), **values})
    return pd.DataFrame(rows)


def failures(tasks, store: CellStore) -> list[dict]:
    out = []
    for task in tasks:
        record = store.error(task.key)
        if record is not None:
            out.append({"key": task.key, "task": task.describe(), "error": record["error"],
                        "user_error": record.get("user_error", False)})
    return out


def write_matrix_outputs(root: Path, matrix, cells, utility, store: CellStore, not_applicable=()) -> pd.DataFrame:
    results = merge_results(cells, store)
    if len(results):
        write_frame(results, root)
    else:
        for name in ("results.parquet", "results.csv"):
            (root / name).unlink(missing_ok=True)
    utility_frame = merge_utility(utility, store)
    if len(utility_frame):
        atomic_write(root / "utility.csv", utility_frame.to_csv(index=False).encode())
    else:
        (root / "utility.csv").unlink(missing_ok=True)
    write_json(root / "failures.json", failures([*utility, *cells], store))
    write_json(root / "matrix.json", {"matrix": dataclasses.asdict(matrix), "cells": [c.key for c in cells],
                                      "utility": [u.key for u in utility], "not_applicable": list(not_applicable)})
    return results


def read_matrix_outputs(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, list[dict], dict]:
    """(results, utility, failures, matrix.json) of a matrix folder; missing parts are empty."""
    from fedleak.harness.results import read_results
    root = Path(root)
    results = read_results(root)
    utility = read_frame(root / "utility.csv", "utility table") if (root / "utility.csv").is_file() else pd.DataFrame()
    failed = read_json(root / "failures.json", "failure list") if (root / "failures.json").is_file() else []
    matrix = read_json(root / "matrix.json", "matrix record") if (root / "matrix.json").is_file() else {}
    if not isinstance(failed, list) or not isinstance(matrix, dict):
        raise UnreadableFileError(f"{root}: failures.json or matrix.json is not what fedleak writes (a list, a table)")
    return results, utility, failed, matrix


def report_matrix_folder(root: str | Path, folder: str | Path | None = None, figures=None) -> tuple[Path, Path]:
    """report.md + report.html of a matrix folder (default: ROOT/report), from its stored results;
    `figures`: reports.document.FigureOptions (formats, dpi)."""
    import functools

    from fedleak.core.options import from_dict
    from fedleak.harness.gate import check_gate, describe_gate, violations_table
    from fedleak.harness.matrix_config import GateConfig
    from fedleak.reports.document import FigureOptions
    from fedleak.reports.matrix_report import GateOutcome, MatrixView, write_matrix_report
    root = Path(root)
    if root.is_file():
        root = root.parent
    results, utility, failed, matrix = read_matrix_outputs(root)
    folder = Path(folder) if folder else root / "report"
    check_writable(folder, "--output")
    if "cell" not in results.columns:
        raise DataError(f"{root}: results.parquet is not a matrix's (no cell column); run `fedleak matrix` first")
    gate = from_dict(GateConfig, matrix.get("matrix", {}).get("gate", {}), "gate")
    outcome = None
    if gate.enabled:
        violations = check_gate(results, gate)
        outcome = GateOutcome(describe_gate(gate), len({v.cell for v in violations}),
                              violations_table(violations, gate) if violations else None)

    @functools.lru_cache(maxsize=64)
    def cell_images(cell: str) -> dict:
        return load_tensors(root / "cells" / cell / "images.pt", "stored cell images")

    view = MatrixView(results, utility, failed, matrix.get("matrix", {}).get("preset", results["preset"].iloc[0]),
                      outcome, cell_images, tuple(matrix.get("not_applicable", ())), figures or FigureOptions())
    return write_matrix_report(view, folder)
