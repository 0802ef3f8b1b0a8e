"""Self-contained HTML reports: headings, text, tables and embedded PNG figures.

Evaluation jobs describe a report as a list of :class:`Section` objects and
turn it into one HTML file with :func:`html_report`; figures are matplotlib
figures rendered with the Agg backend and embedded as base64 PNG, so the file
can be mailed or archived alone. :func:`write_report` writes the HTML (and,
optionally, a JSON of the figures next to it) atomically.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slidewise.engine.core.outputs import atomic_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 60em; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: .8em 0; }
caption { text-align: left; font-weight: bold; padding: .3em 0; }
th, td { border: 1px solid #bbb; padding: .25em .6em; }
th { background: #eee; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; }
figure img { max-width: 100%; }
figcaption { font-size: .9em; color: #555; }
p.note { color: #555; font-size: .9em; }
"""


@dataclass
class Table:
    """A table of values.

    Attributes:
        columns: Column headings.
        rows: Rows of cells (numbers are formatted with :func:`format_value`).
        caption: Caption shown above the table.
    """

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""


@dataclass
class Image:
    """A PNG image embedded in the report.

    Attributes:
        png: PNG bytes (see :func:`figure_png`).
        caption: Caption below the image.
        alt: Alternative text (defaults to the caption).
    """

    png: bytes
    caption: str = ""
    alt: str = ""


@dataclass
class Section:
    """One part of a report, rendered in this order: text, tables, images.

    Attributes:
        heading: Section heading.
        text: Paragraphs (plain text, escaped).
        tables: Tables.
        images: Figures.
    """

    heading: str
    text: Sequence[str] = field(default_factory=list)
    tables: Sequence[Table] = field(default_factory=list)
    images: Sequence[Image] = field(default_factory=list)


def format_value(value: Any, digits: int = 4) -> str:
    """Format a cell: floats with ``digits`` significant decimals, NaN as an en dash."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.{digits}f}" if abs(value) < 1e6 else f"{value:.{digits}g}"
    return str(value)


def new_figure(width: float = 6.0, height: float = 4.0) -> MplFigure:
    """A matplotlib figure drawn with the Agg backend (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: MplFigure, dpi: int = 100) -> bytes:
    """Render a matplotlib figure to PNG bytes with the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return getattr(getattr(value, "dtype", None), "kind", "") in ("i", "u", "f")


def _table_html(table: Table) -> str:
    out = ["<table>"]
    if table.caption:
        out.append(f"<caption>{html.escape(table.caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns) + "</tr>")
    for row in table.rows:
        cells = []
        for cell in row:
            cls = ' class="num"' if _is_number(cell) else ""
            cells.append(f"<td{cls}>{html.escape(format_value(cell))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _image_html(image: Image) -> str:
    data = base64.b64encode(image.png).decode("ascii")
    alt = html.escape(image.alt or image.caption or "figure", quote=True)
    caption = f"<figcaption>{html.escape(image.caption)}</figcaption>" if image.caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">{caption}</figure>'


def html_report(title: str, sections: Sequence[Section], footer: str = "") -> str:
    """Build a self-contained HTML document.

    Args:
        title: Document title and top heading.
        sections: Sections in order.
        footer: Optional small print at the end (plain text).

    Returns:
        The HTML text (UTF-8, no external resources).
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<section><h2>{html.escape(section.heading)}</h2>")
        parts.extend(f"<p>{html.escape(p)}</p>" for p in section.text)
        parts.extend(_table_html(t) for t in section.tables)
        parts.extend(_image_html(i) for i in section.images)
        parts.append("</section>")
    if footer:
        parts.append(f'<p class="note">{html.escape(footer)}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def json_ready(value: Any) -> Any:
    """Convert numpy values and non-finite floats (to ``None``) for strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):
        return json_ready(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_report(
    path: str | os.PathLike[str],
    document: str,
    figures: dict[str, Any] | None = None,
    json_path: str | os.PathLike[str] | None = None,
) -> tuple[Path, Path | None]:
    """Write the HTML report, and a JSON of ``figures`` next to it, atomically.

    Both files are written to temporary siblings and renamed only when both are
    complete.

    Args:
        path: HTML output path.
        document: HTML text from :func:`html_report`.
        figures: Numbers to save as JSON (``None``: no JSON).
        json_path: JSON path; defaults to ``path`` with suffix ``.json``.

    Returns:
        ``(html_path, json_path or None)``.
    """
    final = Path(path)
    if figures is None:
        with atomic_output(final) as tmp:
            tmp.write_text(document, encoding="utf-8")
        return final, None
    jpath = Path(json_path) if json_path is not None else final.with_suffix(".json")
    text = json.dumps(json_ready(figures), indent=2, allow_nan=False)
    with atomic_output(final) as tmp_html, atomic_output(jpath) as tmp_json:
        tmp_json.write_text(text + "\n", encoding="utf-8")
        tmp_html.write_text(document, encoding="utf-8")
    return final, jpath
