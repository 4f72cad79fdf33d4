"""The verdict: what a defense setting buys in one context, with what makes the number trustworthy
(issue #12, items 2-5). ONE record per (context, defense setting), computed here from stored rows
only (results, the budget check's rows, the check records), and handed as it is to every view: the
matrix report, `evaluate-defense`'s screen, the gate, verdicts.json.

Per image, the leakage is the attacker's best: the strongest result any attack, mode and seed got
on that image (AutoAttack's per-sample worst case). A verdict reports, over its images:

* `worst_psnr`, `worst_ssim`, `worst_lpips`, `worst_psnr_over_label`: the most leaked image (the max over
  images of each image's best; LPIPS: the min), and `recovered` / `share_recovered`: how many images the
  attacks rebuilt (`recovered` below, defined once). The unit of harm is one person's data, so these come
  first; the median comes beside them;
* `best_attack`: the attack (and mode) that wins most images;
* `psnr`, `ssim`, `lpips`: the median of each image's best, `psnr_interval` a 95% percentile
  bootstrap interval of that median (`BOOTSTRAP` resamples, fixed seed: the same rows give the
  same interval);
* `label_baseline_psnr`: what the label alone gives (harness/matrix/checks.py, attacks/label_only.py) for the
  label the winning attack used; `psnr_over_label`: each image's best PSNR above the baseline of its
  own attack's label (so "the label leaked" and "the image leaked" are different findings), median
  and interval; `label_accuracy`: how often the attacks got the label;
* `adaptive_gain`: paired per image, the best of every attack row minus the best of the
  non-adaptive ones (what knowing the defense adds), median and interval; None where no adaptive
  row differs from its non-adaptive twin (`identical_modes` lists the attacks whose two modes gave
  the same numbers, reported once);
* `degenerate`: what the client sends does not depend on its data (a data-dependence check);
  `randomised`: what it sends changes with the round seed, `eot`: an attack that averages over the
  defense's randomness ran against it;
* `control_recovered`: the positive control, the share of this verdict's images that the undefended run
  of the same context recovers (None: no undefended run there). A gated verdict "holds" only where it is 1:
  a failure of the attacks says something about the defense only where the same attacks succeed without it;
* `converged`: the budget check (every attack row of the verdict that can change it, on the images where it
  can, again at `budget_factor`× iterations and restarts: harness.matrix.budget_check) raised the gated statistic by
  at most `budget_tolerance` dB; None: not checked, or every rerun attack was `iteration_free` (its rows came
  back identical: more budget cannot change them);
* `gate`: "pass" / "fail" / "" (not gated), the `statistic`, the gated `values` and `reasons`."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from fedleak.metrics.record import LPIPS, PSNR, SSIM
from fedleak.reports.matrix_tables import threat_model_params_text
from fedleak.reports.verdicts import Verdict

# a threat model's options are part of its context: secure aggregation over 1 and over 4 clients
# are two settings with verdicts of their own
UNDEFENDED = "none"  # the positive control every defense is judged against
CONTEXT = ("dataset", "model", "victim_state", "threat_model", "threat_model_params", "knowledge_preset")
CHECK_CONTEXT = ("dataset", "model", "victim_state", "threat_model", "threat_model_params")
BOOTSTRAP = 2000
CONFIDENCE = 0.95
EOT_ATTACKS = ("defense-loop",)  # attacks that average over a randomised defense's draws (EOT)

# "recovered", defined here and nowhere else (docs/verdict.md)
RECOVERED_PSNR = 30.0          # dB
RECOVERED_OVER_LABEL = 10.0    # dB above the label baseline of the image's own label
RECOVERED_SSIM = 0.9
RECOVERED_TEXT = (f"recovered: PSNR >= {RECOVERED_PSNR:g} dB and >= {RECOVERED_OVER_LABEL:g} dB above its label "
                  f"baseline, or SSIM >= {RECOVERED_SSIM:g}")


def recovered(psnr, ssim, psnr_over_label):
    """Whether an image counts as rebuilt, from its best PSNR, SSIM and PSNR above its label baseline
    (scalars or aligned Series): PSNR >= 30 dB and at least 10 dB above what its label alone gives, or
    SSIM >= 0.9.

    Why: 30 dB on images in [0, 1] is an RMS error of 3% of the range, a copy a person cannot tell from
    the original (gradient-inversion papers call 30 dB and up near-exact); the 10 dB above the label
    baseline keeps a class mean or a prior's draw of the right class (8-25 dB on digits, docs/verdict.md)
    from counting, however high it scores on a simple image. SSIM >= 0.9 catches a rebuilt image whose
    PSNR a global shift of brightness or contrast keeps below 30 dB. Where the label baseline was not
    measured (NaN) the PSNR condition alone decides."""
    psnr, ssim, over = (np.asarray(v, dtype=float) for v in (psnr, ssim, psnr_over_label))
    out = ((psnr >= RECOVERED_PSNR) & (np.isnan(over) | (over >= RECOVERED_OVER_LABEL))) | (ssim >= RECOVERED_SSIM)
    return bool(out) if out.ndim == 0 else out


def compute_verdicts(results: pd.DataFrame, checks: list[dict] | None = None, budget: pd.DataFrame | None = None,
                     gate=None, failed: list[dict] | None = None) -> list[Verdict]:
    """One verdict per (context, defense setting) of `results`, in the rows' order. `checks`: the
    data-dependence records; `budget`: the budget check's rows; `gate`: a GateConfig or None;
    `failed`: the failed tasks (harness.matrix.results.failures), whose gaps a gated verdict names."""
    if results.empty:
        return []
    failed = [f for f in failed or () if not f.get("not_applicable")
              and not any(f.get("labels", {}).get(k) for k in ("budget_check", "utility"))]
    checks = checks or []
    budget = budget if budget is not None and not budget.empty else None
    results = results.assign(threat_model_params=threat_model_params_text(results))
    if budget is not None:
        budget = budget.assign(threat_model_params=threat_model_params_text(budget))
    groups = list(results.groupby([*CONTEXT, "defense_label"], sort=False))
    controls = _controls(groups)
    out = []
    for keys, frame in groups:
        context = dict(zip(CONTEXT, keys[:-1]))
        rerun = None
        if budget is not None:
            mask = budget["defense_label"] == keys[-1]
            for column, value in context.items():
                mask &= budget[column].astype(str) == str(value)
            rerun = budget[mask] if mask.any() else None
        missing = [f for f in failed if _belongs(f.get("labels", {}), context, keys[-1])]
        out.append(_verdict(context, keys[-1], frame, _checks_for(checks, context, keys[-1]), rerun, gate,
                            controls.get(tuple(map(str, keys[:-1]))), missing))
    return out


def _belongs(labels: dict, context: dict, defense_label: str) -> bool:
    """A failed task of this defense setting in this context, as far as its labels say (a task that names
    less, a check, counts for every context that agrees with what it names: failing closed)."""
    return labels.get("defense_label") == defense_label and all(
        str(labels[k]) == str(context[k]) for k in ("dataset", "threat_model", "knowledge_preset") if k in labels)


def gaps(frame: pd.DataFrame, failed: list[dict]) -> list[str]:
    """What an evaluator attack did not do against this defense setting: its cells that failed, the images it
    failed on, and the adaptive rows whose replay could not run the defense's own `share` (it raised or sent
    what the attacker cannot use, harness.run.results.replay_path). Each is a reason a verdict cannot hold."""
    out = []
    for f in failed:
        labels = f.get("labels", {})
        what = labels.get("attack_label") or f.get("task", f.get("key", "a task"))
        mode = "" if "adaptive" not in labels else f" ({'adaptive' if labels['adaptive'] else 'non-adaptive'})"
        out.append(f"{what}{mode} did not run: {f.get('error', '')}")
    if "image_error" in frame:
        broken = frame[frame["image_error"].fillna("") != ""]
        for (attack, adaptive), rows in broken.groupby(["attack_label", "adaptive"], sort=False):
            total = frame[(frame["attack_label"] == attack) & (frame["adaptive"] == adaptive)]["image_index"].nunique()
            out.append(f"{attack} ({'adaptive' if adaptive else 'non-adaptive'}) failed on {rows['image_index'].nunique()} "
                       f"of {total} images: {rows['image_error'].iloc[0]}")
    if "defense_replay_note" in frame:
        unrun = frame[frame["defense_replay_note"].fillna("").str.startswith("share failed")]
        for attack, rows in unrun.groupby("attack_label", sort=False):
            out.append(f"{attack} could not run the defense's share ({rows['defense_replay_note'].iloc[0]}); "
                       f"it ran {rows['defense_replay'].iloc[0]} instead")
    return out


def _controls(groups) -> dict[tuple, set[int]]:
    """Per context, the images the undefended run recovers (the positive control's evidence)."""
    out: dict[tuple, set[int]] = {}
    for keys, frame in groups:
        if str(frame["defense"].iloc[0]) != UNDEFENDED:
            continue
        per_image = frame.groupby("image_index")
        hit = recovered(per_image["psnr"].max(), per_image["ssim"].max(), per_image["psnr_over_label"].max())
        out.setdefault(tuple(map(str, keys[:-1])), set()).update(
            int(i) for i, r in zip(per_image["psnr"].max().index, hit) if r)
    return out


def gated(defense: str, defense_label: str, gate) -> bool:
    """Whether the gate judges this defense setting (its `defenses`, else every one but none)."""
    if gate is None or not gate.enabled:
        return False
    if gate.defenses:
        return defense in gate.defenses or defense_label in gate.defenses
    return defense != UNDEFENDED


def strongest_rows(frame: pd.DataFrame) -> tuple[str, bool]:
    """(attack_label, adaptive) of the row that wins most images (ties: the higher median PSNR)."""
    frame = _distinct(frame)[0]
    best = frame.loc[frame.groupby("image_index")["psnr"].idxmax()]
    counts = best.groupby(["attack_label", "adaptive"], sort=False).size()
    medians = frame.groupby(["attack_label", "adaptive"], sort=False)["psnr"].median()
    ranked = sorted(counts.index, key=lambda k: (-counts[k], -medians[k], str(k)))
    attack, adaptive = ranked[0]
    return attack, bool(adaptive)


def bootstrap_interval(values, confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median (Efron & Tibshirani 1993, §13.3): resample the
    images with replacement, take each resample's median, read the central `confidence` of them."""
    values = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], float)
    if len(values) == 0:
        return (math.nan, math.nan)
    if len(values) == 1:
        return (float(values[0]), float(values[0]))
    rng = np.random.default_rng(seed)
    medians = np.median(values[rng.integers(0, len(values), size=(resamples, len(values)))], axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return (float(low), float(high))


def statistic(values, name: str, metric=PSNR) -> float:
    """`worst` (the most leaked, per the metric's record), `median` or `mean` of `values`."""
    values = pd.Series(values, dtype=float)
    if name == "worst":
        return float(metric.most_leaked(values))
    return float(values.median() if name == "median" else values.mean())


# ------------------------------------------------------------------ one verdict

def _verdict(context: dict, defense_label: str, frame: pd.DataFrame, checks: list[dict],
             rerun: pd.DataFrame | None, gate, control: set[int] | None = None, failed: list[dict] = ()) -> Verdict:
    missing = gaps(frame, list(failed))
    if "image_error" in frame:  # a failed image has no scores: the verdict is over what was scored
        frame = frame[frame["image_error"].fillna("") == ""]
    every_row = frame  # the budget check compares reruns with all rows, identical modes included
    frame, identical = _distinct(frame)
    frame = frame.assign(row=_row_name(frame, identical))
    per_image = _per_image(frame)
    attack, adaptive = strongest_rows(frame)
    best_attack = attack if attack in identical or _passthrough_frame(frame) else \
        f"{attack} ({'adaptive' if adaptive else 'non-adaptive'})"
    gain, gain_interval = _adaptive_gain(frame)
    defense = str(frame["defense"].iloc[0])
    is_gated = gated(defense, defense_label, gate)
    degenerate = _combine([c.get("degenerate") for c in checks])
    randomised = _combine([c.get("randomised") for c in checks], any_true=True)
    # EOT only where the defense's own share ran in the loop, not the author's simulate or nothing
    in_loop = frame["defense_replay"] == "share" if "defense_replay" in frame else pd.Series(False, index=frame.index)
    eot = bool((frame["adaptive"] & in_loop & frame["attack"].isin(EOT_ATTACKS)).any()) if "attack" in frame else False
    budget = _budget_check(every_row, per_image, rerun, gate) if rerun is not None and gate is not None else {}
    images = per_image["image_index"].astype(int)
    verdict = Verdict(
        context=context, defense_label=defense_label, defense=defense, n_images=len(per_image),
        attacks=int(frame[["attack_label", "adaptive"]].drop_duplicates().shape[0]), best_attack=best_attack,
        psnr=float(per_image["psnr"].median()), psnr_interval=bootstrap_interval(per_image["psnr"]),
        ssim=float(per_image["ssim"].median()), lpips=float(per_image["lpips"].median()),
        label_baseline_psnr=float(per_image["label_baseline_psnr"].median()),
        psnr_over_label=float(per_image["psnr_over_label"].median()),
        psnr_over_label_interval=bootstrap_interval(per_image["psnr_over_label"]),
        label_accuracy=float(frame["label_correct"].mean()), adaptive_gain=gain, adaptive_gain_interval=gain_interval,
        identical_modes=tuple(sorted(identical)), degenerate=degenerate, randomised=randomised, eot=eot,
        converged=budget.get("converged"), budget_rise=budget.get("rise"), budget_attack=budget.get("attack"),
        per_image=tuple(per_image.to_dict("records")), status="DEGENERATE" if degenerate and not per_image["recovered"].any() else "",
        bytes_sent=_bytes(frame), **_privacy(frame),
        worst_psnr=float(PSNR.most_leaked(per_image["psnr"])), worst_ssim=float(SSIM.most_leaked(per_image["ssim"])),
        worst_lpips=float(LPIPS.most_leaked(per_image["lpips"])),
        worst_psnr_over_label=float(per_image["psnr_over_label"].max()),
        recovered=int(per_image["recovered"].sum()), share_recovered=float(per_image["recovered"].mean()),
        control_recovered=None if control is None else float(images.isin(control).mean()),
        budget_attacks=budget.get("attacks", ()), iteration_free=budget.get("iteration_free", ()))
    return _judge(verdict, per_image, gate, missing) if is_gated else verdict


def _judge(verdict: Verdict, per_image: pd.DataFrame, gate, missing: list[str] = ()) -> Verdict:
    """Thresholds on the gated statistic, and the checks that make a pass trustworthy; any reason fails.
    Status: LEAKS where a threshold is broken (whatever the data-dependence check says: a measured leak
    outranks a check that found no dependence), else UNCONVERGED, DEGENERATE, INCONCLUSIVE or holds.
    The positive control: "holds" needs the undefended run of the same context to recover every one of
    the verdict's images (`recovered`) with the same attacks; otherwise the attacks' failure under the
    defense cannot be told from their failure here at all, and the verdict is INCONCLUSIVE."""
    values, broken, reasons = {}, [], []
    for metric, limit in gate.limits():
        value = statistic(per_image[metric.name], gate.statistic, metric)
        values[metric.name] = value
        if math.isnan(value):
            reasons.append(f"{metric.name} not measured (its check did not run)")
        elif metric.leaks_beyond(value, limit):
            broken.append(f"{metric.name} {value:.2f} {'>' if metric.larger_leaks else '<'} {limit:g}")
    # an image the attacks rebuilt is evidence that the data got through, whatever the check found
    degenerate = bool(verdict.degenerate) and not verdict.recovered
    if degenerate and not broken:
        reasons.append("degenerate: what the client sends does not depend on its data, so the attacks measured nothing")
    if verdict.n_images < gate.min_images:
        reasons.append(f"{verdict.n_images} images, fewer than the {gate.min_images} a gated verdict needs")
    reasons += control_reasons(verdict.control_recovered, verdict.n_images, "images", RECOVERED_TEXT)
    if gate.budget_factor > 1 and not broken:  # the budget check can only make a leak leak more
        if verdict.converged is None:
            if not verdict.iteration_free:  # else: every rerun row repeated itself, the budget cannot reach it
                reasons.append("the budget check did not run")
        elif not verdict.converged:
            reasons.append(f"unconverged: {verdict.budget_attack} at {gate.budget_factor}× iterations and restarts "
                           f"adds {verdict.budget_rise:+.2f} dB (> {gate.budget_tolerance:g})")
    if verdict.randomised and not verdict.eot:
        reasons.append(f"randomised, and no attack averaged over its randomness with the defense's own share in the "
                       f"loop (EOT: {', '.join(EOT_ATTACKS)})")
    reasons += missing
    status = status_of(broken, reasons, verdict.converged, degenerate)
    return dataclasses.replace(verdict, gated=True, gate="fail" if broken or reasons else "pass",
                               statistic=gate.statistic, values=values, reasons=tuple(broken + reasons), status=status)


def control_reasons(control_recovered: float | None, n: int, units: str, recovered_text: str) -> list[str]:
    """The positive control's reason a gated verdict cannot hold (images and text alike): no undefended run
    in the context, or one that does not recover every one of the verdict's `n` units (images, sequences)."""
    if control_recovered is None:
        return ["no undefended run in this context (positive control): the attacks' failure cannot be told "
                "from protection"]
    if control_recovered < 1:
        missed = round((1 - control_recovered) * n)
        return [f"the attacks do not succeed here without a defense: undefended, {missed} of these "
                f"{n} {units} are not recovered ({recovered_text})"]
    return []


def status_of(broken: list[str], reasons: list[str], converged: bool | None = None, degenerate: bool = False) -> str:
    """LEAKS where a threshold is broken (a measured leak outranks every check), else UNCONVERGED, DEGENERATE,
    INCONCLUSIVE (any other reason: the control, a gap, too few units) or holds."""
    return "LEAKS" if broken else "UNCONVERGED" if converged is False else \
        "DEGENERATE" if degenerate else "INCONCLUSIVE" if reasons else "holds"


def _budget_check(frame: pd.DataFrame, per_image: pd.DataFrame, rerun: pd.DataFrame, gate) -> dict:
    """What `budget_factor`× iterations and restarts of the rerun attack rows do to the gated statistic:
    `rise` (every rerun row merged with the verdict's per-image best), `attack` (the row whose rerun alone
    raises it most), `iteration_free` (rows whose rerun repeated their numbers exactly on every image and
    seed: the budget does not reach them, e.g. an analytic read-out), `converged` (None where every rerun
    row is iteration-free: there was nothing to converge)."""
    metric = budget_metric(gate)
    merged = per_image.set_index("image_index")[metric]
    now = statistic(merged, gate.statistic)

    def rise_with(rows: pd.DataFrame) -> float:
        again = rows.groupby("image_index")[metric].max()
        return statistic(pd.concat([merged, again.reindex(merged.index)], axis=1).max(axis=1), gate.statistic) - now

    keys = ["image_index", "seed"]
    rises, free = {}, []
    for (attack, adaptive), rows in rerun.groupby(["attack_label", "adaptive"], sort=False):
        name = f"{attack} (adaptive)" if adaptive else str(attack)
        before = frame[(frame["attack_label"] == attack) & (frame["adaptive"] == adaptive)]
        old = before.set_index(keys)[["psnr", "mse"]].sort_index()
        new = rows.set_index(keys)[["psnr", "mse"]].sort_index()
        # a rerun covers only the images where the row could change the verdict (harness.matrix.budget_check)
        if len(before) and new.index.isin(old.index).all() and old.loc[new.index].equals(new):
            free.append(name)
        rises[name] = rise_with(rows)
    rise = rise_with(rerun)
    iterative = [k for k in rises if k not in free]
    return {"rise": float(rise), "converged": bool(rise <= gate.budget_tolerance) if iterative else None,
            "attack": max(rises, key=lambda k: (rises[k], k in iterative)) if rises else None,
            "attacks": tuple(rises), "iteration_free": tuple(free)}


def _privacy(frame: pd.DataFrame) -> dict:
    """The attacked update's DP accounting, where rows carry it (harness.run.runner.round_privacy)."""
    if "epsilon_round" not in frame or frame["epsilon_round"].isna().all():
        return {}
    row = frame.dropna(subset=["epsilon_round"]).iloc[0]
    return {"epsilon_round": float(row["epsilon_round"]), "delta": float(row["delta"]),
            "neighbouring": str(row["neighbouring"])}


def _bytes(frame: pd.DataFrame) -> float | None:
    values = pd.to_numeric(frame.get("bytes_sent"), errors="coerce").dropna() if "bytes_sent" in frame else []
    return float(values.median()) if len(values) else None


def budget_metric(gate) -> str:
    return "psnr_over_label" if gate.max_psnr_over_label is not None else "psnr"


def _per_image(frame: pd.DataFrame) -> pd.DataFrame:
    """Per image: each metric's best over the rows, the best PSNR above its own label's baseline, the
    baseline and the row of the best PSNR."""
    groups = frame.groupby("image_index", sort=True)
    winners = frame.loc[PSNR.most_leaked_index(groups["psnr"])].set_index("image_index")
    out = pd.DataFrame({**{m.name: m.most_leaked(groups[m.name]) for m in (PSNR, SSIM, LPIPS)},
                        "psnr_over_label": groups["psnr_over_label"].max(),
                        "label_baseline_psnr": winners["label_baseline_psnr"], "winner": winners["row"]})
    out["recovered"] = recovered(out["psnr"], out["ssim"], out["psnr_over_label"])
    return out.reset_index()


def _distinct(frame: pd.DataFrame) -> tuple[pd.DataFrame, set[str]]:
    """The rows with every adaptive row that repeats its non-adaptive twin (same numbers on every
    image and seed) dropped, and the attacks whose modes coincided."""
    identical = set()
    drop = pd.Series(False, index=frame.index)
    keys = ["image_index", "seed"]
    for attack, rows in frame.groupby("attack_label", sort=False):
        if rows["adaptive"].nunique() < 2:
            continue
        plain = rows[~rows["adaptive"]].set_index(keys)[["psnr", "mse"]].sort_index()
        known = rows[rows["adaptive"]].set_index(keys)[["psnr", "mse"]].sort_index()
        if plain.index.equals(known.index) and plain.equals(known):
            identical.add(attack)
            drop |= (frame["attack_label"] == attack) & frame["adaptive"]
    return frame[~drop], identical


def _row_name(frame: pd.DataFrame, identical: set[str]) -> pd.Series:
    mode = frame["adaptive"].map({True: " (adaptive)", False: ""})
    return frame["attack_label"] + mode.where(~frame["attack_label"].isin(identical), "")


def _passthrough_frame(frame: pd.DataFrame) -> bool:
    return not frame["adaptive"].any()


def _adaptive_gain(frame: pd.DataFrame) -> tuple[float | None, tuple[float, float] | None]:
    """Paired per image: best over every row minus best over the non-adaptive rows."""
    if not frame["adaptive"].any() or frame["adaptive"].all():
        return None, None
    everything = frame.groupby("image_index")["psnr"].max()
    plain = frame[~frame["adaptive"]].groupby("image_index")["psnr"].max()
    paired = (everything - plain).dropna()
    if paired.empty:
        return None, None
    return float(paired.median()), bootstrap_interval(paired)


def _checks_for(checks: list[dict], context: dict, defense_label: str) -> list[dict]:
    """The data-dependence records of this defense setting in this context (the context the check's
    victim named, as the result rows do)."""
    def same(check: dict) -> bool:
        where = check.get("context", check["labels"])  # a record from before options were recorded lacks them
        return all(str(where[k]) == str(context[k]) for k in CHECK_CONTEXT if k in where)
    return [c for c in checks if c.get("labels", {}).get("defense_label") == defense_label and same(c)]


def _combine(values: list, any_true: bool = False) -> bool | None:
    """Over seeds: True when every check says so (degenerate) or any does (randomised)."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    if any_true:
        return any(known)
    return True if all(known) and len(known) == len(values) else (False if not all(known) else None)


def verdict_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    """The verdicts as a flat table (context columns, intervals as lo/hi columns, no per-image rows)."""
    rows = []
    for v in verdicts:
        row = {**v.context, **{k: val for k, val in v.to_dict().items() if k not in ("context", "per_image", "values")}}
        for name in ("psnr_interval", "psnr_over_label_interval", "adaptive_gain_interval"):
            interval = row.pop(name)
            row[f"{name}_low"], row[f"{name}_high"] = interval if interval else (None, None)
        row["reasons"] = "; ".join(row["reasons"])
        for name in ("identical_modes", "budget_attacks", "iteration_free"):
            row[name] = ", ".join(row[name])
        row.update({f"gate_{k}": val for k, val in v.values.items()})
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ text (issue 23)
# The same verdict over text rows (harness.text.run: one row per private sequence and attack). The unit of
# harm is one private sequence (batch, sequence: the same private sentences under every defense of a
# context, each batch drawn with the run's seed); per sequence the attacker's best over attacks of each
# metric record (metrics.record.TEXT_REPORTED, direction from the record); a verdict's figures are the most
# exposed sequence's, then the share recovered, then the median.

RECOVERED_ROUGE_L = 0.9
RECOVERED_SEQUENCE_TEXT = f"recovered: rebuilt token for token, or ROUGE-L >= {RECOVERED_ROUGE_L:g}"
TEXT_CONTEXT = ("threat_model_label", "batch_size")
TEXT_UNIT = ("batch", "sequence")


def recovered_sequence(exact, rougeL):
    """Whether a private sequence counts as rebuilt: token for token, or ROUGE-L >= 0.9.

    Why: ROUGE-L 0.9 between two sentences of ten-odd words (16 BPE tokens) leaves at most about one word
    wrong, missing or out of order: the sentence reads as the person's. ROUGE's tokenizer keeps
    alphanumeric words only, so a sequence of symbols and code ("(x, y)") can score 0 or 1 by accident;
    the exact match counts it on tokens."""
    exact, rougeL = (np.nan_to_num(np.asarray(v, dtype=float), nan=0.0) for v in (exact, rougeL))
    out = (exact >= 1.0) | (rougeL >= RECOVERED_ROUGE_L)
    return bool(out) if out.ndim == 0 else out


def compute_text_verdicts(rows, limits, statistic_name: str = "worst", gated_defenses=None,
                          failed: list[dict] | None = None, min_sequences: int = 1) -> list:
    """One reports.verdicts.TextVerdict per (threat model, B, defense setting) of `rows` (a DataFrame or
    list of dicts), in the rows' order. `limits`: (metric record, threshold) pairs that judge it;
    `gated_defenses`: the defense names or labels gated (None: every one but none); `failed`: cells that
    did not run, {labels: {threat_model_label, batch_size, defense_label, attack_label}, error}. A
    sequence an attack errored on is scored by the attacks that did not; the errors are reasons (gaps)."""
    from fedleak.metrics.record import METRICS, TEXT_REPORTED
    from fedleak.reports.verdicts import TextVerdict
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    failed = list(failed or ())
    if frame.empty:
        return []
    frame = frame.assign(error=frame["error"].where(frame["error"].notna(), "") if "error" in frame else "")
    groups = list(frame.groupby([*TEXT_CONTEXT, "defense_label"], sort=False))
    controls: dict[tuple, set] = {}
    for keys, group in groups:
        if str(group["defense"].iloc[0]) == "none":
            best = _per_sequence(group)
            controls[tuple(map(str, keys[:-1]))] = set(best.index[best["recovered"]])
    out = []
    for keys, group in groups:
        context = dict(zip(("threat_model", "batch_size"), (str(keys[0]), int(keys[1]))))
        defense = str(group["defense"].iloc[0])
        scored = group[group["error"] == ""]
        missing = _text_gaps(group, [f for f in failed if _text_belongs(f.get("labels", {}), keys)])
        per_sequence = _per_sequence(scored) if not scored.empty else None
        control = controls.get(tuple(map(str, keys[:-1])))
        units = sorted({tuple(u) for u in group[list(TEXT_UNIT)].itertuples(index=False)})
        n = len(units)
        worst = {m.name: (float(m.most_leaked(per_sequence[m.name])) if per_sequence is not None else math.nan)
                 for m in TEXT_REPORTED}
        if per_sequence is not None:
            at = METRICS["rougeL"].most_leaked_index(per_sequence["rougeL"])
            winner = per_sequence.loc[at]
            private, rebuilt, best_attack = str(winner["private_text"]), str(winner["reconstructed_text"]), str(winner["winner"])
            recovered_n = int(per_sequence["recovered"].sum())
            median = float(per_sequence["rougeL"].median())
        else:
            private = str(group["private_text"].iloc[0]) if "private_text" in group else ""
            rebuilt, best_attack, recovered_n, median = "", "–", 0, math.nan
        is_gated = gated_defenses is None and defense != "none" or \
            gated_defenses is not None and (defense in gated_defenses or keys[-1] in gated_defenses)
        verdict = TextVerdict(
            context=context, defense_label=str(keys[-1]), defense=defense, n_sequences=n,
            attacks=int(group["attack_label"].nunique()), best_attack=best_attack,
            worst=worst, median_rougeL=median, recovered=recovered_n, share_recovered=recovered_n / n if n else math.nan,
            control_recovered=None if control is None else sum(u in control for u in units) / n,
            errors=int((group["error"] != "").sum()) + len([f for f in failed if _text_belongs(f.get("labels", {}), keys)]),
            worst_private=private, worst_reconstructed=rebuilt,
            wall_time_s=float(group.groupby(["attack_label", "batch"])["wall_time_s"].first().sum()) if "wall_time_s" in group else 0.0,
            per_sequence=() if per_sequence is None else tuple(per_sequence.reset_index().to_dict("records")))
        out.append(_judge_text(verdict, per_sequence, limits, statistic_name, missing, min_sequences, is_gated))
    # a context whose every cell failed has no rows: its failures still need a verdict-less record (the gate's errors)
    return out


def _per_sequence(frame: pd.DataFrame) -> pd.DataFrame:
    """Per private sequence: each text metric's best over the attacks, the winning attack (by ROUGE-L), its texts."""
    from fedleak.metrics.record import METRICS, TEXT_REPORTED
    groups = frame.groupby(list(TEXT_UNIT), sort=True)
    rougeL = METRICS["rougeL"]
    filled = frame.assign(rougeL=frame["rougeL"].fillna(-1.0))
    winners = filled.loc[rougeL.most_leaked_index(filled.groupby(list(TEXT_UNIT), sort=True)["rougeL"])].set_index(list(TEXT_UNIT))
    out = pd.DataFrame({m.name: m.most_leaked(groups[m.name]) for m in TEXT_REPORTED})
    out["winner"] = winners["attack_label"]
    out["private_text"] = winners["private_text"]
    out["reconstructed_text"] = winners["reconstructed_text"]
    out["recovered"] = recovered_sequence(out["exact_sequence"], out["rougeL"])
    return out


def _text_belongs(labels: dict, keys) -> bool:
    return (str(labels.get("threat_model_label")) == str(keys[0]) and str(labels.get("batch_size")) == str(keys[1])
            and labels.get("defense_label") == keys[-1])


def _text_gaps(group: pd.DataFrame, failed: list[dict]) -> list[str]:
    """As `gaps` for images: cells that did not run, and the sequences an attack failed on."""
    out = [f"{f.get('labels', {}).get('attack_label', 'a cell')} did not run: {f.get('error', '')}" for f in failed]
    broken = group[group["error"] != ""]
    for attack, rows in broken.groupby("attack_label", sort=False):
        total = len(group[group["attack_label"] == attack])
        out.append(f"{attack} failed on {len(rows)} of {total} sequences: {rows['error'].iloc[0]}")
    return out


def _judge_text(verdict, per_sequence, limits, statistic_name: str, missing: list[str], min_sequences: int, is_gated: bool):
    """`_judge` for text: thresholds on the statistic over sequences, the positive control, the gaps."""
    values, broken, reasons = {}, [], []
    for metric, limit in limits:
        value = statistic(per_sequence[metric.name], statistic_name, metric) if per_sequence is not None else math.nan
        values[metric.name] = value
        if math.isnan(value):
            reasons.append(f"{metric.name} not measured (every attack failed)")
        elif metric.leaks_beyond(value, limit) or value == limit:
            # a bound on ROUGE-L is reached by the exact copy itself (1.0): at the limit counts as leaking
            broken.append(f"{metric.name} {value:.3f} {'>=' if metric.larger_leaks else '<='} {limit:g}")
    if verdict.n_sequences < min_sequences:
        reasons.append(f"{verdict.n_sequences} sequences, fewer than the {min_sequences} a gated verdict needs")
    reasons += control_reasons(verdict.control_recovered, verdict.n_sequences, "sequences", RECOVERED_SEQUENCE_TEXT)
    reasons += missing
    return dataclasses.replace(verdict, gated=is_gated, gate=("fail" if broken or reasons else "pass") if is_gated else "",
                               statistic=statistic_name, values=values, reasons=tuple(broken + reasons),
                               status=status_of(broken, reasons) if verdict.defense != "none" or is_gated else "")
