"""A report as data, and its rendering: one HTML file, or Markdown with PNG figures.

A `Report` holds `Section` objects, each with its HTML and Markdown body (written side by
side with a `Body`) and its figures as PNG bytes (`draw_figure`). `save_report` writes it;
the output format follows the file suffix:

- ``.html``: one self-contained file; figures embedded as base64 PNG, inline CSS, no script
  and no external URL;
- ``.md``: Markdown with the figures written to ``<stem>_files/`` next to it, linked relatively.

Files are written atomically (a temporary file in the same folder, then `os.replace`).
Plotting (`lrplan.report.plots`, matplotlib) is imported only when a figure is drawn.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrplan.errors import LrplanError
from lrplan.files import atomic_write

__all__ = [
    "SUFFIXES",
    "Body",
    "Figure",
    "Report",
    "ReportError",
    "Section",
    "check_report_path",
    "draw_figure",
    "fixed",
    "fmt",
    "interval",
    "render_html",
    "render_markdown",
    "save_report",
]

#: Output suffixes and the format each selects.
SUFFIXES = {".html": "html", ".htm": "html", ".md": "markdown"}


class ReportError(LrplanError, ValueError):
    """A report cannot be written as asked."""


@dataclass(frozen=True)
class Figure:
    """One figure of a report: a file-safe name, a caption and the PNG bytes."""

    name: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Section:
    """One section: heading, anchor id, body in both formats, and figures shown after the body."""

    title: str
    id: str
    html: str
    markdown: str
    figures: tuple[Figure, ...] = ()


@dataclass(frozen=True)
class Report:
    """A whole report: title, warnings for the banner at the top, sections in order."""

    title: str
    sections: tuple[Section, ...]
    warnings: tuple[str, ...] = ()

    @property
    def figures(self) -> tuple[Figure, ...]:
        """Every figure, in order of appearance."""
        return tuple(f for s in self.sections for f in s.figures)


# ---------------------------------------------------------------- small text helpers


def fmt(x, digits: int = 4) -> str:
    """A number with ``digits`` significant digits (an integer as is; None or NaN as a dash)."""
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if isinstance(x, int | np.integer):
        return str(x)
    x = float(x)
    if not np.isfinite(x):
        return "—"
    return f"{x:.{digits}g}"


_NUMBER = re.compile(r"[-+]?[\d.]+(e[-+]?\d+)?%?")


def fixed(x: float, decimals: int) -> str:
    """A number with ``decimals`` decimals (NaN as a dash)."""
    return f"{x:.{decimals}f}" if np.isfinite(x) else "—"


class Body:
    """Accumulates a section body in HTML and Markdown side by side."""

    def __init__(self) -> None:
        self.html: list[str] = []
        self.md: list[str] = []
        self.figures: list[Figure] = []

    def h(self, text: str) -> None:
        """A subheading inside the section."""
        self.html.append(f"<h3>{_inline(text)}</h3>")
        self.md.append(f"### {text}")

    def figure(self, fig: Figure) -> None:
        """Place a figure here in the body (figures not placed follow the body)."""
        self.figures.append(fig)
        self.html.append(_marker(fig))
        self.md.append(_marker(fig))

    def p(self, text: str, *, cls: str | None = None) -> None:
        """A paragraph; ``**bold**`` and ```code``` spans are rendered in both formats."""
        attr = f' class="{cls}"' if cls else ""
        self.html.append(f"<p{attr}>{_inline(text)}</p>")
        self.md.append(text)

    def items(self, texts: Sequence[str]) -> None:
        """A bulleted list."""
        if not texts:
            return
        self.html.append("<ul>" + "".join(f"<li>{_inline(t)}</li>" for t in texts) + "</ul>")
        self.md.append("\n".join(f"- {t}" for t in texts))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence], *, caption: str = "") -> None:
        """A table of already formatted cells (numbers are formatted with 4 digits)."""
        cells = [[fmt(c) for c in r] for r in rows]
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        num = [[not isinstance(c, str) or _NUMBER.fullmatch(c) is not None for c in r] for r in rows]
        body = "".join("<tr>" + "".join(f'<td class="n">{html.escape(c)}</td>' if n
                                        else f"<td>{html.escape(c)}</td>" for c, n in zip(r, nr, strict=True))
                       + "</tr>" for r, nr in zip(cells, num, strict=True))
        self.html.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        esc = lambda s: s.replace("|", "\\|")  # noqa: E731
        lines = ([f"*{caption}*", ""] if caption else []) + [
            "| " + " | ".join(esc(h) for h in headers) + " |",
            "|" + "|".join("---" for _ in headers) + "|",
            *("| " + " | ".join(esc(c) for c in r) + " |" for r in cells),
        ]
        self.md.append("\n".join(lines))

    def section(self, title: str, sid: str, figures: Sequence[Figure] = ()) -> Section:
        """Close the body into a `Section`."""
        return Section(title=title, id=sid, html="\n".join(self.html), markdown="\n\n".join(self.md),
                       figures=(*self.figures, *figures))


def _marker(fig: Figure) -> str:
    return f"<!--figure:{fig.name}-->"


def _place(body: str, figures: Sequence[Figure], render: Callable[[Figure], str]) -> str:
    """Replace each figure's marker in ``body`` by the rendered figure; the rest go after it."""
    tail = []
    for f in figures:
        if _marker(f) in body:
            body = body.replace(_marker(f), render(f))
        else:
            tail.append(render(f))
    return "\n\n".join([body, *tail])


def _inline(text: str) -> str:
    """Escape text for HTML and render **bold** and `code` spans."""
    out = html.escape(text)
    parts = out.split("**")
    out = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of draws."""
    a = (1 - level) / 2
    lo, hi = np.quantile(np.asarray(draws, dtype=np.float64), [a, 1 - a])
    return float(lo), float(hi)


def draw_figure(name: str, caption: str, fn: Callable, *args, **kwargs) -> Figure:
    """Draw ``fn(*args, **kwargs)`` in the report's style into a `Figure` (PNG bytes)."""
    from lrplan.report import plots

    with plots.style():
        fig = fn(*args, **kwargs)
        png = plots.to_png(fig)
    return Figure(name=name, caption=caption, png=png)



_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1060px;margin:2em auto;
padding:0 1.2em;color:#1d1d1d;line-height:1.5}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #0072B2;padding-bottom:.2em;margin-top:2em}
nav{font-size:.95em;margin:.6em 0 1.4em}nav a{margin-right:1.1em;color:#0072B2}
.warning{background:#fdecea;border:1px solid #D55E00;border-left:6px solid #D55E00;padding:.7em 1em;
margin:1em 0;border-radius:4px}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em;font-variant-numeric:tabular-nums}
caption{text-align:left;font-style:italic;padding-bottom:.3em;color:#444}
th,td{border:1px solid #d6d6d6;padding:.25em .6em;text-align:left}th{background:#f2f5f8}
td.n{text-align:right}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444;margin-top:.3em}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
"""


def render_html(report: Report) -> str:
    """The report as one self-contained HTML document (figures as base64 data URIs)."""
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{esc(report.title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{esc(report.title)}</h1>"]
    for w in report.warnings:
        out.append(f'<div class="warning" role="alert"><strong>Warning:</strong> {esc(w)}</div>')
    out.append("<nav>" + "".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in report.sections) + "</nav>")
    def figure(f: Figure) -> str:
        data = base64.b64encode(f.png).decode("ascii")
        return (f'<figure id="fig-{f.name}"><img src="data:image/png;base64,{data}" '
                f'alt="{esc(f.caption)}"><figcaption>{esc(f.caption)}</figcaption></figure>')

    for s in report.sections:
        out.append(f'<section id="{s.id}" aria-labelledby="{s.id}-h"><h2 id="{s.id}-h">{esc(s.title)}</h2>')
        out.append(_place(s.html, s.figures, figure))
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def render_markdown(report: Report, files_dir: str) -> str:
    """The report as Markdown; figure ``name`` is linked as ``files_dir/name.png``."""
    out = [f"# {report.title}", ""]
    for w in report.warnings:
        out += [f"> **Warning:** {w}", ""]
    out += [" · ".join(f"[{s.title}](#{s.id})" for s in report.sections), ""]
    def figure(f: Figure) -> str:
        return f"![{f.caption}]({files_dir}/{f.name}.png)\n\n*{f.caption}*"

    for s in report.sections:
        out += [f'<a id="{s.id}"></a>', "", f"## {s.title}", "", _place(s.markdown, s.figures, figure), ""]
    return "\n".join(out)


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def check_report_path(path: str | os.PathLike[str]) -> str:
    """The format of a report file (``html`` or ``markdown``); refuses a bad suffix or folder."""
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ReportError(f"{path}: unknown report format {path.suffix!r}; name the output "
                          f"{path.stem}.html (one self-contained file) or {path.stem}.md")
    if not path.parent.is_dir():
        raise ReportError(f"{path}: folder {path.parent} does not exist; create it first")
    return fmt


def save_report(report: Report, path: str | os.PathLike[str]) -> Path:
    """Write a built report to ``path`` (``.html`` or ``.md``, see the module docstring)."""
    path = Path(path)
    if check_report_path(path) == "html":
        _atomic_write(path, render_html(report).encode("utf-8"))
        return path
    folder = path.parent / f"{path.stem}_files"
    folder.mkdir(exist_ok=True)
    for f in report.figures:
        _atomic_write(folder / f"{f.name}.png", f.png)
    _atomic_write(path, render_markdown(report, folder.name).encode("utf-8"))
    return path

