"""The budget check (issue #12, item 2; AutoAttack's lesson that a verdict is only as good as the
budget behind it): for every gated verdict, every attack row (attack × mode) that ran against it runs
again on the same images and seeds with `gate.budget_factor`× its iterations and restarts: any of
them can change the verdict (under the worst-image statistic an attack that wins no image today can
win one with more budget, issue #20). If that raises the gated statistic by more than
`gate.budget_tolerance` dB the verdict is unconverged and the gate fails closed (harness.verdict.judge); a
row whose rerun repeats its numbers exactly is iteration-free (an analytic read-out), not "converged".
A verdict whose rows already break the gate's bound is not rerun: more budget can only leak more, and
its status is LEAKS whatever the check would say.

The check's cells are ordinary cells (keyed, stored and resumed like every other; their labels
carry `check = "budget"`), created as soon as every cell of their verdict is done, so they run
while the rest of the matrix is still being computed."""
from __future__ import annotations

import json
import math
from dataclasses import replace

from fedleak.harness.matrix.cells import Cell, cell_key, cell_output
from fedleak.harness.verdict.judge import CONTEXT, gated, statistic

BUDGET_CHECK = "budget"


def verdict_key(cell: Cell) -> tuple:
    """The verdict a cell belongs to: its context and defense setting (harness.verdict.judge.CONTEXT)."""
    c = cell.config
    values = {"dataset": c.data.name, "model": c.victim.model, "victim_state": c.victim.state,
              "threat_model": c.threat_model.name, "threat_model_params": json.dumps(c.threat_model.options, sort_keys=True),
              "knowledge_preset": cell.labels["knowledge_preset"]}
    return (*(values[k] for k in CONTEXT), cell.labels["defense_label"])


class BudgetCheck:
    """`follow_up` for harness.matrix.scheduler.run_tasks: the budget check's cells of each gated verdict
    whose cells are all done (stored, or failed: their verdict says the budget check did not run)."""

    def __init__(self, cells: list[Cell], gate, rows_of):
        """`rows_of(cells, store)`: the stored rows of those cells, named like merged results (read
        against their label baselines where stored: whether the verdict already breaks its bound)."""
        self.gate, self.rows_of = gate, rows_of
        self.groups: dict[tuple, list[Cell]] = {}
        if gate is not None and gate.enabled and gate.budget_factor > 1:
            for cell in cells:
                if gated(cell.config.defense.name, cell.labels["defense_label"], gate):
                    self.groups.setdefault(verdict_key(cell), []).append(cell)
        self.issued: dict[tuple, list[Cell]] = {}

    @property
    def cells(self) -> list[Cell]:
        return [c for group in self.issued.values() for c in group]

    def __call__(self, store) -> list[Cell]:
        new = []
        for key, group in self.groups.items():
            if key in self.issued or not all(store.done(c.key) or store.error(c.key) for c in group):
                continue
            done = [c for c in group if store.done(c.key)]
            self.issued[key] = [] if done and breaks_bound(self.rows_of(done, store), self.gate) else self.expand(done)
            new += self.issued[key]
        return new

    def expand(self, group: list[Cell]) -> list[Cell]:
        """Every finished cell of the verdict again, with budget_factor× iterations and restarts."""
        factor = self.gate.budget_factor
        out = []
        for cell in group:
            a = cell.config.attack
            config = replace(cell.config, attack=replace(a, iterations=a.iterations * factor, restarts=a.restarts * factor))
            key = cell_key(config.digest(), cell.code)
            out.append(Cell(key, replace(config, output=cell_output(key)), {**cell.labels, "check": BUDGET_CHECK},
                            cell.code))
        return out


def breaks_bound(rows, gate) -> bool:
    """Whether a verdict's rows, per image the attacker's best, already break one of the gate's bounds
    under its statistic (a metric not measured yet, e.g. no label baseline stored: no)."""
    if rows is None or len(rows) == 0:
        return False
    per_image = rows.groupby("image_index")
    for metric, limit in gate.limits():
        if metric.name not in rows:
            continue
        value = statistic(metric.most_leaked(per_image[metric.name]), gate.statistic, metric)
        if not math.isnan(value) and metric.leaks_beyond(value, limit):
            return True
    return False
