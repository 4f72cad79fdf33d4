"""The CI gate: leakage thresholds every defended cell must meet (matrix config `[gate]`).

A cell's value is the statistic over its images of the chosen metric (`worst`: the most leaked
image, the default, since one rebuilt face is one too many). A metric that grows with leakage
(PSNR, SSIM) must stay at or below its maximum, one that shrinks (LPIPS) at or above its minimum:
the direction is the metric's record (fedleak.metrics.record)."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fedleak.harness.matrix import UNDEFENDED
from fedleak.harness.matrix_config import GateConfig
from fedleak.metrics.record import METRICS, Metric


@dataclass(frozen=True)
class Violation:
    cell: str
    attack: str
    adaptive: bool
    defense: str
    context: str
    metric: str
    value: float
    limit: float


def gated_rows(results: pd.DataFrame, gate: GateConfig) -> pd.DataFrame:
    if results.empty:
        return results
    if gate.defenses:
        return results[results["defense"].isin(gate.defenses) | results["defense_label"].isin(gate.defenses)]
    return results[results["defense"] != UNDEFENDED]


def check_gate(results: pd.DataFrame, gate: GateConfig) -> list[Violation]:
    rows = gated_rows(results, gate)
    violations = []
    for cell, frame in rows.groupby("cell", sort=True):
        first = frame.iloc[0]
        context = f"{first['dataset']}/{first['model']}/{first['victim_state']}/{first['threat_model']}/seed {first['seed']}"
        for metric, limit in gate.limits():
            value = _statistic(frame[metric.name], gate.statistic, metric)
            if metric.leaks_beyond(value, limit):
                violations.append(Violation(cell, first["attack_label"], bool(first["adaptive"]),
                                            first["defense_label"], context, metric.name, float(value), float(limit)))
    return sorted(violations, key=lambda v: (v.defense, v.attack, v.adaptive, v.context, v.metric, v.cell))


def _statistic(values: pd.Series, statistic: str, metric: Metric) -> float:
    if statistic == "worst":
        return metric.most_leaked(values)
    return values.median() if statistic == "median" else values.mean()


def violations_table(violations: list[Violation], gate: GateConfig):
    from fedleak.reports.document import Table
    return Table(["defense", "attack", "mode", "context", "metric", gate.statistic, "limit", "cell"],
                 [[v.defense, v.attack, "adaptive" if v.adaptive else "non-adaptive", v.context, v.metric,
                   f"{v.value:.3f}", f"{METRICS[v.metric].limit_sign} {v.limit:g}", v.cell]
                  for v in violations])


def describe_gate(gate: GateConfig) -> str:
    parts = [f"{m.name} {m.limit_sign} {limit:g}" for m, limit in gate.limits()]
    scope = ", ".join(gate.defenses) if gate.defenses else f"every defense but {UNDEFENDED}"
    return f"{' and '.join(parts)} ({gate.statistic} image per cell; {scope})"
