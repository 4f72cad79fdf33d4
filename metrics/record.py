"""One record per score a reconstruction gets: its column name, which way leakage grows, the range
its colour scale spans and how it is printed. The gate, the reports and evaluate-defense read
directions and formats from here and nowhere else."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Metric:
    name: str                       # the result column, as metrics.image.score_images names it
    title: str                      # axis and heading text
    larger_leaks: bool              # True: a larger value means the attacker rebuilt more
    scale: tuple[float, float] | None  # colour scale ends (values beyond saturate); None: never coloured
    digits: int                     # decimals in tables; figures use one fewer
    exact: float | None = None      # the value a reconstruction equal to its image gets (PSNR's MSE floor): "exact"

    def most_leaked(self, values):
        """The attacker's best of `values` (a Series, a groupby, or anything with max/min)."""
        return values.max() if self.larger_leaks else values.min()

    def least_leaked(self, values):
        return values.min() if self.larger_leaks else values.max()

    def most_leaked_index(self, values: pd.Series):
        """Index label of the attacker's best value (idxmax or idxmin, per group too)."""
        return values.idxmax() if self.larger_leaks else values.idxmin()

    def leaks_beyond(self, value: float, limit: float) -> bool:
        """Does `value` leak more than `limit` allows?"""
        return value > limit if self.larger_leaks else value < limit

    @property
    def limit_sign(self) -> str:
        """How a gate threshold reads: at most (≤) for a metric that grows with leakage, at least (≥) otherwise."""
        return "≤" if self.larger_leaks else "≥"

    @property
    def gate_key(self) -> str:
        """The gate's threshold key: max_psnr, max_ssim, min_lpips."""
        return f"{'max' if self.larger_leaks else 'min'}_{self.name}"

    def is_exact(self, value) -> bool:
        return self.exact is not None and value is not None and not pd.isna(value) and value >= self.exact - 1e-3

    def format(self, value, compact: bool = False) -> str:
        if value is None or pd.isna(value):
            return "–"
        if self.is_exact(value):
            return "exact"
        return f"{value:.{self.digits - compact}f}"


# identical images: MSE clamped at 1e-10 (metrics.image), 100 dB
PSNR = Metric("psnr", "PSNR (dB)", True, (5.0, 35.0), 2, exact=100.0)
SSIM = Metric("ssim", "SSIM", True, (0.0, 1.0), 3)
LPIPS = Metric("lpips", "LPIPS", False, (0.0, 0.8), 3)
MSE = Metric("mse", "MSE", False, None, 4)

# PSNR above what the label alone gives (harness/matrix/checks.py): per row, the row's PSNR minus the label
# baseline of the label its attack used; "the image leaked", not "the label leaked" (docs/verdict.md)
PSNR_OVER_LABEL = Metric("psnr_over_label", "PSNR above the label baseline (dB)", True, (-5.0, 25.0), 2)

METRICS = {m.name: m for m in (PSNR, SSIM, LPIPS, MSE, PSNR_OVER_LABEL)}
REPORTED = (PSNR, SSIM, LPIPS)     # tables, heat maps and the gate; MSE is in the rows and the run report
GATED = (*REPORTED, PSNR_OVER_LABEL)  # what a gate may bound


def direction_note() -> str:
    """'higher PSNR/SSIM, lower LPIPS' from the records."""
    higher = "/".join(m.name.upper() for m in REPORTED if m.larger_leaks)
    lower = "/".join(m.name.upper() for m in REPORTED if not m.larger_leaks)
    return f"higher {higher}, lower {lower}"


# text reconstructions (metrics/text.py): larger leaks; 1.0 is the private text itself
ROUGE1 = Metric("rouge1", "ROUGE-1", True, (0.0, 1.0), 3, exact=1.0)
ROUGE2 = Metric("rouge2", "ROUGE-2", True, (0.0, 1.0), 3, exact=1.0)
ROUGEL = Metric("rougeL", "ROUGE-L", True, (0.0, 1.0), 3, exact=1.0)
TOKEN_ACCURACY = Metric("token_accuracy", "token accuracy", True, (0.0, 1.0), 3, exact=1.0)
EXACT_SEQUENCE = Metric("exact_sequence", "exact-sequence rate", True, (0.0, 1.0), 3)
TEXT_REPORTED = (ROUGE1, ROUGE2, ROUGEL, TOKEN_ACCURACY, EXACT_SEQUENCE)
METRICS.update({m.name: m for m in TEXT_REPORTED})
