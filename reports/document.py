"""A report as a list of blocks, rendered twice: Markdown (images as files next to it) and one
self-contained HTML page (images inlined as base64), so the two never say different things."""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

from fedleak.core.io import atomic_write

# no version or timestamp in the PNG: the same results give the same bytes
PNG = {"format": "png", "dpi": 100, "metadata": {"Software": None}}


def save_figure(fig, path: Path) -> Path:
    """A matplotlib figure as a PNG, written like every other file (atomically; a full disk is one
    line); the figure is closed."""
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, **PNG)
    finally:
        plt.close(fig)
    return atomic_write(path, buffer.getvalue())


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    # per-cell background colours ("#rrggbb" or ""), same shape as rows; HTML only
    colours: list[list[str]] | None = None


@dataclass(frozen=True)
class Image:
    path: Path          # a PNG inside the report folder
    alt: str


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> None:
        self.blocks.extend(blocks)


def to_markdown(doc: Document, folder: Path) -> str:
    lines = [f"# {doc.title}", ""]
    for block in doc.blocks:
        if isinstance(block, Heading):
            lines += [f"{'#' * block.level} {block.text}", ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            cell = lambda s: str(s).replace("|", "\\|")
            lines += ["| " + " | ".join(map(cell, block.header)) + " |", "|" + "---|" * len(block.header)]
            lines += ["| " + " | ".join(map(cell, row)) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Image):
            lines += [f"![{block.alt}]({block.path.relative_to(folder).as_posix()})", ""]
    return "\n".join(lines).rstrip() + "\n"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def to_html(doc: Document) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(doc.title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
             f"<h1>{html.escape(doc.title)}</h1>"]
    for block in doc.blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Table):
            parts.append("<table>")
            parts.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in block.header) + "</tr>")
            for r, row in enumerate(block.rows):
                colours = block.colours[r] if block.colours else [""] * len(row)
                parts.append("<tr>" + "".join(
                    f'<td style="background:{c}">{html.escape(str(v))}</td>' if c else f"<td>{html.escape(str(v))}</td>"
                    for v, c in zip(row, colours)) + "</tr>")
            parts.append("</table>")
        elif isinstance(block, Image):
            data = base64.b64encode(block.path.read_bytes()).decode()
            parts.append(f'<img alt="{html.escape(block.alt)}" src="data:image/png;base64,{data}">')
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def table_text(table: Table, indent: str = "") -> str:
    """A table as aligned plain text, for the terminal."""
    rows = [table.header, *table.rows]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(table.header))]
    line = lambda r: indent + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(table.header), line(["-" * w for w in widths]), *map(line, table.rows)])


def _inline(text: str) -> str:
    """The one piece of Markdown the blocks use in prose: `code`."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))
