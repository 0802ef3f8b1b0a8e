"""The calibration report of a trained susceptibility model: reliability diagram and scores.

Written next to the model file as ``<model>_calibration.html`` (self-contained,
figures embedded) with the same numbers in ``<model>_calibration.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from slidewise.engine.susceptibility.calibration import CALIBRATIONS, ECE_BINS

COLUMNS = (
    "Probability",
    "Brier score",
    f"ECE ({ECE_BINS} bins)",
    "Samples below 0.05 or above 0.95 (%)",
)
LABELS = {"none": "raw (uncalibrated)", "platt": "Platt scaling", "isotonic": "isotonic"}


def report_path(model: str) -> Path:
    """Where the calibration report of the model file ``model`` goes."""
    path = Path(model)
    return path.with_name(path.stem + "_calibration.html")


def reliability_png(figures: dict[str, Any], chosen: str) -> bytes:
    """Reliability diagram: landslide share against mean probability per bin."""
    from slidewise.engine.core.report import figure_png, new_figure

    fig = new_figure(5.5, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="#888", linestyle="--", linewidth=1, label="perfect calibration")
    for method, colour in zip(CALIBRATIONS[::-1], ("#d62728", "#2ca02c", "#1f77b4"), strict=True):
        rel = figures[method]["reliability"]
        mean_p, share = np.asarray(rel["mean_p"]), np.asarray(rel["share"])
        ok = np.asarray(rel["count"]) > 0
        width = 2.5 if method == chosen else 1.2
        label = f"{LABELS[method]} (ECE {figures[method]['ece']:.3f})"
        ax.plot(mean_p[ok], share[ok], marker="o", color=colour, linewidth=width, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("Predicted probability of landslide (bin mean)")
    ax.set_ylabel("Share of landslides among the samples")
    ax.set_title(f"Reliability, out-of-block predictions ({ECE_BINS} bins)")
    ax.legend(loc="upper left", fontsize=8)
    return figure_png(fig)


def write_calibration_report(model: str, figures: dict[str, Any], chosen: str) -> Path:
    """Write the HTML report (and its JSON) next to ``model``; returns the HTML path."""
    from slidewise.engine.core.report import (
        Image,
        Percent,
        Section,
        Table,
        html_report,
        provenance,
        write_report,
    )

    rows = [
        [
            LABELS[m] + (" (used)" if m == chosen else ""),
            figures[m]["brier"],
            figures[m]["ece"],
            Percent(100.0 * figures[m]["extreme_share"], 1),
        ]
        for m in CALIBRATIONS[::-1]
    ]
    text = [
        f"Every one of the {figures['samples']} labelled samples was predicted by a model "
        "trained without its block (leave-blocks-out folds; meta models adapted to the other "
        "half of the block's samples). The calibrators are scored cross-fitted: the one that "
        "scores a fold was fitted on the other folds.",
        f"The model applies '{chosen}' at prediction. Probabilities are calibrated to the "
        "landslide share of the training samples.",
    ]
    sections = [
        Section(
            "Calibration",
            text=text,
            tables=[
                Table(
                    list(COLUMNS),
                    rows,
                    caption="Lower is better for the Brier score and the ECE.",
                )
            ],
            images=[Image(reliability_png(figures, chosen), "Reliability diagram")],
        )
    ]
    made = provenance({})
    footer = f"Made {made['date_utc']} (UTC) with Slidewise {made['slidewise_version']}"
    path = report_path(model)
    write_report(
        path, html_report("Susceptibility model calibration", sections, footer=footer), figures
    )
    return path
