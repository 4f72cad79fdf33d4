"""The CI gate (matrix config `[gate]`): the gated verdicts (harness.verdict.judge: one per context and
defense setting, each image's strongest attack) must meet the thresholds, and must be trustworthy.

A verdict's value for a metric is the gate's `statistic` over its images (`worst`: the most leaked
image, the default, since one rebuilt face is one too many; `median`; `mean`). A metric that grows
with leakage (PSNR, SSIM, PSNR above the label baseline) must stay at or below its maximum, one that
shrinks (LPIPS) at or above its minimum: the direction is the metric's record (fedleak.metrics.record).
The gate also fails closed on a verdict with fewer than `min_images` images, a degenerate observation,
an unconverged one (the budget check), and a randomised defense no EOT attack ran against."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from fedleak.harness.verdict.judge import UNDEFENDED
from fedleak.core.options import OptionError
from fedleak.metrics.record import GATED, Metric
from fedleak.reports.verdicts import Verdict

GATE_STATISTICS = ("worst", "median", "mean")


@dataclass(frozen=True)
class GateConfig:
    """Thresholds on each gated verdict (harness.verdict.judge: one per context and defense setting, each
    image's strongest attack): absolute (`max_psnr`, `max_ssim`, `min_lpips`) or above what the label
    alone gives (`max_psnr_over_label`, dB above the label baseline). A gated verdict also fails on
    fewer than `min_images` images, on a degenerate observation, and when the attack rows within
    `budget_margin` dB of the gated statistic, at `budget_factor`× iterations and restarts, raise it by more
    than `budget_tolerance` dB."""
    max_psnr: float | None = None
    max_ssim: float | None = None
    min_lpips: float | None = None
    max_psnr_over_label: float | None = None
    statistic: str = "worst"            # over a verdict's images: worst (most leaked) | median | mean
    defenses: list[str] = field(default_factory=list)  # names or setting labels gated; empty: all but none
    min_images: int = 8
    budget_factor: int = 2              # the budget check: iterations and restarts × this; 1 turns it off
    budget_tolerance: float = 1.0       # dB the budget check may add before a verdict is unconverged
    # the budget check reruns a row on an image where it is within this many dB of the gated statistic
    # (harness.matrix.budget_check); inf: every row on every image
    budget_margin: float = 6.0

    def __post_init__(self):
        if self.statistic not in GATE_STATISTICS:
            raise OptionError("statistic", f"expected one of {', '.join(GATE_STATISTICS)}, got '{self.statistic}'")
        if self.min_images < 1 or self.budget_factor < 1:
            key = "min_images" if self.min_images < 1 else "budget_factor"
            raise OptionError(key, f"must be >= 1, got {getattr(self, key)}")
        if not (self.budget_tolerance >= 0):
            raise OptionError("budget_tolerance", f"must be finite and >= 0, got {self.budget_tolerance}")
        if not (self.budget_margin >= 0):
            raise OptionError("budget_margin", f"must be >= 0 dB (inf: rerun every row), got {self.budget_margin}")

    def limits(self) -> list[tuple[Metric, float]]:
        """(metric record, threshold) for every threshold set: max_<m> where a larger value leaks
        more, min_<m> where a smaller one does."""
        return [(m, getattr(self, m.gate_key)) for m in GATED if getattr(self, m.gate_key) is not None]

    @property
    def enabled(self) -> bool:
        return bool(self.limits())


# Used when the matrix has no [gate]: the shipped ci matrix's (docs/ci.md): no image rebuilt more than 3 dB above
# what its label alone gives. The worst image, not the median: one person's data rebuilt is the harm, and a
# median over 8 images hides three images sent raw (issue #20).
DEFAULT_GATE = GateConfig(max_psnr_over_label=3.0, statistic="worst")


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
        margin = "every attack row" if gate.budget_margin == float("inf") else \
            f"every attack row within {gate.budget_margin:g} dB of the {gate.statistic} image"
        checks.append(f"converged ({margin} at {gate.budget_factor}× iterations and restarts adds "
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
