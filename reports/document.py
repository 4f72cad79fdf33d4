"""A report as a list of blocks, rendered twice: Markdown (images as files next to it) and one
self-contained HTML page (images inlined as base64), so the two never say different things."""
from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from fedleak.core.errors import ConfigError
from fedleak.core.io import atomic_write

FORMATS = ("png", "pdf", "svg")
# no version or timestamp in any format: the same results give the same bytes
METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None, "Creator": None},
            "svg": {"Date": None, "Creator": None}}


@dataclass(frozen=True)
class FigureOptions:
    """Which files each figure is written as: always a PNG (what the pages show and inline), plus
    PDF and/or SVG beside it for a paper, at `dpi` (raster formats and images inside vector ones)."""
    formats: tuple[str, ...] = ("png",)
    dpi: int = 100

    def __post_init__(self):
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ConfigError(f"--format: expected some of {', '.join(FORMATS)}, got {', '.join(unknown)}")
        if not 10 <= self.dpi <= 1200:
            raise ConfigError(f"--dpi: expected 10 to 1200, got {self.dpi}")


def save_figure(fig, path: Path, options: FigureOptions | None = None, data=None) -> Path:
    """A matplotlib figure as `path` (a PNG) and every other format `options` asks for beside it,
    written like every other file (atomically; a full disk is one line); the figure is closed.
    `data` (a DataFrame): the numbers behind the figure, written beside it as CSV."""
    import matplotlib
    import matplotlib.pyplot as plt
    options = options or FigureOptions()
    try:
        with matplotlib.rc_context({"svg.hashsalt": "fedleak"}):  # fixed SVG ids: same figure, same bytes
            for fmt in dict.fromkeys(("png", *options.formats)):
                buffer = io.BytesIO()
                fig.savefig(buffer, format=fmt, dpi=options.dpi, metadata=METADATA[fmt])
                atomic_write(path.with_suffix(f".{fmt}"), buffer.getvalue())
    finally:
        plt.close(fig)
    if data is not None:
        atomic_write(path.with_suffix(".csv"), data.to_csv(index=False))
    return path


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


@dataclass(frozen=True)
class Tile:
    png: bytes                  # a small PNG (one reconstruction), shown enlarged with pixels kept sharp
    caption: list[str]          # lines under it (scores, loss)


@dataclass(frozen=True)
class ImageView:
    """Everything about one victim image: its ground truth and, per row (defense setting) and column
    (attack and mode), what was rebuilt of it, with scores. HTML: a dialog opened from the index."""
    key: str                    # unique within the document (an element id)
    title: str
    truth: bytes                # PNG of the ground truth
    rows: list[str]
    columns: list[str]
    tiles: dict                 # (row, column) -> Tile; a missing pair did not run
    summary: list[str]          # the image's line in the index: its cells' texts


@dataclass(frozen=True)
class Gallery:
    """Per-image views, listed in one sortable index table (`header` names the summary columns);
    Markdown points to the HTML page, which holds the images."""
    header: list[str]
    views: list[ImageView]


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> None:
        self.blocks.extend(blocks)


# Markdown that a name could carry (a defense label, an attack or user plugin's name, a folder):
# emphasis, code, links and images, raw HTML, table pipes. An underscore inside a word is no markup
# (snake_case stays readable); one at a word's edge is.
_MARKUP = re.compile(r"([\\`*\[\]<>|])|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md_text(value) -> str:
    """`value` as literal Markdown text: its markup characters escaped."""
    return _MARKUP.sub(lambda m: "\\" + m.group(0), str(value))


def md_code(value) -> str:
    """`value` as a Markdown code span whatever backticks it holds (a longer fence, CommonMark §6.1)."""
    text = str(value).replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def to_markdown(doc: Document, folder: Path) -> str:
    lines = [f"# {md_text(doc.title)}", ""]
    for block in doc.blocks:
        if isinstance(block, Heading):
            lines += [f"{'#' * block.level} {md_text(block.text)}", ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            lines += _markdown_table(block.header, block.rows)
        elif isinstance(block, Image):
            lines += [f"![{md_text(block.alt)}]({block.path.relative_to(folder).as_posix()})", ""]
        elif isinstance(block, Gallery):
            lines += ["Each image's reconstructions, scores and attack losses: open it in `report.html`.", ""]
            lines += _markdown_table(block.header, [v.summary for v in block.views])
    return "\n".join(lines).rstrip() + "\n"


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    cell = md_text  # the rows carry names; the header is fedleak's own words
    return (["| " + " | ".join(str(h).replace("|", "\\|") for h in header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(map(cell, row)) + " |" for row in rows] + [""])


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: " \\2195"; color: #999; font-size: 0.8em; }
table.sortable th[aria-sort="ascending"]::after { content: " \\2191"; color: #222; }
table.sortable th[aria-sort="descending"]::after { content: " \\2193"; color: #222; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
code { background: #f3f3f3; padding: 0 0.2em; }
nav.toc { background: #f7f7f7; border: 1px solid #ddd; padding: 0.5em 1.5em; margin: 1em 0 2em; }
nav.toc ul { margin: 0.2em 0; padding-left: 1.2em; }
nav.toc ul ul { display: inline; padding: 0; margin: 0; font-size: 0.9em; }
nav.toc ul ul::before { content: ": "; }
nav.toc ul ul li { display: inline; }
nav.toc ul ul li + li::before { content: " · "; }
img.pixels { image-rendering: pixelated; width: 84px; max-width: none; height: auto; margin: 0 auto 0.2em; }
img.thumb { image-rendering: pixelated; width: 42px; max-width: none; height: auto; margin: 0; }
dialog.image-view > figure img.pixels { width: 112px; margin: 0 0 0.2em; }
dialog.image-view { max-width: 95vw; max-height: 92vh; overflow: auto; padding: 1em 1.5em; border: 1px solid #888; }
dialog.image-view::backdrop { background: rgba(0, 0, 0, 0.45); }
dialog.image-view td { text-align: center; vertical-align: top; font-size: 0.8em; }
dialog.image-view figure { margin: 0; }
dialog.image-view figcaption { white-space: nowrap; }
button.open-view, button.close-view { cursor: pointer; }
"""

# Sorting (numbers by value: "exact" above any number, "–" and text after them) and the per-image
# dialogs; plain DOM, no library, so the page stays one self-contained file.
SCRIPT = """
(function () {
  function key(text) {
    var t = text.trim().replace(/,/g, '').replace(/\u2212/g, '-');
    if (t === 'exact') return [0, Infinity];
    var m = t.match(/^[+-]?(\\d+\\.?\\d*|\\.\\d+)(e[+-]?\\d+)?/i);
    return m ? [0, parseFloat(m[0])] : [1, t.toLowerCase()];
  }
  function compare(a, b) {
    if (a[0] !== b[0]) return a[0] - b[0];
    return a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0;
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var headers = table.querySelectorAll('thead th');
    headers.forEach(function (th, column) {
      th.addEventListener('click', function () {
        var descending = th.getAttribute('aria-sort') === 'ascending';
        headers.forEach(function (other) { other.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', descending ? 'descending' : 'ascending');
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r, s) {
          var order = compare(key(r.cells[column].textContent), key(s.cells[column].textContent));
          return descending ? -order : order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
  document.querySelectorAll('button.open-view').forEach(function (button) {
    button.addEventListener('click', function () {
      document.getElementById(button.dataset.view).showModal();
    });
  });
  document.querySelectorAll('button.close-view').forEach(function (button) {
    button.addEventListener('click', function () { button.closest('dialog').close(); });
  });
})();
"""


def to_html(doc: Document) -> str:
    ids = _heading_ids(doc)
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(doc.title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
             f"<h1>{html.escape(doc.title)}</h1>", _toc(doc, ids)]
    for number, block in enumerate(doc.blocks):
        if isinstance(block, Heading):
            parts.append(f'<h{block.level} id="{ids[number]}">{html.escape(block.text)}</h{block.level}>')
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Table):
            parts.append(_html_table(block.header, block.rows, block.colours))
        elif isinstance(block, Image):
            data = base64.b64encode(block.path.read_bytes()).decode()
            parts.append(f'<img alt="{html.escape(block.alt)}" src="data:image/png;base64,{data}">')
        elif isinstance(block, Gallery):
            parts.append(_gallery(block))
    parts += [f"<script>{SCRIPT}</script>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _heading_ids(doc: Document) -> dict[int, str]:
    """Block index -> a unique id from its heading's text (the table of contents links to them)."""
    ids, used = {}, set()
    for number, block in enumerate(doc.blocks):
        if isinstance(block, Heading):
            base = re.sub(r"[^a-z0-9]+", "-", block.text.lower()).strip("-") or "section"
            name, k = base, 2
            while name in used:
                name, k = f"{base}-{k}", k + 1
            used.add(name)
            ids[number] = name
    return ids


def _toc(doc: Document, ids: dict[int, str]) -> str:
    """Level-2 headings, each with its level-3 headings nested."""
    items: list[str] = []
    open_sub = False
    for number, block in enumerate(doc.blocks):
        if not isinstance(block, Heading) or block.level > 3:
            continue
        link = f'<a href="#{ids[number]}">{html.escape(block.text)}</a>'
        if block.level <= 2:
            if open_sub:
                items.append("</ul></li>")
                open_sub = False
            elif items:
                items.append("</li>")
            items.append(f"<li>{link}")
        else:
            if not items:
                items.append("<li>")
            if not open_sub:
                items.append("<ul>")
                open_sub = True
            items.append(f"<li>{link}</li>")
    if not items:
        return ""
    items.append("</ul></li>" if open_sub else "</li>")
    return '<nav class="toc"><strong>Contents</strong><ul>' + "".join(items) + "</ul></nav>"


def _html_table(header: list[str], rows: list[list[str]], colours=None, raw: set[int] = frozenset()) -> str:
    """A sortable table; `raw`: column indices whose cells are HTML already (buttons, thumbnails)."""
    parts = ['<table class="sortable">', "<thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
             + "</tr></thead>", "<tbody>"]
    for r, row in enumerate(rows):
        shades = colours[r] if colours else [""] * len(row)
        cells = []
        for i, (v, c) in enumerate(zip(row, shades)):
            text = str(v) if i in raw else html.escape(str(v))
            cells.append(f'<td style="background:{c}">{text}</td>' if c else f"<td>{text}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts)


def _png(data: bytes, css: str, alt: str) -> str:
    return f'<img class="{css}" alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _gallery(gallery: Gallery) -> str:
    rows = [[_png(v.truth, "thumb", v.title), *map(html.escape, v.summary),
             f'<button class="open-view" type="button" data-view="{v.key}">open</button>'] for v in gallery.views]
    parts = [_html_table(["image", *gallery.header, "view"], rows, raw=set(range(len(gallery.header) + 2)))]
    for v in gallery.views:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in v.columns)
        body = []
        for row in v.rows:
            cells = []
            for column in v.columns:
                tile = v.tiles.get((row, column))
                if tile is None:
                    cells.append("<td>not run</td>")
                    continue
                caption = "<br>".join(html.escape(line) for line in tile.caption)
                cells.append(f"<td><figure>{_png(tile.png, 'pixels', f'{row}, {column}')}"
                             f"<figcaption>{caption}</figcaption></figure></td>")
            body.append(f"<tr><th>{html.escape(row)}</th>{''.join(cells)}</tr>")
        parts.append(f'<dialog class="image-view" id="{v.key}"><button class="close-view" type="button">close</button>'
                     f"<h3>{html.escape(v.title)}</h3><figure>{_png(v.truth, 'pixels', 'ground truth')}"
                     f"<figcaption>ground truth</figcaption></figure>"
                     f"<table><thead><tr><th>defense ↓ attack →</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
                     "</dialog>")
    return "\n".join(parts)


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
