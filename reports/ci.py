"""What a CI system reads of a gated run: summary.json (validated by the JSON Schema shipped beside
this module, summary.schema.json; docs/ci.md), junit.xml (one test case per gated verdict, a failure
carrying its numbers) and a Markdown step summary (GitHub's $GITHUB_STEP_SUMMARY).

A pure view: the verdict records, cell records and provenance are computed by the harness
(harness.matrix.ci_outputs) and passed in; the same inputs give the same bytes (no timestamps)."""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from fedleak.reports.matrix_tables import options_text

SCHEMA_PATH = Path(__file__).with_name("summary.schema.json")
SCHEMA_VERSION = 1


def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def summary_document(run: dict, gate: dict | None, verdicts: list[dict], cells: list[dict],
                     failed: list[dict]) -> dict:
    """`run`: name, preset, output, fedleak {version, commit}; `gate`: thresholds, statistic,
    defenses, description (None: not gated); `verdicts`: harness.verdict.gate.verdict_records; `cells`: per
    cell figures and provenance; `failed`: tasks whose last attempt failed (failures.json)."""
    gated = [v for v in verdicts if v.get("gated")]
    failures = [v for v in gated if v.get("gate") == "fail"]
    errors = [f for f in failed if f.get("gated")]
    outcome = None
    if gate is not None:
        # a gate that judged nothing (every gated cell failed) has not passed: it fails closed
        passed = not failures and not errors and bool(gated)
        outcome = {**gate, "passed": passed, "gated_verdicts": len(gated),
                   "failed_verdicts": len(failures), "errors": len(errors)}
    return _finite({"schema_version": SCHEMA_VERSION, "run": run, "gate": outcome, "verdicts": verdicts,
                    "cells": cells, "failed": failed})


def junit_xml(suite: str, verdicts: list[dict], failed: list[dict], gate_description: str) -> bytes:
    """One <testcase> per gated verdict (classname: its context, name: its defense setting); a broken
    threshold is a <failure> whose message has the numbers; a gated cell that did not run is an
    <error> (the gate fails closed)."""
    gated = [v for v in verdicts if v.get("gated")]
    errors = [f for f in failed if f.get("gated")]
    suites = ET.Element("testsuites", name="fedleak")
    element = ET.SubElement(suites, "testsuite", name=suite, tests=str(len(gated) + len(errors)),
                            failures=str(sum(v["gate"] == "fail" for v in gated)), errors=str(len(errors)),
                            skipped="0", time=_seconds(sum(v.get("wall_time_s") or 0 for v in gated)))
    properties = ET.SubElement(element, "properties")
    ET.SubElement(properties, "property", name="gate", value=gate_description)
    for v in gated:
        case = ET.SubElement(element, "testcase", classname=context_name(v["context"]), name=v["defense_label"],
                             time=_seconds(v.get("wall_time_s") or 0))
        numbers = _numbers(v)
        if v["gate"] == "fail":
            failure = ET.SubElement(case, "failure", message=f"{v['status']}: {'; '.join(v['reasons'])}",
                                    type=v["status"] or "LEAKS")
            failure.text = numbers
        else:
            ET.SubElement(case, "system-out").text = numbers
    for f in errors:
        case = ET.SubElement(element, "testcase", classname=context_name(f.get("context") or {}), name=f["task"])
        ET.SubElement(case, "error", message=f["error"], type="did not run").text = f"task {f['key']}: {f['error']}"
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


def step_summary(title: str, document: dict, report: str | None = None) -> str:
    """Markdown for a CI job page: the gate's outcome, then one line per gated verdict."""
    gate = document["gate"]
    lines = [f"## {title}", ""]
    if gate is not None:
        word = "passed" if gate["passed"] else "FAILED"
        lines += [f"**Gate {word}**: {gate['failed_verdicts']} of {gate['gated_verdicts']} gated verdicts leak"
                  + (f", {gate['errors']} gated cells did not run" if gate["errors"] else "")
                  + f". Thresholds: {gate['description']}.", ""]
    rows = [v for v in document["verdicts"] if v.get("gated")] or document["verdicts"]
    lines += ["| context | defense | status | best attack | n | PSNR (median) | gated values | why |",
              "|---|---|---|---|---|---|---|---|"]
    for v in rows:
        values = ", ".join(f"{k} {_fmt(x)}" for k, x in v.get("values", {}).items()) or "–"
        lines.append(f"| {context_name(v['context'])} | {_cell(v['defense_label'])} | {v['status'] or '–'} | "
                     f"{_cell(v['best_attack'])} | {v['n_images']} | {_fmt(v['psnr'])} | {values} | "
                     f"{_cell('; '.join(v['reasons'])) or '–'} |")
    for f in document["failed"]:
        if f.get("gated"):
            lines.append(f"| {context_name(f.get('context') or {})} | {_cell(f['task'])} | DID NOT RUN | | | | | "
                         f"{_cell(f['error'])} |")
    if report:
        lines += ["", f"Report: `{report}` (upload it as an artifact to read it here)."]
    return "\n".join(lines) + "\n\n"


def context_name(context: dict) -> str:
    """dataset/model/state/threat model/knowledge; a threat model's options, where it has any, beside
    its name (secagg(clients=4))."""
    parts = []
    for key, value in context.items():
        if key == "threat_model_params":
            if value not in (None, "", "{}") and parts:
                parts[-1] += f"({options_text(value)})"
            continue
        parts.append(str(value))
    return "/".join(parts) or "matrix"


def _numbers(v: dict) -> str:
    parts = [f"best attack {v['best_attack']}", f"{v['n_images']} images",
             *(f"{k} ({v['statistic']}) {_fmt(x)}" for k, x in v.get("values", {}).items()),
             f"median psnr {_fmt(v['psnr'])}, ssim {_fmt(v['ssim'])}, lpips {_fmt(v['lpips'])}"]
    return "; ".join(parts)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _seconds(value: float) -> str:
    return f"{value:.3f}"


def _finite(value):
    """NaN and ±inf are not JSON: null (the schema allows it where a figure can be missing)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
