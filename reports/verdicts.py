"""The verdict record (one per context and defense setting; computed by harness.verdict.judge from stored
rows) and its views: the table the matrix report, `fedleak matrix` and `evaluate-defense` show.

A view only formats: every number comes from the record, so the screen, the report, the gate and
verdicts.json never disagree."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from fedleak.reports.document import Table


@dataclass(frozen=True)
class Verdict:
    context: dict
    defense_label: str
    defense: str
    n_images: int
    attacks: int                          # attack rows (attack × mode) that ran, identical modes once
    best_attack: str
    psnr: float
    psnr_interval: tuple[float, float]
    ssim: float
    lpips: float
    label_baseline_psnr: float
    psnr_over_label: float
    psnr_over_label_interval: tuple[float, float]
    label_accuracy: float
    adaptive_gain: float | None
    adaptive_gain_interval: tuple[float, float] | None
    identical_modes: tuple[str, ...]
    degenerate: bool | None
    randomised: bool | None
    eot: bool
    converged: bool | None
    budget_rise: float | None             # dB the budget check added to the gated statistic
    budget_attack: str | None
    gated: bool = False
    gate: str = ""                        # "pass" | "fail" | "" (not gated)
    statistic: str = ""
    values: dict = field(default_factory=dict)   # the gated statistic of each bounded metric
    reasons: tuple[str, ...] = ()
    per_image: tuple[dict, ...] = ()      # image_index, psnr, psnr_over_label, label_baseline_psnr, winner
    bytes_sent: float | None = None       # per client update (median over the rows)
    epsilon_round: float | None = None    # DP: ε of the attacked update itself (docs/privacy.md), δ below
    delta: float | None = None
    neighbouring: str | None = None       # DP: what two neighbouring datasets differ by

    status: str = ""                      # one word (STATUSES); "" where not gated and not degenerate
    # the unit of harm is one person's data: the most leaked image (each image's best; LPIPS: the lowest)
    # and how many images were recovered (harness.verdict.judge.recovered), before the median above
    worst_psnr: float = math.nan
    worst_ssim: float = math.nan
    worst_lpips: float = math.nan
    worst_psnr_over_label: float = math.nan
    recovered: int = 0
    share_recovered: float = math.nan
    control_recovered: float | None = None  # positive control: share of these images the undefended run recovers
    budget_attacks: tuple[str, ...] = ()  # the attack rows the budget check ran again
    iteration_free: tuple[str, ...] = ()  # of those, the ones whose rerun repeated their numbers exactly

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TextVerdict:
    """The text verdict (harness.verdict.judge.compute_text_verdicts): the image record's logic over private
    sequences. `worst`: per text metric record, the most exposed sequence's value (each sequence's best
    attack); `recovered` / `share_recovered`: sequences rebuilt (harness.verdict.judge.recovered_sequence)."""
    context: dict                         # threat_model (its label, with options), batch_size
    defense_label: str
    defense: str
    n_sequences: int
    attacks: int
    best_attack: str                      # the attack that won the most exposed sequence
    worst: dict                           # metric name -> the most exposed sequence's value
    median_rougeL: float
    recovered: int
    share_recovered: float
    control_recovered: float | None       # positive control: share of these sequences the undefended run recovers
    errors: int                           # rows an attack failed on, and cells that did not run
    worst_private: str
    worst_reconstructed: str
    wall_time_s: float = 0.0
    per_sequence: tuple[dict, ...] = ()
    gated: bool = False
    gate: str = ""
    statistic: str = ""
    values: dict = field(default_factory=dict)
    reasons: tuple[str, ...] = ()
    status: str = ""                      # STATUSES; "" for the undefended control when not gated

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# From the most to the least alarming: a threshold broken; more budget leaked more; the gate could
# not judge (too few images, a check missing); nothing about the data was sent; the gate passed.
STATUSES = ("LEAKS", "UNCONVERGED", "INCONCLUSIVE", "DEGENERATE", "holds")


VERDICT_NOTE = ("Per image the strongest result of any attack, mode and seed; worst image: the most leaked image's PSNR "
                "(its gain over its label); recovered: images rebuilt (PSNR >= 30 dB and >= 10 dB above the label, or SSIM "
                ">= 0.9: docs/verdict.md); control: of these images, the share the same attacks recover without a defense "
                "(a gated verdict holds only at 100%); PSNR: median over images [95% bootstrap "
                "interval]; over label: each image's PSNR above what its attack's label alone gives (a class-conditional "
                "prior's draw or the class mean), median [interval]; label: the label baseline (median, dB) and how "
                "often the attacks got the label; adaptive gain: paired per image, best of all attacks minus best of "
                "the non-adaptive ones; degenerate: what is sent does not depend on the data; converged: every "
                "attack row at 4× iterations and restarts stays within the tolerance (iteration-free: its rerun repeated its numbers; "
                "– not checked: not gated); ε: DP's ε for "
                "the attacked update itself and over the utility run's training rounds (docs/privacy.md); accuracy ↑: what the "
                "last quarter of the utility rounds still added, where over 2 points (not converged).")


def verdict_table(verdicts: list[Verdict], utility: dict[str, dict] | None = None) -> Table:
    """One row per verdict; `utility`: defense label -> {accuracy, epsilon, ...} where measured."""
    utility = utility or {}
    extra = ["accuracy"] if any("accuracy" in u for u in utility.values()) else []
    private = any(v.epsilon_round is not None for v in verdicts) or \
        any(u.get("epsilon") is not None and not _missing(u.get("epsilon")) for u in utility.values())
    header = ["defense", "worst image", "recovered", "PSNR [95% CI]", "over label [95% CI]", "label baseline",
              "label acc.", "best attack", "adaptive gain", "n", "degenerate", "converged", "control", "gate"] + extra + \
        (["ε round / training (δ)"] if private else []) + ["bytes sent"]
    rows = []
    for v in verdicts:
        u = utility.get(v.defense_label, {})
        rows.append([v.defense_label, _worst(v), _recovered(v), f"{_db(v.psnr)} {_interval(v.psnr_interval)}",
                     f"{_signed(v.psnr_over_label)} {_interval(v.psnr_over_label_interval, signed=True)}",
                     _db(v.label_baseline_psnr), f"{v.label_accuracy:.0%}", v.best_attack,
                     "–" if v.adaptive_gain is None else f"{v.adaptive_gain:+.1f}", str(v.n_images),
                     _yes_no(v.degenerate), _converged(v), _control(v), _gate(v)]
                    + [_accuracy(u) for c in extra] + ([_epsilon(v, u)] if private else [])
                    + [_bytes(v.bytes_sent)])
    return Table(header, rows)


def _accuracy(utility: dict) -> str:
    """Accuracy after the utility rounds, and (↑) what their last quarter still added where that is over
    two points: training had not converged, and more rounds would change the cost."""
    accuracy, rising = utility.get("accuracy"), utility.get("accuracy_last_quarter")
    if _missing(accuracy):
        return "–"
    return f"{accuracy:.3f}" + (f" ↑{rising:.2f}" if not _missing(rising) and rising > 0.02 else "")


def _epsilon(v: Verdict, utility: dict) -> str:
    """ε of the attacked update and over the utility run's training rounds, with δ."""
    training, rounds, delta = utility.get("epsilon"), utility.get("rounds"), v.delta or utility.get("delta")
    if v.epsilon_round is None and _missing(training):
        return "–"
    over = "" if _missing(training) else f" / {_number(training)}" + (f" ({int(rounds)} rounds)" if rounds else "")
    return f"{_number(v.epsilon_round)}{over}" + ("" if _missing(delta) else f" (δ={delta:g})")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def verdict_points(verdicts: list[Verdict]):
    """The verdicts as a frame with the columns matrix_tables.with_utility and the privacy-utility plot
    read (defense_label, defense, psnr, ...)."""
    import pandas as pd
    return pd.DataFrame([{"defense_label": v.defense_label, "defense": v.defense, "psnr": v.psnr,
                          "psnr_low": v.psnr_interval[0], "psnr_high": v.psnr_interval[1], "ssim": v.ssim,
                          "lpips": v.lpips, "psnr_over_label": v.psnr_over_label, "bytes_sent": v.bytes_sent}
                         for v in verdicts])


def identical_pairs(verdicts: list[Verdict]) -> set[tuple[str, str]]:
    """(attack label, defense label) pairs whose adaptive row repeated the non-adaptive one."""
    return {(attack, v.defense_label) for v in verdicts for attack in v.identical_modes}


def _db(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def _signed(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.1f}"


def _interval(interval, signed: bool = False) -> str:
    if not interval or any(v is None or math.isnan(v) for v in interval):
        return ""
    fmt = _signed if signed else _db
    return f"[{fmt(interval[0])}, {fmt(interval[1])}]"


def _yes_no(value) -> str:
    return "?" if value is None else ("YES" if value else "no")


def _converged(v: Verdict) -> str:
    free = f"; {len(v.iteration_free)} iteration-free" if v.iteration_free else ""
    if v.converged is None:
        return "iteration-free" if v.iteration_free else "–"
    return f"{'yes' if v.converged else 'NO'} ({v.budget_rise:+.1f} dB{free})"


def _worst(v: Verdict) -> str:
    """The most leaked image's PSNR and, where measured, its gain over the label."""
    over = "" if _missing(v.worst_psnr_over_label) else f" ({_signed(v.worst_psnr_over_label)})"
    return f"{_db(v.worst_psnr)}{over}"


def _recovered(v: Verdict) -> str:
    return "–" if _missing(v.share_recovered) else f"{v.recovered}/{v.n_images}"


def _control(v: Verdict) -> str:
    """The positive control: of these images, the share the undefended run recovers."""
    return "–" if v.control_recovered is None else f"{v.control_recovered:.0%}"


def _gate(v: Verdict) -> str:
    return {"": "–", "pass": "pass", "fail": "FAIL"}[v.gate]


def _bytes(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{int(value):,}"


def _number(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.3g}"


def headline(v) -> str:
    """The verdict's numbers in the order they matter: the worst image, the share recovered, then the median."""
    over = "" if math.isnan(v.worst_psnr_over_label) else f" ({v.worst_psnr_over_label:+.1f} dB above its label)"
    return (f"worst image {v.worst_psnr:.1f} dB{over}, {v.recovered} of {v.n_images} images recovered, "
            f"median {v.psnr:.1f} dB {_fixed_interval(v.psnr_interval)}")


def _fixed_interval(interval) -> str:
    return f"[{interval[0]:.1f}, {interval[1]:.1f}]"
