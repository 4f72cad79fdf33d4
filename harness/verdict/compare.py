"""`fedleak compare BEFORE AFTER` (and `fedleak matrix --baseline DIR`): what changed between two
stored runs, cell by cell, and whether any cell now leaks more than a tolerance allows.

Cells are matched on what they ARE (attack, mode, defense setting, context, seed), not on their
keys, so a change of the key's recipe neither hides nor fakes a difference; within a cell only the
images both runs attacked are compared. Per cell and metric: the statistic over those images
(median by default) before and after, and the delta; a delta towards more leakage beyond the
metric's tolerance is a regression. A cell of BEFORE that AFTER lacks is reported too and fails
the comparison (a regression must not hide behind a cell that stopped running)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fedleak.core.errors import ConfigError, DataError
from fedleak.metrics.record import METRICS

IDENTITY = ["dataset", "model", "victim_state", "threat_model", "knowledge_preset", "defense_label", "attack_label",
            "adaptive", "seed"]
# per metric: how far towards more leakage a cell may move before it counts as a regression; MSE
# (no colour scale, not a leakage figure a user reads) is reported only
DEFAULT_TOLERANCE = {"psnr": 0.5, "ssim": 0.02, "lpips": 0.02}
STATISTICS = ("median", "worst", "mean")


@dataclass
class Comparison:
    table: pd.DataFrame                    # one row per cell in both runs: identity, n_images, <m>_before/_after/_delta
    metrics: list[str]                     # compared columns, in METRICS order
    tolerance: dict[str, float]            # the judged ones
    statistic: str
    only_before: pd.DataFrame = field(default_factory=pd.DataFrame)   # identities of cells AFTER lacks
    only_after: pd.DataFrame = field(default_factory=pd.DataFrame)    # new cells

    @property
    def regressions(self) -> pd.DataFrame:
        return self.table[self.table["regressed"]]

    missing: list[str] = field(default_factory=list)  # judged metrics one run lacks: nothing to judge them on

    @property
    def unjudged(self) -> pd.DataFrame:
        """Cells where a judged metric is NaN on either side: unscored is not "no regression"."""
        return self.table[self.table["unjudged_metrics"] != ""]

    @property
    def failed(self) -> bool:
        return bool(len(self.regressions) or len(self.only_before) or len(self.unjudged) or self.missing)


def parse_tolerances(items: list[str]) -> dict[str, float]:
    """["psnr=1.0", ...] over the defaults; a metric set to "none" is reported, not judged."""
    tolerance = dict(DEFAULT_TOLERANCE)
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or name not in METRICS:
            raise ConfigError(f"--tolerance {item!r}: expected METRIC=VALUE with METRIC one of {', '.join(METRICS)}")
        if text.strip().lower() == "none":
            tolerance.pop(name, None)
            continue
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not value >= 0:
            raise ConfigError(f"--tolerance {item!r}: the tolerance must be a number >= 0")
        tolerance[name] = value
    return tolerance


def compare_results(before: pd.DataFrame, after: pd.DataFrame, tolerance: dict[str, float] | None = None,
                    statistic: str = "median") -> Comparison:
    if statistic not in STATISTICS:
        raise ConfigError(f"--statistic: expected one of {', '.join(STATISTICS)}, got {statistic!r}")
    tolerance = dict(DEFAULT_TOLERANCE if tolerance is None else tolerance)
    for name, frame in (("BEFORE", before), ("AFTER", after)):
        missing = [c for c in [*IDENTITY, "image_index"] if c not in frame.columns]
        if missing:
            raise DataError(f"{name}: its results are not a matrix's (no {', '.join(missing)} column)")
    metrics = [m for m in METRICS if m in before.columns and m in after.columns]
    missing = [f"{m} ({'BEFORE' if m not in before.columns else 'AFTER'} has no {m} column)"
               for m in tolerance if m in METRICS and (m not in before.columns or m not in after.columns)]
    for name, frame in (("BEFORE", before), ("AFTER", after)):
        for m in metrics:
            if not pd.api.types.is_numeric_dtype(frame[m]) or pd.api.types.is_bool_dtype(frame[m]):
                raise DataError(f"{name}: its {m} column holds {frame[m].dtype} values, not numbers (edited results?)")
    cells_before = before[IDENTITY].drop_duplicates()
    cells_after = after[IDENTITY].drop_duplicates()
    only_before = _anti_join(cells_before, cells_after)
    only_after = _anti_join(cells_after, cells_before)
    paired = before[[*IDENTITY, "image_index", *metrics]].merge(
        after[[*IDENTITY, "image_index", *metrics]], on=[*IDENTITY, "image_index"], suffixes=("_before", "_after"))
    rows = []
    for identity, frame in paired.groupby(IDENTITY, sort=False, dropna=False):
        row = dict(zip(IDENTITY, identity))
        row["n_images"] = int(frame["image_index"].nunique())
        regressed, unjudged = [], []
        for m in metrics:
            record = METRICS[m]
            a = _statistic(frame[f"{m}_before"], statistic, record)
            b = _statistic(frame[f"{m}_after"], statistic, record)
            delta = b - a
            row[f"{m}_before"], row[f"{m}_after"], row[f"{m}_delta"] = a, b, delta
            toward_leak = delta if record.larger_leaks else -delta
            nan = [side for side in ("before", "after") if frame[f"{m}_{side}"].isna().any()]
            if m in tolerance and nan:  # a statistic would skip them: an unscored image must not pass
                unjudged.append(f"{m} NaN {' and '.join(nan)}")
            elif m in tolerance and toward_leak > tolerance[m]:
                regressed.append(m)
        row["regressed"] = bool(regressed)
        row["regressed_metrics"] = ", ".join(regressed)
        row["unjudged_metrics"] = ", ".join(unjudged)
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*IDENTITY, "n_images", *(f"{m}_{s}" for m in metrics for s in ("before", "after", "delta")),
                                        "regressed", "regressed_metrics", "unjudged_metrics"])
    return Comparison(table, metrics, {m: t for m, t in tolerance.items() if m in metrics}, statistic,
                      only_before, only_after, missing)


def compare_folders(before: str | Path, after: str | Path, tolerance: dict[str, float] | None = None,
                    statistic: str = "median") -> Comparison:
    from fedleak.harness.run.results import read_results
    return compare_results(read_results(_folder(before)), read_results(_folder(after)), tolerance, statistic)


def write_comparison(comparison: Comparison, folder: Path, before: str, after: str) -> tuple[Path, Path, Path]:
    """compare.md, compare.html and compare.csv (the data behind the table) in `folder`."""
    from fedleak.core.io import atomic_write, check_writable
    from fedleak.reports.compare import comparison_document
    from fedleak.reports.document import to_html, to_markdown
    from fedleak.harness.run.folder import VIEW, Owner, claim_folder
    check_writable(folder, "--output")
    claim_folder(folder, Owner("compare", "compare", VIEW))  # a view: rewritten, but never over the user's files
    doc = comparison_document(comparison.table, comparison.metrics, comparison.tolerance, comparison.statistic,
                              comparison.only_before, comparison.only_after, before, after)
    paths = folder / "compare.md", folder / "compare.html", folder / "compare.csv"
    atomic_write(paths[0], to_markdown(doc, folder))
    atomic_write(paths[1], to_html(doc))
    atomic_write(paths[2], comparison.table.to_csv(index=False))
    return paths


def _folder(path) -> Path:
    path = Path(path)
    return path.parent if path.is_file() else path


def _anti_join(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    merged = left.merge(right, on=IDENTITY, how="left", indicator=True)
    return merged[merged["_merge"] == "left_only"][IDENTITY].reset_index(drop=True)


def _statistic(values: pd.Series, statistic: str, record) -> float:
    if statistic == "worst":
        return float(record.most_leaked(values))
    return float(values.median() if statistic == "median" else values.mean())
