"""The text matrix's report (a pure view of its verdicts and rows): one verdict table and, per verdict,
the most exposed private sequence beside its reconstruction. Markdown escapes the characters a table
cell reads (| ` * _ < >); HTML escapes everything with html.escape, so a private sentence holding markup
is shown, never rendered."""
from __future__ import annotations

import html
from pathlib import Path

from fedleak.core.io import atomic_write
from fedleak.metrics.record import METRICS

_MD = str.maketrans({c: "\\" + c for c in "|`*_<>[]#"})


def md_text(text: str) -> str:
    return " ".join(str(text).split()).translate(_MD)


def _status(v: dict) -> str:
    return "control" if v["defense"] == "none" and not v["gated"] else (v["status"] or "–")


def _cells(v: dict) -> list[str]:
    rougeL, exact = METRICS["rougeL"], METRICS["exact_sequence"]
    control = "–" if v["control_recovered"] is None else f"{v['control_recovered']:.0%}"
    return [v["context"]["threat_model"], str(v["context"]["batch_size"]), v["defense_label"], _status(v),
            rougeL.format(v["worst"]["rougeL"]), exact.format(v["worst"]["exact_sequence"]),
            f"{v['recovered']} of {v['n_sequences']}", control, v["best_attack"], str(v["errors"]),
            ("; ".join(v["reasons"]) if v["gated"] else "") or "–"]


def write_text_report(verdicts: list[dict], out: Path, title: str, max_rougeL: float) -> tuple[Path, Path]:
    """`verdicts`: reports.verdicts.TextVerdict records as dicts (harness.verdict.judge.compute_text_verdicts)."""
    head = ["threat model", "B", "defense", "verdict", "worst ROUGE-L", "worst exact", "recovered", "control",
            "best attack", "errors", "why"]
    md = [f"# {md_text(title)}", "",
          f"Per private sequence the best attack; worst: the most exposed sequence. A defense holds where that "
          f"ROUGE-L stays below {max_rougeL:g}, no attack failed, and the same attacks recover every one of these "
          "sequences without it (control; recovered: token for token or ROUGE-L >= 0.9). Higher leaks more.", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    body = []
    for v in verdicts:
        cells = _cells(v)
        md.append("| " + " | ".join(md_text(c) for c in cells) + " |")
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    md += ["", "## The most exposed sequence per verdict", "",
           "| threat model | B | defense | private | reconstructed |", "|---|---|---|---|---|"]
    examples = []
    for v in verdicts:
        tm, B = v["context"]["threat_model"], v["context"]["batch_size"]
        md.append(f"| {md_text(tm)} | {B} | {md_text(v['defense_label'])} | {md_text(v['worst_private'])} | "
                  f"{md_text(v['worst_reconstructed'])} |")
        examples.append(f"<tr><td>{html.escape(tm)}</td><td>{B}</td><td>{html.escape(v['defense_label'])}</td>"
                        f"<td><code>{html.escape(v['worst_private'])}</code></td><td><code>{html.escape(v['worst_reconstructed'])}</code></td></tr>")
    page = ("<!doctype html><meta charset='utf-8'><title>" + html.escape(title) + "</title><h1>" + html.escape(title) + "</h1>"
            "<table border=1><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(body) + "</table>"
            "<h2>The most exposed sequence per verdict</h2><table border=1><tr><th>threat model</th><th>B</th><th>defense</th>"
            "<th>private</th><th>reconstructed</th></tr>" + "".join(examples) + "</table>")
    return atomic_write(Path(out) / "report.md", "\n".join(md) + "\n"), atomic_write(Path(out) / "report.html", page)
