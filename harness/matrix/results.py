"""A matrix's stored cells merged into the files a user reads (and the report views):

    results.parquet / results.csv   one row per victim image and cell, with provenance + matrix labels
    utility.csv                     one row per defense setting (context): accuracy, ε, ...
    budget_check.parquet / .csv     the budget check's rows (harness.matrix.budget_check), like results
    checks.json                     the data-dependence checks and label baselines (harness.matrix.checks)
    verdicts.json / verdicts.csv    one verdict per context and defense setting (harness.verdict.judge)
    failures.json                   tasks whose last attempt failed, with the reason
    matrix.json                     the matrix as it ran (preset applied, gate included), and the
                                    pairs its components' declarations left out (not_applicable)

Every result row carries the label baseline of its image and of the label its attack used
(`label_baseline_psnr/ssim/lpips`) and its PSNR above it (`psnr_over_label`).

All in a fixed order (the matrix's), so the same stored cells give the same bytes."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from fedleak.core.errors import DataError, UnreadableFileError
from fedleak.core.io import atomic_write, check_writable, read_frame, read_json, write_json
from fedleak.harness.matrix.cell_store import CellStore
from fedleak.harness.run.results import write_frame
from fedleak.harness.matrix.utility_task import UTILITY_FILE, UtilityTask

LABEL_COLUMNS = ("attack_label", "adaptive", "defense_label", "knowledge_preset", "preset")


def merge_results(cells, store: CellStore, baseline_of: dict[str, str] | None = None,
                  baselines: dict[str, dict] | None = None) -> pd.DataFrame:
    """The stored rows of `cells`, labelled; with `baseline_of` (cell key -> baseline task key) and
    the `baselines` those keys name, each row read against its label baseline."""
    frames = []
    for cell in cells:
        if not store.done(cell.key):
            continue
        rows = store.rows(cell.key)
        rows.insert(0, "cell", cell.key)
        rows.insert(1, "position", range(len(rows)))  # index into the cell's images.pt
        for column in LABEL_COLUMNS:
            rows[column] = cell.labels[column]
        if baseline_of is not None:
            attach_baseline(rows, (baselines or {}).get(baseline_of.get(cell.key)))
        frames.append(rows)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def attach_baseline(rows: pd.DataFrame, table: dict | None) -> None:
    """Columns label_baseline_<metric> (what the label alone gives for this image, at the label the
    attack used: its predicted label where that is a class, else the true one) and psnr_over_label.
    NaN where the baseline is missing (its task failed): a gate on it then fails closed."""
    from fedleak.harness.matrix.checks import METRICS
    if table is None:
        for m in METRICS:
            rows[f"label_baseline_{m}"] = float("nan")
        rows["psnr_over_label"] = float("nan")
        return
    position = {index: i for i, index in enumerate(table["images"])}
    values = {m: [] for m in METRICS}
    for image, predicted, true in zip(rows["image_index"], rows["predicted_label"], rows["true_label"]):
        label = int(predicted) if 0 <= int(predicted) < table["classes"] else int(true)
        entry = table["baseline"][position[int(image)]][label] if int(image) in position else None
        for m in METRICS:
            values[m].append(entry[m] if entry else float("nan"))
    for m in METRICS:
        rows[f"label_baseline_{m}"] = values[m]
    rows["psnr_over_label"] = rows["psnr"] - rows["label_baseline_psnr"]


def load_tables(tasks, store: CellStore, filename: str) -> dict[str, dict]:
    """key -> the JSON file `filename` of every stored task."""
    return {t.key: dict(store.read(t.key, filename)) for t in tasks if store.done(t.key)}


def merge_utility(tasks, store: CellStore) -> pd.DataFrame:
    rows = []
    for task in tasks:
        if store.done(task.key):
            values = dict(store.read(task.key, UTILITY_FILE))
            rows.append({"utility_key": task.key, **values.pop("labels"), **values})
    return pd.DataFrame(rows)


def failures(tasks, store: CellStore) -> list[dict]:
    """Every task whose last attempt failed, with the reason, what it was (`labels`: its defense setting
    and context, and for a cell its attack and mode) and whether it is `not_applicable` (see
    inapplicable_keys); a failed cell is never dropped without one of these records."""
    errors = {t.key: record for t in tasks if (record := store.error(t.key)) is not None}
    skipped = inapplicable_keys(tasks, {k: (bool(r.get("user_error", False)), bool(r.get("not_applicable", False)))
                                        for k, r in errors.items()})
    return [{"key": t.key, "task": t.describe(), "error": errors[t.key]["error"],
             "user_error": bool(errors[t.key].get("user_error", False)), "not_applicable": t.key in skipped,
             "labels": failure_labels(t)} for t in tasks if t.key in errors]


def failure_labels(task) -> dict:
    """Where a failed task belongs: its defense setting and the context columns its config names (a
    verdict of that setting and context is missing what the task would have given)."""
    labels = getattr(task, "labels", {}) or {}
    config = getattr(task, "config", None)
    out = {k: labels[k] for k in ("defense_label", "attack_label", "adaptive", "knowledge_preset") if k in labels}
    if labels.get("check"):
        out["budget_check"] = True
    if isinstance(task, UtilityTask):
        out["utility"] = True  # what training costs, not what leaks: no verdict misses it
    if config is not None and hasattr(config, "data"):
        out.update(dataset=config.data.name, threat_model=config.threat_model.name)
    return out


def inapplicable_keys(tasks, failed: dict[str, tuple[bool, bool]]) -> set[str]:
    """The failed attack cells (`failed`: key -> (a FedleakError, a NotApplicableError)) that are not
    applicable rather than failed: the attack declared a requirement this setting lacks (a knowledge flag,
    one example per update: NotApplicableError), or it raised a FedleakError against the undefended
    baseline itself, or against a defense while its non-adaptive cell against the undefended baseline, in
    the same context, raised one too (it does not run here, with or without a defense). Anything else, a
    plugin's RuntimeError or a FedleakError only the defense causes, is a failed cell."""
    from fedleak.harness.matrix.cells import UNDEFENDED, Cell
    cells = [t for t in tasks if isinstance(t, Cell)]
    baseline = {_context_key(c): c.key for c in cells if c.config.defense.name == UNDEFENDED}
    out = set()
    for cell in cells:
        user, declared = failed.get(cell.key, (False, False))
        if declared:
            out.add(cell.key)
            continue
        if not user:
            continue
        twin = cell.key if cell.config.defense.name == UNDEFENDED else baseline.get(_context_key(cell))
        if twin is not None and failed.get(twin, (False, False))[0]:
            out.add(cell.key)
    return out


def _context_key(cell) -> str:
    """A cell's attack and context without its defense and mode: the key of its undefended twin."""
    import json
    config = cell.config.to_dict()
    config.pop("defense", None)
    config.pop("output", None)
    config["threat_model"] = {**config["threat_model"], "knowledge": {
        k: v for k, v in dict(config["threat_model"]["knowledge"]).items() if k != "defense"}}
    return json.dumps(config, sort_keys=True, default=str)


def write_matrix_outputs(root: Path, plan, store: CellStore) -> tuple[pd.DataFrame, list]:
    """Merge what `plan` (harness.matrix.plan.MatrixPlan) has stored into the files above; returns
    (results, verdicts)."""
    from fedleak.core.fingerprint import package_digest
    from fedleak.harness.matrix.checks import BASELINE_FILE, CHECK_FILE
    from fedleak.harness.verdict.judge import compute_verdicts, verdict_frame
    baselines = load_tables(plan.baselines, store, BASELINE_FILE)
    results = merge_results(plan.cells, store, plan.baseline_of, baselines)
    budget_cells = plan.budget.cells
    budget = merge_results(budget_cells, store, plan.baseline_of_budget(), baselines)
    checks = list(load_tables(plan.dependence, store, CHECK_FILE).values())
    tasks = [*plan.utility, *plan.baselines, *plan.dependence, *plan.cells, *budget_cells, *plan.ladder]
    failed = failures(tasks, store)
    _write_table(results, root, "results")
    _write_ladder(root, plan.ladder, store, results)
    _write_table(budget, root, "budget_check")
    utility_frame = merge_utility(plan.utility, store)
    if len(utility_frame):
        atomic_write(root / "utility.csv", utility_frame.to_csv(index=False).encode())
    else:
        (root / "utility.csv").unlink(missing_ok=True)
    write_json(root / "checks.json", {"data_dependence": checks,
                                       "label_baseline": [baselines[k] for k in sorted(baselines)]})
    verdicts = compute_verdicts(results, checks, budget, plan.matrix.gate, failed)
    write_json(root / "verdicts.json", [v.to_dict() for v in verdicts])
    frame = verdict_frame(verdicts)
    if len(frame):
        atomic_write(root / "verdicts.csv", frame.to_csv(index=False).encode())
    else:
        (root / "verdicts.csv").unlink(missing_ok=True)
    write_json(root / "failures.json", failed)
    write_json(root / "matrix.json", {"matrix": dataclasses.asdict(plan.matrix), "cells": [c.key for c in plan.cells],
                                       "utility": [u.key for u in plan.utility],
                                       "checks": [t.key for t in [*plan.baselines, *plan.dependence]],
                                       "budget_check": [c.key for c in budget_cells], "code": package_digest(),
                                       "not_applicable": list(plan.not_applicable)})
    return results, verdicts


def _write_ladder(root: Path, cells: list, store: CellStore, results: pd.DataFrame) -> None:
    """ladder.{csv,parquet} (the rungs' rows, labelled) and ladder.md (reports.ladder.matrix_ladder_tables)."""
    from fedleak.reports.ladder import matrix_ladder_tables
    ladder = merge_results(cells, store)
    if len(ladder):
        labels = {c.key: c.labels for c in cells}
        ladder = ladder.assign(ladder_rung=ladder["cell"].map(lambda k: labels[k]["ladder_rung"]),
                               ladder_label=ladder["cell"].map(lambda k: labels[k]["ladder_label"]))
    _write_table(ladder, root, "ladder")
    if len(ladder):
        atomic_write(root / "ladder.md", (matrix_ladder_tables(ladder, results) + "\n").encode())
    else:
        (root / "ladder.md").unlink(missing_ok=True)


def _write_table(frame: pd.DataFrame, root: Path, stem: str) -> None:
    if len(frame):
        write_frame(frame, root, stem)
        return
    for suffix in ("parquet", "csv"):
        (root / f"{stem}.{suffix}").unlink(missing_ok=True)


def read_matrix_outputs(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, list[dict], dict]:
    """(results, utility, failures, matrix.json) of a matrix folder; missing parts are empty."""
    from fedleak.harness.run.results import read_results
    root = Path(root)
    results = read_results(root)
    utility = read_frame(root / "utility.csv", "utility table") if (root / "utility.csv").is_file() else pd.DataFrame()
    failed = read_json(root / "failures.json", "failure list") if (root / "failures.json").is_file() else []
    matrix = read_json(root / "matrix.json", "matrix record") if (root / "matrix.json").is_file() else {}
    if not isinstance(failed, list) or not isinstance(matrix, dict):
        raise UnreadableFileError(f"{root}: failures.json or matrix.json is not what fedleak writes (a list, a table)")
    return results, utility, failed, matrix


def read_verdicts(root: str | Path, results: pd.DataFrame | None = None, gate=None) -> list:
    """The verdicts of a matrix folder, computed again from its stored rows and checks (so an edited
    verdict rule applies to old results), with the gate it ran with unless `gate` is given."""
    from fedleak.core.options import from_dict
    from fedleak.harness.matrix.config import GateConfig
    from fedleak.harness.run.results import read_results
    from fedleak.harness.verdict.judge import compute_verdicts
    root = Path(root)
    if results is None:
        results = read_results(root)
    if gate is None:
        matrix = read_json(root / "matrix.json", "matrix record") if (root / "matrix.json").is_file() else {}
        gate = from_dict(GateConfig, matrix.get("matrix", {}).get("gate", {}), "gate")
    budget = read_frame(root / "budget_check.parquet", "budget check") if (root / "budget_check.parquet").is_file() else None
    checks = read_json(root / "checks.json", "checks record").get("data_dependence", []) \
        if (root / "checks.json").is_file() else []
    failed = read_json(root / "failures.json", "failure list") if (root / "failures.json").is_file() else []
    return compute_verdicts(results, checks, budget, gate, failed if isinstance(failed, list) else [])


def report_matrix_folder(root: str | Path, folder: str | Path | None = None, figures=None) -> tuple[Path, Path]:
    """report.md + report.html of a matrix folder (default: ROOT/report), from its stored results;
    `figures`: reports.document.FigureOptions (formats, dpi)."""
    import functools

    from fedleak.core.options import from_dict
    from fedleak.harness.verdict.gate import describe_gate, failures_table, gate_failures
    from fedleak.harness.matrix.config import GateConfig
    from fedleak.harness.run.folder import VIEW, Owner, claim_folder
    from fedleak.reports.document import FigureOptions
    from fedleak.reports.matrix_report import GateOutcome, MatrixView, write_matrix_report
    root = Path(root)
    if root.is_file():
        root = root.parent
    results, utility, failed, matrix = read_matrix_outputs(root)
    folder = Path(folder) if folder else root / "report"
    check_writable(folder, "--output")
    claim_folder(folder, Owner("report", "report", VIEW))  # a view: rewritten, but never over the user's files
    if "cell" not in results.columns:
        raise DataError(f"{root}: results.parquet is not a matrix's (no cell column); run `fedleak matrix` first")
    gate = from_dict(GateConfig, matrix.get("matrix", {}).get("gate", {}), "gate")
    verdicts = read_verdicts(root, results, gate)
    outcome = None
    if gate.enabled:
        failures = gate_failures(verdicts)
        outcome = GateOutcome(describe_gate(gate), len(failures), failures_table(failures, gate) if failures else None)

    @functools.lru_cache(maxsize=64)
    def cell_images(cell: str) -> dict:
        return CellStore(root).read(cell, "images.pt")  # checked against its digest

    view = MatrixView(results, utility, failed, matrix.get("matrix", {}).get("preset", results["preset"].iloc[0]),
                      outcome, cell_images, tuple(matrix.get("not_applicable", ())), tuple(verdicts),
                      figures or FigureOptions())
    return write_matrix_report(view, folder)
