"""One matrix run: config → cells → (claim, compute, store) → merged results → report → gate.

Interrupt it at any point and run the same command again: stored cells are kept and only the
missing ones are computed; two runs on one output folder share the work."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fedleak.harness.matrix.cell_store import CellStore
from fedleak.harness.matrix.cell_worker import WorkerSetup
from fedleak.harness.matrix.executors import make_backend
from fedleak.harness.matrix.cells import Cell, check_images, check_names
from fedleak.harness.matrix.config import MatrixConfig, load_matrix, with_preset
from fedleak.harness.matrix.results import write_matrix_outputs
from fedleak.harness.run.plugins import load_plugins
from fedleak.harness.run.provenance import command
from fedleak.harness.matrix.folder import check_matrix_folder
from fedleak.harness.matrix.progress import MatrixProgress
from fedleak.core.errors import StorageError
from fedleak.core.io import check_writable
from fedleak.harness.matrix.scheduler import ScheduleResult, run_tasks
from fedleak.harness.matrix.utility_task import UtilityTask
from fedleak.harness.matrix.plan import MatrixPlan, plan_matrix
from fedleak.harness.verdict.judge import Verdict


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
    verdicts: list[Verdict] = field(default_factory=list)    # one per context and defense setting (harness.verdict.judge)
    plan: MatrixPlan | None = field(default=None, repr=False)
    stale: str | None = None                                  # stored results other code computed (not reused)

    @property
    def tasks(self) -> list:
        """Every task of the run, the budget check's cells included."""
        return [*self.plan.tasks(), *self.plan.budget.cells] if self.plan else [*self.utility, *self.cells]


def prepare_matrix(source: str | Path | MatrixConfig, preset: str | None = None) -> MatrixConfig:
    """Load, apply the preset, register plugins and check every name before anything runs."""
    matrix = source if isinstance(source, MatrixConfig) else load_matrix(source)
    matrix = with_preset(matrix, preset)
    load_plugins(matrix.plugins)
    check_names(matrix)
    check_images(matrix)
    return matrix


def stale_note(stale) -> str | None:
    """One line: how many stored results other code computed (not reused: computed again), and what
    changed."""
    if not stale:
        return None
    changed: dict[str, None] = {}
    for _, code, task in stale:
        if not code:
            changed["results stored before keys covered the code"] = None
            continue
        for part, now in task.code.items():
            if code.get(part) != now:
                changed[f"fedleak source {code.get(part, '?')} -> {now}" if part == "fedleak"
                        else f"{part} '{now.split(':')[0]}' source"] = None
    return (f"{len(stale)} stored results were computed by other code and are computed again "
            f"({'; '.join(changed)})")


def run_matrix(matrix: MatrixConfig, output: str | Path, executor: str = "local", workers: int | None = None,
               address: str | None = None, progress: bool = True, not_applicable: tuple[str, ...] = (),
               existing: str = "same") -> MatrixRun:
    """`not_applicable`: pairs left out before the matrix was built (evaluate-defense's), listed with
    those the expansion leaves out. `existing`: what to do with a folder that holds a different matrix's
    results (harness.run.folder): "same" refuses, "resume" adds this matrix to it, "overwrite" replaces it."""
    output = Path(output)
    check_writable(output)
    plan = plan_matrix(matrix)
    plan.not_applicable = [*not_applicable, *plan.not_applicable]
    check_matrix_folder(output, matrix, [c.key for c in plan.cells], existing)
    store = CellStore(output)
    store.prepare()
    store.clean_staging()
    tasks = plan.tasks()
    store.discard_unusable(tasks)
    setup = WorkerSetup(plugins=tuple(matrix.plugins), command=command())
    bar = MatrixProgress(len(tasks), sum(store.done(t.key) for t in tasks), enabled=progress)
    bar.note(f"matrix: {len(plan.cells)} cells + {len(plan.utility)} utility measurements + "
             f"{len(plan.baselines) + len(plan.dependence)} checks, preset {matrix.preset}, "
             f"{bar.done} already stored in {output}")
    stale = stale_note(store.stale(tasks))
    if stale:
        bar.note(stale)
    try:
        backend = make_backend(executor, setup, workers, address)
        try:
            schedule = run_tasks(tasks, store, backend, bar, follow_up=plan.budget)
        finally:
            # whatever finished is merged, also when interrupted: the folder is always consistent
            results, verdicts = write_matrix_outputs(output, plan, store)
    except StorageError as e:  # a full disk: say how the finished cells are kept
        raise StorageError(f"{e}; the finished cells stay in {output}: the same command goes on from them (after "
                           f"changing the matrix, --resume keeps them and --overwrite drops them)") from None
    finally:
        bar.close()
    return MatrixRun(matrix, output, plan.cells, plan.utility, schedule, results, not_applicable=plan.not_applicable,
                     verdicts=verdicts, plan=plan, stale=stale)
