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
from fedleak.metrics.record import METRICS, REPORTED, Metric


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


# The context of a verdict: everything but the defense setting and the attack (reports.matrix_tables.CONTEXT).
VERDICT_CONTEXT = ("dataset", "model", "victim_state", "threat_model", "knowledge_preset")


def verdict_records(results: pd.DataFrame, gate: GateConfig | None) -> list[dict]:
    """One record per context and defense setting (the strongest attack per image), with the gate's
    decision where `gate` judges that setting: what summary.json, junit.xml and the step summary
    carry. Fields: context, defense_label, defense, n_images, attacks, best_attack, psnr/ssim/lpips
    (median over images of each image's best), gated, gate ("pass" | "fail" | ""), statistic, values
    (the gated statistic per bounded metric), reasons (each broken threshold), status ("LEAKS",
    "holds", "" where not gated), cells (their keys), wall_time_s (the attacks' time)."""
    from fedleak.reports.matrix_tables import strongest_attack
    if results.empty:
        return []
    violations = check_gate(results, gate) if gate is not None and gate.enabled else []
    gated_cells = set(gated_rows(results, gate)["cell"]) if gate is not None and gate.enabled else set()
    records = []
    for keys, frame in results.groupby([*VERDICT_CONTEXT, "defense_label"], sort=False):
        context = dict(zip(VERDICT_CONTEXT, (str(k) for k in keys[:-1])))
        summary = strongest_attack(frame).iloc[0]
        cells = list(pd.unique(frame["cell"]))
        gated = bool(gated_cells & set(cells))
        broken = [v for v in violations if v.cell in cells]
        values = {}
        if gated:
            for metric, _ in gate.limits():  # the cell statistic, at its most leaked over the setting's cells
                values[metric.name] = float(metric.most_leaked(pd.Series(
                    [_statistic(f[metric.name], gate.statistic, metric) for _, f in frame.groupby("cell")])))
        records.append({
            "context": context, "defense_label": str(keys[-1]), "defense": str(frame["defense"].iloc[0]),
            "n_images": int(frame["image_index"].nunique()),
            "attacks": int(frame[["attack_label", "adaptive"]].drop_duplicates().shape[0]),
            "best_attack": str(summary["strongest"]), **{m.name: float(summary[m.name]) for m in REPORTED},
            "gated": gated, "gate": ("fail" if broken else "pass") if gated else "",
            "statistic": gate.statistic if gated else "", "values": values,
            "reasons": [f"{v.attack}{' (adaptive)' if v.adaptive else ''}: {v.metric} {METRICS[v.metric].format(v.value)} "
                        f"{'>' if METRICS[v.metric].larger_leaks else '<'} {v.limit:g}" for v in broken],
            "status": ("LEAKS" if broken else "holds") if gated else "",
            "cells": [str(c) for c in cells],
            "wall_time_s": float(frame.groupby(["cell", "batch"])["wall_time_s"].first().sum())})
    return records
