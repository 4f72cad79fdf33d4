"""The CI gate: leakage thresholds every defended cell must meet (matrix config `[gate]`).

A cell's value is the statistic over its images of the chosen metric (`worst`: the most leaked
image, the default, since one rebuilt face is one too many). PSNR and SSIM must stay at or below
their maximum, LPIPS at or above its minimum."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fedleak.harness.matrix import UNDEFENDED
from fedleak.harness.matrix_config import GateConfig

# metric -> (config field, True when a larger value means more leakage)
LIMITS = {"psnr": ("max_psnr", True), "ssim": ("max_ssim", True), "lpips": ("min_lpips", False)}


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
        for metric, (field_name, larger_leaks) in LIMITS.items():
            limit = getattr(gate, field_name)
            if limit is None:
                continue
            value = _statistic(frame[metric], gate.statistic, larger_leaks)
            if (value > limit) if larger_leaks else (value < limit):
                violations.append(Violation(cell, first["attack_label"], bool(first["adaptive"]),
                                            first["defense_label"], context, metric, float(value), float(limit)))
    return sorted(violations, key=lambda v: (v.defense, v.attack, v.adaptive, v.context, v.metric, v.cell))


def _statistic(values: pd.Series, statistic: str, larger_leaks: bool) -> float:
    if statistic == "worst":
        return values.max() if larger_leaks else values.min()
    return values.median() if statistic == "median" else values.mean()


def violations_table(violations: list[Violation], gate: GateConfig):
    from fedleak.reports.document import Table
    return Table(["defense", "attack", "mode", "context", "metric", gate.statistic, "limit", "cell"],
                 [[v.defense, v.attack, "adaptive" if v.adaptive else "non-adaptive", v.context, v.metric,
                   f"{v.value:.3f}", ("≤ " if LIMITS[v.metric][1] else "≥ ") + f"{v.limit:g}", v.cell]
                  for v in violations])


def describe_gate(gate: GateConfig) -> str:
    parts = [f"{m} {'≤' if larger else '≥'} {getattr(gate, f):g}" for m, (f, larger) in LIMITS.items()
             if getattr(gate, f) is not None]
    scope = ", ".join(gate.defenses) if gate.defenses else f"every defense but {UNDEFENDED}"
    return f"{' and '.join(parts)} ({gate.statistic} image per cell; {scope})"
