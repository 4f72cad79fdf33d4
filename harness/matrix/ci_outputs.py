"""The files a CI system reads after a gated run (`fedleak matrix --gate`, `fedleak evaluate-defense`):

    summary.json   per verdict (context and defense setting) and per cell: leakage figures, the gate's
                   decision and thresholds, provenance; valid against reports/summary.schema.json
    junit.xml      one test case per gated verdict; a leak is a failure with its numbers, a gated cell
                   that did not run an error
    $GITHUB_STEP_SUMMARY   (when set) a Markdown table of the same, appended

The verdicts are harness.verdict.judge's (one per context and defense setting, the record the gate, the
screen and the report share), as harness.verdict.gate.verdict_records lays them out; reports.ci renders them."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from fedleak.core.io import atomic_write, json_bytes
from fedleak.harness.verdict.gate import describe_gate, verdict_records
from fedleak.harness.run.logs import log
from fedleak.harness.run.provenance import fedleak_commit, fedleak_version
from fedleak.harness.matrix.utility_task import UtilityTask
from fedleak.harness.verdict.judge import CONTEXT, gated as is_gated
from fedleak.metrics.record import METRICS
from fedleak.reports.matrix_tables import threat_model_params_text
from fedleak.reports.ci import junit_xml, step_summary, summary_document

SUMMARY, JUNIT = "summary.json", "junit.xml"
PROVENANCE = ("fedleak_version", "fedleak_commit", "command", "device", "gpu", "host_cpu")


def write_ci_outputs(run, name: str, gated: bool = True, user_errors_apply: bool = True) -> dict:
    """summary.json and junit.xml in the run's folder (+ the step summary); returns the summary.
    `user_errors_apply`: False for evaluate-defense, where a cell that is not applicable
    (harness.matrix.results.inapplicable_keys: the attack fails without the defense too) is listed with
    the verdict, not a gated failure. Every other failed task of a gated defense setting is a gated
    error: summary.json's gate fails, junit.xml has an <error> for it, and the exit status is 1."""
    gate = run.matrix.gate if gated and run.matrix.gate.enabled else None
    verdicts = verdict_records(run.verdicts, run.results, gated=gate is not None)
    failed = failed_records(run, gate, user_errors_apply)
    document = summary_document(
        {"name": name, "preset": run.matrix.preset, "output": str(run.output),
         "fedleak": {"version": fedleak_version(), "commit": fedleak_commit()}},
        None if gate is None else gate_record(gate), verdicts, cell_records(run.results, gate), failed)
    atomic_write(run.output / SUMMARY, json_bytes(document))
    atomic_write(run.output / JUNIT, junit_xml(f"fedleak {name}", verdicts, failed,
                                               describe_gate(gate) if gate else "not gated"))
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        report = run.report[1] if run.report else None
        append_step_summary(Path(target), step_summary(f"fedleak {name}", document, report and str(report)))
    return document


def append_step_summary(path: Path, markdown: str) -> None:
    """Appended, as GitHub expects of every step; a summary that cannot be written is a warning, not
    a lost result."""
    try:
        with path.open("a", encoding="utf-8") as sink:
            sink.write(markdown)
    except OSError as e:
        log.warning(f"fedleak: could not append the step summary to {path} ({e.strerror or e}); the run's "
                    f"{SUMMARY} has the same")


def gate_record(gate) -> dict:
    return {"thresholds": {m.gate_key: float(limit) for m, limit in gate.limits()}, "statistic": gate.statistic,
            "defenses": list(gate.defenses), "description": describe_gate(gate)}


def cell_records(results: pd.DataFrame, gate) -> list[dict]:
    if results.empty:
        return []
    results = results.assign(threat_model_params=threat_model_params_text(results))
    records = []
    for key, frame in results.groupby("cell", sort=False):
        first = frame.iloc[0]
        metrics = {m.name: {"median": float(frame[m.name].median()), "most_leaked": float(m.most_leaked(frame[m.name]))}
                   for m in METRICS.values() if m.name in frame}
        records.append({
            "key": str(key), "attack_label": str(first["attack_label"]), "adaptive": bool(first["adaptive"]),
            "defense_label": str(first["defense_label"]), "defense": str(first["defense"]),
            "context": {k: str(first[k]) for k in CONTEXT if k in first}, "seed": int(first["seed"]),
            "n_images": int(frame["image_index"].nunique()), "metrics": metrics,
            # images this cell's attack failed on (no scores; image_error in results.parquet says why)
            "failed_images": int((frame["image_error"].fillna("") != "").sum()) if "image_error" in frame else 0,
            "label_accuracy": float(frame["label_correct"].mean()), "iterations": int(first["iterations"]),
            "restarts": int(first["restarts"]), "wall_time_s": float(frame.groupby("batch")["wall_time_s"].first().sum()),
            "gated": is_gated(str(first["defense"]), str(first["defense_label"]), gate),
            "provenance": {"config_hash": str(first["config_hash"]),
                           **{k: (None if k not in frame or pd.isna(first[k]) else str(first[k])) for k in PROVENANCE},
                           "versions": _versions(first.get("versions"))}})
    return records


def failed_records(run, gate, user_errors_apply: bool = True) -> list[dict]:
    """The tasks whose last attempt failed, each with whether the gate counts it (a task of a gated defense
    setting: an attack cell or a check of it); not-applicable cells are left out where they do not apply."""
    skipped = set() if user_errors_apply else not_applicable_keys(run)
    by_key = {t.key: t for t in run.tasks}
    out = []
    for key, outcome in sorted(run.schedule.failed.items()):
        if key in skipped:
            continue
        task = by_key.get(key)
        labels = getattr(task, "labels", {}) or {}
        config = getattr(task, "config", None)
        defense = getattr(getattr(config, "defense", None), "name", labels.get("defense"))
        gated = ("defense_label" in labels and defense is not None and not isinstance(task, UtilityTask)
                 and is_gated(defense, labels["defense_label"], gate))
        out.append({"key": key, "task": task.describe() if task else key, "error": outcome.error or "",
                    "user_error": bool(outcome.user_error), "gated": gated, "context": None})
    return out


def not_applicable_keys(run) -> set[str]:
    """The failed cells of this run that are not applicable (harness.matrix.results.inapplicable_keys)."""
    from fedleak.harness.matrix.results import inapplicable_keys
    return inapplicable_keys(run.tasks, {k: (bool(o.user_error), bool(o.not_applicable))
                                         for k, o in run.schedule.failed.items()})


def _versions(text) -> dict:
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
