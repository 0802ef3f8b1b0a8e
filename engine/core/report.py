"""Self-contained HTML reports: headings, text, tables and embedded PNG figures.

Evaluation jobs describe a report as a list of :class:`Section` objects and
turn it into one HTML file with :func:`html_report`; figures are matplotlib
figures rendered with the Agg backend and embedded as base64 PNG, so the file
can be mailed or archived alone. :func:`write_report` writes the HTML (and,
optionally, a JSON of the figures next to it) atomically.

A :class:`Report` adds what a report handed on needs: a summary block (key-value
table), the provenance (inputs with their SHA-256, date in UTC, Slidewise version,
see :func:`provenance`) and the units convention (:data:`UNITS_NOTE`: shares are in
per cent everywhere, in text, tables and charts). Each :class:`Image` may carry a
``key`` and the numbers it draws (``data``): :meth:`Report.figures` collects them,
so the JSON holds the same figures as the HTML. Other code adds sections with
:meth:`Report.add` (for example calibration or factor importance) without
touching the layout.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

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
table.summary th { width: 22em; }
code { font-size: .9em; }
"""

#: The one units convention of every report: shares and rates in per cent.
UNITS_NOTE = (
    "Units: shares, rates and scores (precision, recall, F1, IoU, accuracy, area shares) are "
    "given in per cent (0 to 100) in the text, the tables and the charts; AUC, kappa, MCC "
    "and probabilities are given on their own 0 to 1 scale."
)


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
        key: Name of the figure in the report's JSON (empty: not in the JSON).
        data: The numbers the figure draws (JSON-ready), saved under ``key``.
    """

    png: bytes
    caption: str = ""
    alt: str = ""
    key: str = ""
    data: Any = None


@dataclass
class Section:
    """One part of a report, rendered in this order: text, tables, images.

    Attributes:
        heading: Section heading.
        text: Paragraphs (plain text, escaped).
        tables: Tables.
        images: Figures.
        key: Identifier of the section (for :meth:`Report.add` ``after``).
    """

    heading: str
    text: Sequence[str] = field(default_factory=list)
    tables: Sequence[Table] = field(default_factory=list)
    images: Sequence[Image] = field(default_factory=list)
    key: str = ""


def key_value_table(items: Sequence[tuple[str, Any]], caption: str = "") -> Table:
    """A two-column table (label, value) of ``items``; rows whose value is ``None`` are left out."""
    return Table(["Item", "Value"], [[k, v] for k, v in items if v is not None], caption)


class Percent(float):
    """A per cent value that tables show with its own number of decimals."""

    digits: int = 2

    def __new__(cls, value: float, digits: int = 2) -> Percent:
        """A per cent value shown with ``digits`` decimals."""
        obj = super().__new__(cls, value)
        obj.digits = digits
        return obj


def percent(value: Any, digits: int = 1) -> Percent | None:
    """A share 0..1 as per cent rounded to ``digits`` (``None`` and NaN stay ``None``)."""
    if value is None:
        return None
    number = float(value)
    return Percent(round(100 * number, digits), digits) if math.isfinite(number) else None


def slidewise_version() -> str:
    """The installed Slidewise version, else the plugin's ``metadata.txt`` version."""
    from importlib import metadata

    try:
        return metadata.version("slidewise")
    except metadata.PackageNotFoundError:
        pass
    meta = Path(__file__).resolve().parents[2] / "metadata.txt"
    if meta.is_file():
        for line in meta.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip().lower().startswith("version="):
                return line.split("=", 1)[1].strip()
    return "unknown"


def provenance(inputs: dict[str, str | None], started: float | None = None) -> dict[str, Any]:
    """Inputs with their SHA-256 (files streamed; folders file by file), date and version.

    Args:
        inputs: Input label -> path (``None`` or empty: left out).
        started: Time of the run (seconds since the epoch); default now.

    Returns:
        ``{"date_utc", "slidewise_version", "inputs": [{"name", "path", "sha256"}]}``.
    """
    from slidewise.engine.core.manifest import input_hashes

    given = {k: v for k, v in inputs.items() if v}
    hashes = input_hashes(list(given.values()))
    when = time.gmtime(time.time() if started is None else started)
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", when),
        "slidewise_version": slidewise_version(),
        "inputs": [
            {"name": k, "path": str(v), "sha256": hashes.get(str(Path(v)))}
            for k, v in given.items()
        ],
    }


def short_hash(digest: str | None) -> str:
    """The first 12 hex digits of a SHA-256 (``dir:`` kept for folders), or a dash."""
    if not digest:
        return "– (not found)"
    prefix, _, hexes = digest.rpartition(":")
    return (prefix + ":" if prefix else "") + hexes[:12]


def provenance_section(record: dict[str, Any]) -> Section:
    """The inputs with their short hashes, the date and the version, as a section."""
    rows = [[i["name"], Path(i["path"]).name, short_hash(i["sha256"])] for i in record["inputs"]]
    return Section(
        "Inputs and provenance",
        text=[
            f"Made {record['date_utc']} (UTC) with Slidewise {record['slidewise_version']}. "
            "SHA-256 shortened to 12 hex digits; the JSON holds the full hashes and paths."
        ],
        tables=[Table(["Input", "File", "SHA-256"], rows)],
        key="provenance",
    )


@dataclass
class Report:
    """A report handed on: summary, sections, provenance, units; HTML and JSON of one build.

    Attributes:
        title: Title and top heading.
        summary: The key figures and the method, as (label, value) rows shown first.
        sections: The body, in order (see :meth:`add`).
        provenance: From :func:`provenance` (``None``: no provenance section).
        notes: Paragraphs under the summary (plain text).
        method: The method and training (for example from the model file), as a second
            table of the summary.
    """

    title: str
    summary: list[tuple[str, Any]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    provenance: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    method: list[tuple[str, Any]] = field(default_factory=list)

    def add(self, section: Section, after: str = "") -> None:
        """Add ``section`` at the end, or right after the section whose key is ``after``."""
        for index, existing in enumerate(self.sections):
            if after and existing.key == after:
                self.sections.insert(index + 1, section)
                return
        self.sections.append(section)

    def all_sections(self) -> list[Section]:
        """Summary, body, provenance: the sections of the HTML, in order."""
        summary = Section(
            "Summary",
            text=[*self.notes, UNITS_NOTE],
            tables=[
                key_value_table(self.summary, "Key figures"),
                *([key_value_table(self.method, "Method and training")] if self.method else []),
            ],
            key="summary",
        )
        tail = [provenance_section(self.provenance)] if self.provenance else []
        return [summary, *self.sections, *tail]

    def html(self) -> str:
        """The self-contained HTML document."""
        version = (self.provenance or {}).get("slidewise_version") or slidewise_version()
        return html_report(self.title, self.all_sections(), footer=f"Slidewise {version}")

    def figures(self) -> dict[str, Any]:
        """Every keyed figure's numbers, the summary and the provenance (for the JSON)."""
        out: dict[str, Any] = {
            "title": self.title,
            "units": "per cent for shares, rates and scores in 'summary' and 'figures' "
            "(as in the HTML); AUC, kappa, MCC and probabilities 0 to 1",
            "summary": {label: value for label, value in self.summary},
            "method": {label: value for label, value in self.method},
            "figures": {},
        }
        for section in self.sections:
            for image in section.images:
                if image.key:
                    out["figures"][image.key] = {"caption": image.caption, "data": image.data}
        if self.provenance:
            out["provenance"] = self.provenance
        return out


def format_value(value: Any, digits: int = 4) -> str:
    """Format a cell: floats with ``digits`` significant decimals, NaN as an en dash."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, Percent):
        return f"{value:.{value.digits}f}"
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
    # "tight": a legend placed beside the axes (the maps' class keys) is never cut off.
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05)
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


def confusion_image(
    matrix: Sequence[Sequence[int]],
    labels: Sequence[str] = ("Not landslide", "Landslide"),
    what: str = "pixels",
    key: str = "confusion_matrix",
) -> Image:
    """The confusion matrix (rows: reference, columns: prediction) as a figure.

    Each cell shows the count and its per cent of all counted ``what``.

    Args:
        matrix: ``[[tn, fp], [fn, tp]]`` (reference rows, predicted columns).
        labels: Class names, in the matrix's order.
        what: What is counted (pixels, samples, boxes).
        key: Name of the figure in the JSON.
    """
    values = np.asarray(matrix, dtype=np.float64)
    total = max(1.0, float(values.sum()))
    fig = new_figure(4.6, 4.0)
    ax = fig.add_subplot()
    ax.imshow(values / total, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(values):
        share = 100 * count / total
        colour = "white" if share > 50 else "black"
        ax.text(j, i, f"{int(count):,}\n{share:.1f} %", ha="center", va="center", color=colour)
    ax.set_xticks(range(len(labels)), [f"Predicted\n{n.lower()}" for n in labels])
    ax.set_yticks(range(len(labels)), [f"Reference\n{n.lower()}" for n in labels])
    ax.set_title(f"Confusion matrix ({what}, % of all)", fontsize=10)
    data = {
        "labels": list(labels),
        "rows": "reference",
        "columns": "prediction",
        "counts": values.astype(int).tolist(),
        "percent_of_all": np.round(100 * values / total, 3).tolist(),
    }
    return Image(figure_png(fig), f"Confusion matrix ({what})", key=key, data=data)


def pr_threshold_image(
    thresholds: Sequence[float] | np.ndarray,
    precision: Sequence[float] | np.ndarray,
    recall: Sequence[float] | np.ndarray,
    chosen: float,
    score_name: str = "probability",
    key: str = "precision_recall",
) -> Image:
    """Precision-recall curve and F1 against the threshold, side by side, in per cent.

    Args:
        thresholds: Thresholds (increasing), each with the ``precision`` and ``recall``
            (0..1) of calling "landslide" what is at or above it.
        precision: Precision at each threshold.
        recall: Recall at each threshold.
        chosen: The threshold used in the report (marked on both plots).
        score_name: What is thresholded (probability, detection score).
        key: Name of the figure in the JSON.
    """
    t = np.asarray(thresholds, dtype=np.float64)
    p = 100 * np.asarray(precision, dtype=np.float64)
    r = 100 * np.asarray(recall, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)  # NaN where nothing is predicted
    best = int(np.nanargmax(f1)) if np.isfinite(f1).any() else 0
    at = int(np.argmin(np.abs(t - chosen))) if t.size else 0
    fig = new_figure(9.0, 4.0)
    left, right = fig.subplots(1, 2)
    left.plot(r, p, color="C0")
    if t.size:
        left.plot(r[at], p[at], "o", color="C3", label=f"{score_name} >= {chosen:g}")
        # Upper right: the corner a real precision-recall curve leaves empty (lower left is
        # where a weak detector's curve runs).
        left.legend(loc="upper right")
    left.set(xlabel="Recall (%)", ylabel="Precision (%)", xlim=(0, 100), ylim=(0, 101))
    left.set_title("Precision-recall", fontsize=10)
    right.plot(t, f1, color="C2", label="F1")
    right.plot(t, p, color="C0", lw=1, alpha=0.6, label="Precision")
    right.plot(t, r, color="C1", lw=1, alpha=0.6, label="Recall")
    right.axvline(chosen, color="C3", ls="--", lw=1, label=f"used: {chosen:g}")
    if t.size:
        right.axvline(t[best], color="grey", ls=":", lw=1, label=f"best F1: {t[best]:.2f}")
    right.set(xlabel=f"Threshold ({score_name})", ylabel="%", ylim=(0, 101))
    right.set_title("F1 against the threshold", fontsize=10)
    right.legend(loc="best", fontsize=8)
    data = {
        "threshold": t.tolist(),
        "precision_percent": np.round(p, 3).tolist(),
        "recall_percent": np.round(r, 3).tolist(),
        "f1_percent": np.round(f1, 3).tolist(),
        "best_f1_threshold": float(t[best]) if t.size else None,
        "best_f1_percent": float(f1[best]) if np.isfinite(f1).any() else None,
        "used_threshold": chosen,
    }
    caption = (
        f"Precision-recall curve and F1 against the {score_name} threshold (best F1 "
        f"{data['best_f1_percent'] or 0:.1f} % at {data['best_f1_threshold'] or 0:.2f})"
    )
    return Image(figure_png(fig), caption, key=key, data=data)
