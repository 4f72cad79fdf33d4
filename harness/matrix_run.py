"""One matrix run: config → cells → (claim, compute, store) → merged results → report → gate.

Interrupt it at any point and run the same command again: stored cells are kept and only the
missing ones are computed; two runs on one output folder share the work."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fedleak.harness.cell_store import CellStore
from fedleak.harness.cell_worker import WorkerSetup
from fedleak.harness.executors import make_backend
from fedleak.harness.matrix import Cell, check_images, check_names, expansion
from fedleak.harness.matrix_config import MatrixConfig, load_matrix, with_preset
from fedleak.harness.matrix_results import write_matrix_outputs
from fedleak.harness.plugins import load_plugins
from fedleak.harness.provenance import command
from fedleak.harness.run_folder import check_matrix_folder
from fedleak.harness.progress import MatrixProgress
from fedleak.core.io import check_writable
from fedleak.harness.scheduler import ScheduleResult, run_tasks
from fedleak.harness.utility_task import UtilityTask, utility_tasks


@dataclass
class MatrixRun:
    matrix: MatrixConfig
    output: Path
    cells: list[Cell]
    utility: list[UtilityTask]
    schedule: ScheduleResult
    results: pd.DataFrame = field(repr=False)
    report: tuple[Path, Path] | None = None  # (report.md, report.html) once written
    not_applicable: list[str] = field(default_factory=list)  # pairs left out by the components' declarations


def prepare_matrix(source: str | Path | MatrixConfig, preset: str | None = None) -> MatrixConfig:
    """Load, apply the preset, register plugins and check every name before anything runs."""
    matrix = source if isinstance(source, MatrixConfig) else load_matrix(source)
    matrix = with_preset(matrix, preset)
    load_plugins(matrix.plugins)
    check_names(matrix)
    check_images(matrix)
    return matrix


def run_matrix(matrix: MatrixConfig, output: str | Path, executor: str = "local", workers: int | None = None,
               address: str | None = None, progress: bool = True, existing: str = "same") -> MatrixRun:
    """`existing`: what to do with a folder that holds a different matrix's results (harness.run_folder):
    "same" refuses, "resume" adds this matrix to it, "overwrite" replaces it."""
    output = Path(output)
    check_writable(output)
    cells, not_applicable = expansion(matrix)
    check_matrix_folder(output, matrix, [c.key for c in cells], existing)
    utility = utility_tasks(matrix) if matrix.utility.enabled else []
    store = CellStore(output)
    store.prepare()
    store.clean_staging()
    store.discard_unusable([*utility, *cells])
    tasks = [*utility, *cells]  # utility first: the longest tasks start while the cells fill the gaps
    setup = WorkerSetup(plugins=tuple(matrix.plugins), command=command())
    bar = MatrixProgress(len(tasks), sum(store.done(t.key) for t in tasks), enabled=progress)
    bar.note(f"matrix: {len(cells)} cells + {len(utility)} utility measurements, preset {matrix.preset}, "
             f"{bar.done} already stored in {output}")
    try:
        backend = make_backend(executor, setup, workers, address)
        try:
            schedule = run_tasks(tasks, store, backend, bar)
        finally:
            # whatever finished is merged, also when interrupted: the folder is always consistent
            results = write_matrix_outputs(output, matrix, cells, utility, store, not_applicable)
    finally:
        bar.close()
    return MatrixRun(matrix, output, cells, utility, schedule, results, not_applicable=not_applicable)
