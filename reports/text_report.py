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


def _rows(verdicts: list[dict]):
    rougeL, exact = METRICS["rougeL"], METRICS["exact_sequence"]
    for v in verdicts:
        control = "control" if v["defense"] == "none" else v["verdict"]
        yield v, control, rougeL.format(v["worst_rougeL"]), exact.format(v["exact_share"]), rougeL.format(v["control_rougeL"])


def write_text_report(verdicts: list[dict], out: Path, title: str, max_rougeL: float) -> tuple[Path, Path]:
    head = ["threat model", "B", "defense", "verdict", "worst ROUGE-L", "exact share", "control ROUGE-L", "best attack", "errors"]
    md = [f"# {md_text(title)}", "",
          f"A defense PROTECTS where the best attack's worst-case ROUGE-L stays below {max_rougeL:g} and the same attacks "
          "leak without it (control); ROUGE-L, exact share: higher leaks more.", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    body = []
    for v, verdict, worst, share, ctrl in _rows(verdicts):
        cells = [v["threat_model"], str(v["batch_size"]), v["defense"], verdict, worst, share, ctrl, v["best_attack"], str(v["errors"])]
        md.append("| " + " | ".join(md_text(c) for c in cells) + " |")
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    md += ["", "## The most exposed sequence per verdict", "",
           "| threat model | B | defense | private | reconstructed |", "|---|---|---|---|---|"]
    examples = []
    for v in verdicts:
        md.append(f"| {md_text(v['threat_model'])} | {v['batch_size']} | {md_text(v['defense'])} | {md_text(v['worst_private'])} | "
                  f"{md_text(v['worst_reconstructed'])} |")
        examples.append(f"<tr><td>{html.escape(v['threat_model'])}</td><td>{v['batch_size']}</td><td>{html.escape(v['defense'])}</td>"
                        f"<td><code>{html.escape(v['worst_private'])}</code></td><td><code>{html.escape(v['worst_reconstructed'])}</code></td></tr>")
    page = ("<!doctype html><meta charset='utf-8'><title>" + html.escape(title) + "</title><h1>" + html.escape(title) + "</h1>"
            "<table border=1><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(body) + "</table>"
            "<h2>The most exposed sequence per verdict</h2><table border=1><tr><th>threat model</th><th>B</th><th>defense</th>"
            "<th>private</th><th>reconstructed</th></tr>" + "".join(examples) + "</table>")
    return atomic_write(Path(out) / "report.md", "\n".join(md) + "\n"), atomic_write(Path(out) / "report.html", page)
