"""Report sections of the factor analysis: importance (SHAP) and multicollinearity.

:func:`factor_sections` turns the figures of :mod:`.importance` and
:mod:`slidewise.engine.geo.collinearity` into :class:`~slidewise.engine.core.report.Section`
objects (tables and matplotlib figures) that any report can include;
:func:`write_factor_report` writes them as one HTML file (and its JSON).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slidewise.engine.core.report import (
    Image,
    Section,
    Table,
    figure_png,
    html_report,
    new_figure,
    write_report,
)

#: Blocks shown in the per-block table and heat map (most samples first).
LISTED_BLOCKS = 30


def importance_section(doc: dict[str, Any]) -> Section:
    """Global importance table and bar chart, per-block table and heat map."""
    ranking = doc["ranking"]
    rows = [[f, doc["global"][f], doc["share"][f]] for f in ranking]
    tables = [
        Table(
            ["factor", "mean |SHAP|", "share"],
            rows,
            caption=f"Global importance ({doc['samples']} training samples explained)",
        )
    ]
    images = [Image(bar_chart(doc), caption="Mean absolute SHAP value per factor")]
    blocks = doc.get("blocks") or {}
    if blocks:
        listed = list(blocks)[:LISTED_BLOCKS]
        tables.append(
            Table(
                ["block", *ranking, "top factor"],
                [
                    [b, *(blocks[b][f] for f in ranking), max(blocks[b], key=blocks[b].get)]
                    for b in listed
                ],
                caption="Importance per block (mean |SHAP| of the block's explained samples)",
            )
        )
        images.append(Image(heat_map(blocks, ranking, listed), caption="Importance per block"))
    how = {
        "linear-shap": "exact linear SHAP values of the logistic regression (log-odds)",
        "tree-shap": "exact tree SHAP values of the random forest (probability)",
        "kernel-shap": "kernel SHAP values of the probability of landslide "
        "(each sample explained with its own block's model for meta-learning)",
    }.get(doc["method"], doc["method"])
    text = [
        f"Factors ranked by their mean absolute SHAP value: {how}. A factor's SHAP value "
        "is its contribution to one sample's prediction; one-hot columns of a categorical "
        "factor are summed."
    ]
    return Section("Factor importance", text, tables, images)


def collinearity_section(doc: dict[str, Any]) -> Section:
    """VIF table, correlation matrix table and the problems found."""
    names = doc["correlation"]["names"]
    vif_rows = [
        [n, doc["vif"][n], "above threshold" if n in doc["high_vif"] else ""] for n in names
    ]
    matrix = doc["correlation"]["matrix"]
    text = [
        f"Variance inflation factor (warning above {doc['vif_threshold']:g}) and Pearson "
        f"correlation (warning above |r| = {doc['r_threshold']:g}) of the continuous factors "
        "over the samples."
    ]
    pairs = doc.get("correlated_pairs") or []
    if pairs:
        text.append(
            "Strongly correlated: " + ", ".join(f"{a}/{b} (r = {r:.2f})" for a, b, r in pairs)
        )
    if doc.get("skipped"):
        text.append("Not screened: " + ", ".join(f"{k} ({v})" for k, v in doc["skipped"].items()))
    tables = [
        Table(["factor", "VIF", ""], vif_rows, caption="Variance inflation factors"),
        Table(
            ["", *names],
            [[n, *row] for n, row in zip(names, matrix, strict=True)],
            caption="Pearson correlation",
        ),
    ]
    return Section("Multicollinearity", text, tables)


def factor_sections(
    importance: dict[str, Any] | None, collinearity: dict[str, Any] | None
) -> list[Section]:
    """The sections of whichever analysis has figures."""
    out = []
    if importance:
        out.append(importance_section(importance))
    if collinearity and collinearity.get("correlation", {}).get("names"):
        out.append(collinearity_section(collinearity))
    return out


def bar_chart(doc: dict[str, Any]) -> bytes:
    """PNG: horizontal bars of the global importance, most important on top."""
    ranking = doc["ranking"]
    fig = new_figure(6.0, 0.4 * len(ranking) + 1.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(ranking[::-1], [doc["global"][f] for f in ranking[::-1]], color="#b2182b")
    ax.set_xlabel("mean |SHAP value|")
    return figure_png(fig)


def heat_map(blocks: dict[str, dict[str, float]], factors: list[str], listed: list[str]) -> bytes:
    """PNG: blocks x factors, each block's importance as a share of its total."""
    data = np.array([[blocks[b][f] for f in factors] for b in listed])
    data = data / np.maximum(data.sum(axis=1, keepdims=True), 1e-12)
    fig = new_figure(0.7 * len(factors) + 2.5, 0.25 * len(listed) + 1.5)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(data, aspect="auto", cmap="Reds", vmin=0)
    ax.set_xticks(range(len(factors)), factors, rotation=45, ha="right")
    ax.set_yticks(range(len(listed)), [f"block {b}" for b in listed])
    fig.colorbar(im, ax=ax, label="share of the block's importance")
    return figure_png(fig)


def write_factor_report(path: str, title: str, figures: dict[str, Any]) -> None:
    """Write the factor-analysis report (HTML, and its JSON next to it) atomically.

    Args:
        path: HTML path.
        title: Report title.
        figures: With ``importance`` and/or ``collinearity`` figures.
    """
    sections = factor_sections(figures.get("importance"), figures.get("collinearity"))
    keep: dict[str, Any] = {k: figures[k] for k in ("importance", "collinearity") if k in figures}
    write_report(path, html_report(title, sections), keep)
