"""Everything one matrix run computes, as tasks: the attack cells (harness.matrix.cells), the utility
measurements (harness.matrix.utility_task), the checks a verdict needs (harness.matrix.checks: label baselines,
data dependence) and the budget check's cells, which follow once their verdict's cells are done
(harness.matrix.budget_check)."""
from __future__ import annotations

from dataclasses import dataclass, field

from fedleak.harness.matrix.budget_check import BudgetCheck
from fedleak.harness.matrix.checks import DataDependenceTask, LabelBaselineTask, baseline_keys, check_tasks
from fedleak.harness.matrix.cells import Cell, expansion
from fedleak.harness.verdict.judge import UNDEFENDED
from fedleak.harness.matrix.config import MatrixConfig
from fedleak.harness.matrix.utility_task import UtilityTask, utility_tasks
from fedleak.harness.verdict.judge import gated


@dataclass
class MatrixPlan:
    matrix: MatrixConfig
    cells: list[Cell]
    utility: list[UtilityTask]
    dependence: list[DataDependenceTask]
    baselines: list[LabelBaselineTask]
    not_applicable: list[str]
    budget: BudgetCheck
    ladder: list[Cell] = field(default_factory=list)  # the ladder's rungs (harness.flower.ladder), undefended

    @property
    def baseline_of(self) -> dict[str, str]:
        return baseline_keys(self.cells, self.baselines)

    def baseline_of_budget(self) -> dict[str, str]:
        return baseline_keys(self.budget.cells, self.baselines)

    def tasks(self) -> list:
        """In the order they start: the longest (utility) first, then the checks, then the undefended
        cells (every verdict's positive control: a run cut short still has the control of the verdicts
        it finished), then the gated cells (their budget check follows them), then the rest."""
        gate = self.matrix.gate
        control = [c for c in self.cells if c.config.defense.name == UNDEFENDED]
        first = [c for c in self.cells if c not in control
                 and gated(c.config.defense.name, c.labels["defense_label"], gate)]
        rest = [c for c in self.cells if c not in control and c not in first]
        return [*self.utility, *self.baselines, *self.dependence, *control, *first, *rest, *self.ladder]


def plan_matrix(matrix: MatrixConfig, rows_of=None) -> MatrixPlan:
    """The plan of `matrix`; `rows_of(cells, store)` gives the budget check the stored rows of a
    verdict's cells (default: harness.matrix.results.merge_results)."""
    cells, not_applicable = expansion(matrix)
    utility = utility_tasks(matrix) if matrix.utility.enabled else []
    dependence, baselines = check_tasks(cells)
    if rows_of is None:
        rows_of = _read_against(baselines)
    from fedleak.harness.matrix.ladder import matrix_ladder_cells
    return MatrixPlan(matrix, cells, utility, dependence, baselines, not_applicable,
                      BudgetCheck(cells, matrix.gate, rows_of), matrix_ladder_cells(matrix, cells))


def _read_against(baselines: list[LabelBaselineTask]):
    """`rows_of` for the budget check: a verdict's stored rows read against the label baselines stored so
    far (one that already breaks its bound is not rerun: more budget can only leak more)."""
    def rows_of(cells, store):
        from fedleak.harness.matrix.checks import BASELINE_FILE
        from fedleak.harness.matrix.results import load_tables, merge_results
        return merge_results(cells, store, baseline_keys(cells, baselines), load_tables(baselines, store, BASELINE_FILE))
    return rows_of
