"""The training report of a susceptibility model (``trainsusceptibility`` ``OUTPUT_REPORT``).

What a reviewer of the model asks first: which method, on which factors, with which
blocks and K, how well it does on blocks it has not seen (leave-blocks-out
cross-validation) against random cross-validation, how many blocks could be adapted,
and what the blocks look like on the terrain. The numbers come from the job's figures
and from the model file just written (its JSON metadata); shares are in per cent and
AUCs on their 0 to 1 scale, as in every Slidewise report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slidewise.engine.core.report import (
    Image,
    Report,
    Section,
    Table,
    figure_png,
    new_figure,
    provenance,
    write_report,
)


def cv_image(cv: dict[str, Any]) -> Image | None:
    """Leave-blocks-out and random cross-validated AUC (mean ± sd) as bars."""
    names = [("spatial", "Leave blocks out"), ("random", "Random folds")]
    shown = [
        (label, cv[f"{k}_auc_mean"], cv.get(f"{k}_auc_sd") or 0.0)
        for k, label in names
        if cv.get(f"{k}_auc_mean") is not None
    ]
    if not shown:
        return None
    fig = new_figure(5.0, 3.6)
    ax = fig.add_subplot()
    labels, means, sds = zip(*shown, strict=True)
    ax.bar(labels, means, yerr=sds, capsize=6, color=["C0", "C7"][: len(shown)])
    for x, (mean, sd) in enumerate(zip(means, sds, strict=True)):
        ax.text(x, min(1.0, mean + sd) + 0.02, f"{mean:.3f} ± {sd:.3f}", ha="center", fontsize=9)
    ax.axhline(0.5, color="grey", ls="--", lw=1, label="random guess")
    ax.set(ylabel="ROC-AUC (0 to 1)", ylim=(0, 1.08), title=f"{cv.get('folds')}-fold CV")
    ax.legend(loc="lower right")
    data = {label: {"auc_mean": m, "auc_sd": s} for label, m, s in shown}
    return Image(figure_png(fig), "Cross-validated AUC (mean ± sd over folds)", "", "cv", data)


def blocks_image(block_raster: str, model: str) -> Image | None:
    """The blocks over a hillshade of the stack's elevation factor (when it has one)."""
    from slidewise.engine.imagery.thumbnails import (
        hillshade,
        read_on_grid,
        read_overview,
        zones_thumbnail,
    )
    from slidewise.engine.susceptibility.evaluation_map import elevation_in_stack

    if not Path(block_raster).is_file():
        return None
    zones = read_overview(block_raster)
    elevation = elevation_in_stack(model)
    shade = hillshade(read_on_grid(*elevation, zones)) if elevation else None
    png, data = zones_thumbnail(zones, shade, "Terrain blocks")
    return Image(png, f"Blocks of {Path(block_raster).name}", key="blocks", data=data)


def block_rows(figures: dict[str, Any]) -> list[list[Any]]:
    """How the blocks were used: with samples, adapted, fallback, one class."""
    rows = [["Blocks holding samples", figures.get("blocks_with_samples")]]
    if "adapted_blocks" in figures:
        rows += [
            ["Blocks with their own adapted model", len(figures["adapted_blocks"])],
            [
                "Blocks using the meta-learned start (too few samples)",
                len(figures.get("fallback_blocks") or {}),
            ],
            ["Blocks adapted on one class only", len(figures.get("one_class_blocks") or {})],
        ]
    mix = figures.get("hybrid_mix")
    if mix:
        rows += [
            [
                "Hybrid: weight of the adapted MLP's logit (chosen on the training blocks)",
                mix["weight"],
            ],
            ["Hybrid: global model mixed in (weight 1 - the MLP's)", mix["global"]],
        ]
    return [r for r in rows if r[1] is not None]


def calibration_section(calibration: dict[str, Any] | None) -> Section | None:
    """The calibration fitted at training: method, scores before and after, reliability.

    Args:
        calibration: The job's ``calibration`` figures (``None``: not calibrated); the
            reliability diagram is read from the JSON of its ``report``.
    """
    from slidewise.engine.susceptibility.calibration_report import LABELS, reliability_png

    if not calibration:
        return None
    method = str(calibration["method"])
    rows: list[list[Any]] = [
        ["Calibration", LABELS.get(method, method)],
        ["Out-of-block predictions it was fitted on", calibration.get("samples")],
        [
            "Brier score, raw → calibrated (lower is better)",
            f"{calibration['brier_before']:.3f} → {calibration['brier_after']:.3f}",
        ],
        [
            "Expected calibration error, raw → calibrated",
            f"{calibration['ece_before']:.3f} → {calibration['ece_after']:.3f}",
        ],
    ]
    report = Path(str(calibration.get("report") or ""))
    text = [
        "Every labelled sample predicted by a model that did not see its block, scored "
        "cross-fitted. Probabilities are calibrated to the landslide share of the training "
        "samples: read them as relative susceptibility. "
        + (f"All methods compared: {report.name}, next to the model." if report.name else "")
    ]
    images = []
    numbers = report.with_suffix(".json")
    if report.name and numbers.is_file():
        figures = json.loads(numbers.read_text(encoding="utf-8"))
        images.append(
            Image(
                reliability_png(figures, method),
                "Reliability of the out-of-block predictions (10 bins)",
                key="reliability",
                data={m: figures[m]["reliability"] for m in ("none", method) if m in figures},
            )
        )
    table = Table(["Item", "Value"], rows)
    return Section("Calibration", text=text, tables=[table], images=images, key="calibration")


def training_report(
    model: str, figures: dict[str, Any], inputs: dict[str, str | None], block_raster: str = ""
) -> Report:
    """The report of one training run.

    Args:
        model: The model file just written.
        figures: The job's figures (method, samples, blocks, cv, train_auc, seconds).
        inputs: Input label -> path, for the hashes.
        block_raster: The block raster used (empty: none, e.g. k-means blocks of a table).
    """
    from slidewise.engine.core.modelsummary import model_summary

    samples = figures.get("samples") or {}
    cv = figures.get("cv") or {}
    report = Report(
        "Landslide susceptibility model training",
        summary=[
            (
                "Landslide / non-landslide samples",
                f"{samples.get('landslides')} / {samples.get('non_landslides')}",
            ),
            (
                "Training AUC (0 to 1; optimistic, on the training samples)",
                figures.get("train_auc"),
            ),
            ("Training time (s)", round(figures["seconds"]) if figures.get("seconds") else None),
        ],
        method=model_summary(model),
        provenance=provenance({**inputs, "OUTPUT (model)": model}),
    )
    image = cv_image(cv)
    text = [
        "Leave-blocks-out CV holds whole blocks out: it measures the model on terrain it "
        "has not seen, the honest figure for a map; random CV mixes neighbours of the "
        "training samples into the test folds and reads higher."
    ]
    rows = [
        ["Folds", cv.get("folds")],
        ["Shots (K) at adaptation in CV", cv.get("shots")],
        ["Leave-blocks-out folds scored", cv.get("spatial_folds_scored")],
    ]
    report.add(
        Section(
            "Cross-validation",
            text=text if cv else ["Cross-validation was off (CV_FOLDS 0)."],
            tables=[Table(["Item", "Value"], [r for r in rows if r[1] is not None])] if cv else [],
            images=[image] if image else [],
            key="cv",
        )
    )
    calibration = calibration_section(figures.get("calibration"))
    if calibration is not None:
        report.add(calibration)
    blocks = blocks_image(block_raster, model) if block_raster else None
    report.add(
        Section(
            "Blocks",
            tables=[Table(["Item", "Value"], block_rows(figures))],
            images=[blocks] if blocks else [],
            key="blocks",
        )
    )
    return report


def write_training_report(path: str, report: Report, figures: dict[str, Any]) -> None:
    """Write the HTML and a JSON of the report's figures and the job's figures next to it."""
    numbers = {"training": figures, "report": report.figures()}
    write_report(path, report.html(), numbers, Path(path).with_suffix(".json"))
