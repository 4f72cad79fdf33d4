"""The budget check (issue #12, item 2; AutoAttack's lesson that a verdict is only as good as the
budget behind it): for every gated verdict, the attack that won most of its images runs again on
the same images and seeds with `gate.budget_factor`× its iterations and restarts. If that raises
the gated statistic by more than `gate.budget_tolerance` dB the verdict is unconverged and the
gate fails closed (harness.verdict).

The check's cells are ordinary cells (keyed, stored and resumed like every other; their labels
carry `check = "budget"`), created as soon as every cell of their verdict is done, so they run
while the rest of the matrix is still being computed."""
from __future__ import annotations

from dataclasses import replace

from fedleak.harness.matrix import Cell, cell_key, cell_output
from fedleak.harness.verdict import CONTEXT, gated, strongest_rows

BUDGET_CHECK = "budget"


def verdict_key(cell: Cell) -> tuple:
    """The verdict a cell belongs to: its context and defense setting (harness.verdict.CONTEXT)."""
    c = cell.config
    values = {"dataset": c.data.name, "model": c.victim.model, "victim_state": c.victim.state,
              "threat_model": c.threat_model.name, "knowledge_preset": cell.labels["knowledge_preset"]}
    return (*(values[k] for k in CONTEXT), cell.labels["defense_label"])


class BudgetCheck:
    """`follow_up` for harness.scheduler.run_tasks: the budget check's cells of each gated verdict
    whose cells are all done (stored, or failed: their verdict says the budget check did not run)."""

    def __init__(self, cells: list[Cell], gate, rows_of):
        """`rows_of(cells, store)`: the stored rows of those cells, named like merged results."""
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
            self.issued[key] = self.expand(group, self.rows_of(done, store)) if done else []
            new += self.issued[key]
        return new

    def expand(self, group: list[Cell], rows) -> list[Cell]:
        """The strongest attack row's cells again, with budget_factor× iterations and restarts."""
        attack, adaptive = strongest_rows(rows)
        factor = self.gate.budget_factor
        out = []
        for cell in group:
            if cell.labels["attack_label"] != attack or cell.labels["adaptive"] != adaptive:
                continue
            a = cell.config.attack
            config = replace(cell.config, attack=replace(a, iterations=a.iterations * factor, restarts=a.restarts * factor))
            key = cell_key(config.digest(), cell.code)
            out.append(Cell(key, replace(config, output=cell_output(key)), {**cell.labels, "check": BUDGET_CHECK},
                            cell.code))
        return out
