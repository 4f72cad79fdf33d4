"""The CI gate (matrix config `[gate]`): the gated verdicts (harness.verdict.judge: one per context and
defense setting, each image's strongest attack) must meet the thresholds, and must be trustworthy.

A verdict's value for a metric is the gate's `statistic` over its images (`worst`: the most leaked
image, the default, since one rebuilt face is one too many; `median`; `mean`). A metric that grows
with leakage (PSNR, SSIM, PSNR above the label baseline) must stay at or below its maximum, one that
shrinks (LPIPS) at or above its minimum: the direction is the metric's record (fedleak.metrics.record).
The gate also fails closed on a verdict with fewer than `min_images` images, a degenerate observation,
an unconverged one (the budget check), and a randomised defense no EOT attack ran against."""
from __future__ import annotations

import pandas as pd

from fedleak.harness.matrix.cells import UNDEFENDED
from fedleak.harness.matrix.config import GateConfig
from fedleak.reports.verdicts import Verdict


def gate_failures(verdicts: list[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.gate == "fail"]


def failures_table(failures: list[Verdict], gate: GateConfig):
    from fedleak.reports.ci import context_name
    from fedleak.reports.document import Table
    return Table(["defense", "context", "best attack", "n", gate.statistic, "why"],
                 [[v.defense_label, context_name(v.context), v.best_attack, str(v.n_images),
                   ", ".join(f"{m} {value:.2f}" for m, value in v.values.items()), "; ".join(v.reasons)]
                  for v in failures])


def describe_gate(gate: GateConfig) -> str:
    parts = [f"{m.name} {m.limit_sign} {limit:g}" for m, limit in gate.limits()]
    scope = ", ".join(gate.defenses) if gate.defenses else f"every defense but {UNDEFENDED}"
    checks = [f"≥ {gate.min_images} images"]
    if gate.budget_factor > 1:
        checks.append(f"converged (every attack row at {gate.budget_factor}× iterations and restarts adds "
                      f"≤ {gate.budget_tolerance:g} dB)")
    checks.append("not degenerate")
    return (f"{' and '.join(parts)} ({gate.statistic} image of each verdict, per image the strongest attack; "
            f"{scope}); {', '.join(checks)}")


def verdict_records(verdicts: list[Verdict], results: pd.DataFrame, gated: bool = True) -> list[dict]:
    """What summary.json, junit.xml and the step summary carry of each verdict: its fields (not the
    per-image rows, which results.parquet holds), the keys of its cells and the attacks' time.
    `gated=False` (a run without --gate) keeps the figures and drops the gate's decision."""
    from fedleak.harness.verdict.judge import CONTEXT
    from fedleak.reports.matrix_tables import threat_model_params_text
    rows = results.assign(threat_model_params=threat_model_params_text(results)) if not results.empty else results
    frames = {} if rows.empty else {tuple(str(k) for k in key): frame for key, frame
                                    in rows.groupby([*CONTEXT, "defense_label"], sort=False, dropna=False)}
    records = []
    for v in verdicts:
        record = {k: val for k, val in v.to_dict().items() if k != "per_image"}
        record["context"] = {k: str(val) for k, val in v.context.items()}
        frame = frames.get((*(record["context"][k] for k in CONTEXT), v.defense_label))
        record["cells"] = [] if frame is None else [str(c) for c in pd.unique(frame["cell"])]
        record["wall_time_s"] = 0.0 if frame is None else float(frame.groupby(["cell", "batch"])["wall_time_s"].first().sum())
        if not gated:
            record.update(gated=False, gate="", statistic="", values={}, reasons=[],
                          status="DEGENERATE" if v.degenerate else "")
        records.append(record)
    return records
