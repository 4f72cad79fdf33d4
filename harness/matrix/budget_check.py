"""The budget check (issue #12, item 2; AutoAttack's lesson that a verdict is only as good as the
budget behind it): for every gated verdict, the attack rows (attack × mode) that can change it run
again on the same images and seeds with `gate.budget_factor`× their iterations and restarts. Under the
worst-image statistic an attack that wins no image today can win one with more budget (issue #20), so
it is not the winner alone: on each image, every row whose result there is within `gate.budget_margin`
dB of the gated statistic (the verdict's worst image; its median under `median`) reruns on that image.
A row further below would have to gain more than margin + tolerance dB from the extra budget to move
the statistic by more than `gate.budget_tolerance` (the largest gain measured at 4× was 2.8 dB,
docs/verdict.md); `mean` moves with every image, so under it every row reruns on every image. A row
that has no value yet on an image (no label baseline stored) reruns there; an adaptive row whose
numbers repeated its non-adaptive twin's on every image reruns once, as the twin. If the reruns raise
the gated statistic by more than `gate.budget_tolerance` dB the verdict is unconverged and the gate
fails closed (harness.verdict.judge); a row whose rerun repeats its numbers exactly is iteration-free (an
analytic read-out), not "converged". A verdict whose rows already break the gate's bound is not
rerun: more budget can only leak more, and its status is LEAKS whatever the check would say.

The check's cells are ordinary cells (keyed, stored and resumed like every other; their labels
carry `check = "budget"`), created as soon as every cell of their verdict is done, so they run
while the rest of the matrix is still being computed."""
from __future__ import annotations

import json
import math
from dataclasses import replace

from fedleak.harness.matrix.cells import Cell, cell_key, cell_output
from fedleak.harness.verdict.judge import CONTEXT, budget_metric, gated, statistic

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
            rows = self.rows_of(done, store) if done else None
            self.issued[key] = [] if breaks_bound(rows, self.gate) else self.expand(done, rows)
            new += self.issued[key]
        return new

    def expand(self, group: list[Cell], rows=None) -> list[Cell]:
        """The verdict's finished cells again, with budget_factor× iterations and restarts, each on the
        images where it can change the verdict (`rerun_images`; `rows` None: every cell on every image)."""
        factor = self.gate.budget_factor
        images = rerun_images(group, rows, self.gate) if rows is not None and len(rows) else \
            {c.key: list(c.config.data.victim_indices()) for c in group}
        out = []
        for cell in group:
            if not images.get(cell.key):
                continue
            a, data = cell.config.attack, cell.config.data
            victims = images[cell.key]
            config = replace(cell.config, attack=replace(a, iterations=a.iterations * factor, restarts=a.restarts * factor),
                             data=replace(data, victims=victims, num_victims=len(victims)))
            key = cell_key(config.digest(), cell.code)
            out.append(Cell(key, replace(config, output=cell_output(key)),
                            {**cell.labels, "images": victims, "check": BUDGET_CHECK}, cell.code))
        return out


def rerun_images(group: list[Cell], rows, gate) -> dict[str, list[int]]:
    """Per cell key, the images its budget rerun covers: where its row is within `gate.budget_margin` dB
    of the gated statistic or not measured (module docstring). Batches stay whole: a batch reruns when
    any of its images does. An adaptive cell whose rows repeat its non-adaptive twin's exactly reruns
    through the twin."""
    metric = budget_metric(gate)
    rows = rows[rows["image_error"].fillna("") == ""] if "image_error" in rows else rows
    if metric not in rows:
        rows = rows.assign(**{metric: math.nan})
    twins = _identical_twins(group, rows)
    best = rows.groupby("image_index")[metric].max()
    level = statistic(best.dropna(), gate.statistic) if best.notna().any() else math.nan
    out = {}
    for cell in group:
        victims = list(cell.config.data.victim_indices())
        mine = rows[rows["cell"] == cell.key] if "cell" in rows else rows.iloc[:0]
        if cell.key in twins:
            continue
        if gate.statistic == "mean" or math.isnan(level) or mine.empty:
            out[cell.key] = victims
            continue
        value = mine.groupby("image_index")[metric].max()
        near = {int(i) for i, v in value.items() if math.isnan(v) or v >= level - gate.budget_margin}
        near |= {i for i in victims if i not in value.index}   # no row for it: nothing says it cannot matter
        size = cell.config.data.batch_size
        batches = [victims[i:i + size] for i in range(0, len(victims), size)]
        out[cell.key] = [i for batch in batches if near & set(batch) for i in batch]
    return out


def _identical_twins(group: list[Cell], rows) -> set[str]:
    """Keys of the adaptive cells whose numbers equal their non-adaptive twin's on every image and seed."""
    if "cell" not in rows:
        return set()
    by = {(c.labels["attack_label"], c.config.seed, bool(c.labels["adaptive"])): c for c in group}
    twins = set()
    for (attack, seed, adaptive), cell in by.items():
        plain = by.get((attack, seed, False))
        if not adaptive or plain is None:
            continue
        mine = rows[rows["cell"] == cell.key].set_index("image_index")[["psnr", "mse"]].sort_index()
        theirs = rows[rows["cell"] == plain.key].set_index("image_index")[["psnr", "mse"]].sort_index()
        if len(mine) and mine.index.equals(theirs.index) and mine.equals(theirs):
            twins.add(cell.key)
    return twins


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
