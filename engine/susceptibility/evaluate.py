"""The ``evaluatesusceptibility`` job: validate a landslide susceptibility map.

Inputs are a probability-of-landslide raster (0-1) and a validation inventory
(points or polygons, vector file or CSV table). The job reports

* point metrics with scikit-learn: ROC-AUC, accuracy, precision, recall, F1 and
  Cohen's kappa at a probability threshold;
* the prediction-rate curve (validation landslides) and, with a training
  inventory, the success-rate curve: cumulative share of landslides against
  cumulative share of area ranked by decreasing susceptibility, with the area
  under each curve;
* per-class area share, landslide share and frequency ratio of the classed map
  (classes 1..n from :mod:`slidewise.engine.susceptibility.classify`, or a classed raster);

as a self-contained HTML report with a JSON of all numbers next to it.

The pieces: inventories are read and located on the raster in
:mod:`.evaluation_inventory`, the raster is read by windows in
:mod:`.evaluation_rasters`, the statistics are computed in
:mod:`.evaluation_statistics` and the report is drawn in :mod:`.evaluation_report`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import rasterio

from slidewise.contract.spec import AlgorithmSpec
from slidewise.contract.specs.evaluatesusceptibility import SPEC
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.core.params import JobParams
from slidewise.engine.geo.raster import RasterInfo, open_raster, same_grid
from slidewise.engine.susceptibility.evaluation_inventory import (
    Inventory,
    InventoryColumns,
    draw_negatives,
    load_inventory,
)
from slidewise.engine.susceptibility.evaluation_rasters import (
    RasterSummary,
    class_values,
    classed_counts,
    classed_max,
    probability_histogram,
    read_pixels,
)
from slidewise.engine.susceptibility.evaluation_report import (
    ReportInputs,
    build_evaluation_report,
    report_json,
)
from slidewise.engine.susceptibility.evaluation_statistics import (
    METRIC_NAMES,
    RateCurve,
    class_statistics,
    rate_curve,
    roc_points,
    threshold_metrics,
)

RANGE_TOLERANCE = 1e-6
#: Random non-landslides lie farther than this many pixel widths from landslides when
#: BUFFER is 0.
DEFAULT_BUFFER_PIXELS = 3
REPORT_SUFFIXES = (".html", ".htm")


@dataclass(frozen=True)
class EvaluateParams(JobParams):
    """Parameters of the ``evaluatesusceptibility`` job (see :func:`run_evaluate`).

    Fields are the lower-case names of :data:`SPEC`'s parameters. An unset ``SEED``
    reads as ``None`` and :func:`read_options` replaces it with the run's seed.
    """

    SPEC: ClassVar[AlgorithmSpec] = SPEC

    input: str
    inventory: str
    label_field: str | None
    x_field: str
    y_field: str
    training: str | None
    classed: str | None
    classification: str
    n_classes: int
    threshold: float
    negative_ratio: float
    buffer: float
    seed: int
    output: str
    model: str | None = None
    dem: str | None = None

    @property
    def columns(self) -> InventoryColumns:
        """The label and coordinate columns of the inventories."""
        label = self.label_field or ""
        return InventoryColumns(
            label=label or "label",
            label_given=bool(label) and label.lower() != "label",
            x=self.x_field,
            y=self.y_field,
        )


def read_options(params: dict[str, Any], run_seed: int) -> EvaluateParams:
    """Validated parameters; an unset SEED becomes the run's seed.

    Raises:
        InputError: a refused parameter, or an OUTPUT that is not an .html file.
    """
    options = EvaluateParams.from_params(params)
    if options.seed is None:
        options = dataclasses.replace(options, seed=run_seed)
    if Path(options.output).suffix.lower() not in REPORT_SUFFIXES:
        raise InputError(
            f"OUTPUT '{options.output}' must be an .html file (the JSON is written next to it)."
        )
    return options


@dataclass
class Run:
    """What every step of one evaluation uses: options, context, the open raster, notes.

    Attributes:
        options: The job's parameters.
        ctx: The job context.
        src: The open probability raster.
        info: Its grid.
        notes: Log lines that also go into the report.
    """

    options: EvaluateParams
    ctx: JobContext
    src: rasterio.io.DatasetReader
    info: RasterInfo
    notes: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        """Log ``message`` and keep it for the report."""
        self.notes.append(message)
        self.ctx.log(message)

    def note_all(self, lines: list[str]) -> None:
        """Log lines that start in lower case, capitalised."""
        for line in lines:
            self.note(line[0].upper() + line[1:])


@dataclass
class Samples:
    """The validation samples of the point metrics.

    Attributes:
        y_true: 1 = landslide, 0 = not.
        scores: Probability at each sample.
        negatives: Where the non-landslides come from, in words.
    """

    y_true: np.ndarray
    scores: np.ndarray
    negatives: str


@dataclass
class ClassCounts:
    """Classes of the map and of the landslides.

    Attributes:
        n_classes: Number of classes.
        breaks: Class edges computed here (``None`` with a classed raster).
        area: Pixels per class (index 0 = class 1).
        landslides: Class of each landslide (0: on an unclassed pixel).
        text: How the classes were made, in words.
    """

    n_classes: int
    breaks: np.ndarray | None
    area: np.ndarray
    landslides: np.ndarray
    text: str


@dataclass
class Evaluation:
    """Everything an evaluation found, before it is written."""

    inventory: Inventory
    summary: RasterSummary
    samples: Samples
    metrics: dict[str, Any]
    curves: dict[str, RateCurve]
    classes: ClassCounts
    table: list[dict[str, Any]]
    notes: list[str]


def open_inputs(options: EvaluateParams, ctx: JobContext) -> tuple[Path, RasterInfo]:
    """Check the outputs can be written and the rasters opened.

    Returns:
        ``(JSON path, grid of INPUT)``.

    Raises:
        InputError: an unwritable output, an unreadable raster, or a CLASSED raster on
            another grid.
    """
    check_writable(options.output)
    json_path = Path(options.output).with_suffix(".json")
    check_writable(json_path)
    info = open_raster(options.input, "probability raster (INPUT)")
    if options.dem:
        open_raster(options.dem, "elevation raster (DEM)")
    if options.model:
        from slidewise.engine.core.modelfile import read_metadata

        read_metadata(options.model)  # a bad MODEL fails before the raster passes
    if info.count > 1:
        ctx.warn(f"INPUT has {info.count} bands: band 1 is evaluated as the probability.")
    if options.classed:
        classed_info = open_raster(options.classed, "classed raster (CLASSED)")
        if not same_grid(info, classed_info):
            raise InputError(
                f"The classed raster '{Path(options.classed).name}' is not on the grid of INPUT "
                "(CRS, size and pixel size must match): classify INPUT itself or leave "
                "CLASSED empty to compute the classes here."
            )
    return json_path, info


def summarise_raster(run: Run) -> RasterSummary:
    """Histogram and value sample of the probability raster, checked to be probabilities.

    Raises:
        InputError: no valid pixel, or values outside 0..1.
    """
    p, info = run.options, run.info
    summary = probability_histogram(run.src, seed=p.seed, progress=run.ctx.stage(5, 45))
    name = Path(p.input).name
    if summary.n_valid == 0:
        raise InputError(
            f"The probability raster '{name}' has no valid pixel: choose the prediction output."
        )
    if summary.vmin < -RANGE_TOLERANCE or summary.vmax > 1 + RANGE_TOLERANCE:
        raise InputError(
            f"The raster '{name}' holds values from {summary.vmin:g} to "
            f"{summary.vmax:g}, not probabilities 0..1: use the probability output of "
            "the susceptibility prediction, or rescale it to 0..1."
        )
    run.note(
        f"Probability raster: {info.width} x {info.height} pixels, {summary.n_valid} valid "
        f"({100 * summary.n_valid / summary.n_pixels:.1f} %), values {summary.vmin:.4f} to "
        f"{summary.vmax:.4f}."
    )
    return summary


def validation_samples(run: Run, inv: Inventory, summary: RasterSummary) -> Samples:
    """The inventory's samples, plus random non-landslides when it has none.

    Raises:
        InputError: no non-landslide could be drawn.
    """
    y_true, scores = inv.labels.astype(np.int8), inv.values
    if inv.n_negative > 0:
        return Samples(y_true, scores, "from the inventory")
    p, info = run.options, run.info
    n_neg = max(1, round(p.negative_ratio * inv.n_positive))
    buffer = p.buffer if p.buffer > 0 else DEFAULT_BUFFER_PIXELS * max(info.res)
    valid_fraction = summary.n_valid / summary.n_pixels
    rows, _, vals = draw_negatives(run.src, info, inv, n_neg, buffer, valid_fraction, p.seed)
    if rows.size == 0:
        raise InputError(
            "No non-landslide sample could be drawn: the valid area outside BUFFER "
            f"({buffer:g} map units) around the landslides is empty. Lower BUFFER or "
            "give an inventory with non-landslides (label 0)."
        )
    if rows.size < n_neg:
        run.ctx.warn(f"Only {rows.size} of {n_neg} random non-landslide samples could be drawn.")
    negatives = (
        f"{rows.size} non-landslide samples drawn at random (seed {p.seed}) from the "
        f"valid area farther than {buffer:g} map units from any landslide"
    )
    run.note(negatives[0].upper() + negatives[1:] + ".")
    y_true = np.concatenate([y_true, np.zeros(rows.size, dtype=np.int8)])
    return Samples(y_true, np.concatenate([scores, vals]), negatives)


def rate_curves(
    summary: RasterSummary, inv: Inventory, training: Inventory | None
) -> dict[str, RateCurve]:
    """Success-rate (training landslides, when given) and prediction-rate curves."""
    curves: dict[str, RateCurve] = {}
    if training is not None:
        curves["success"] = rate_curve(
            summary.counts, summary.edges, training.values[training.labels == 1]
        )
    curves["prediction"] = rate_curve(summary.counts, summary.edges, inv.values[inv.labels == 1])
    return curves


def computed_classes(run: Run, landslide_values: np.ndarray, summary: RasterSummary) -> ClassCounts:
    """Classes from breaks of the probability values (CLASSIFICATION, N_CLASSES)."""
    from slidewise.engine.susceptibility.classify import apply_breaks, class_breaks

    p = run.options
    breaks = class_breaks(summary.sample, p.n_classes, p.classification, seed=p.seed)
    area = classed_counts(run.src, None, breaks, p.n_classes, run.ctx.stage(50, 85))
    exact = summary.sample.size == summary.n_valid
    pixels = "valid pixels." if exact else f"a random sample of {summary.sample.size} valid pixels."
    text = f"{p.n_classes} classes by {p.classification.replace('_', ' ')} breaks of the " + pixels
    return ClassCounts(p.n_classes, breaks, area, apply_breaks(landslide_values, breaks), text)


def given_classes(run: Run, rows: np.ndarray, cols: np.ndarray) -> ClassCounts:
    """Classes of the CLASSED raster, at every pixel and at the landslides (``rows``, ``cols``).

    Raises:
        InputError: classes above 255 or values that are not classes.
    """
    p = run.options
    assert p.classed is not None
    with rasterio.open(p.classed) as csrc:
        top = classed_max(csrc)
        n_classes = max(p.n_classes, top)
        if n_classes > 255:
            raise InputError("The classed raster has classes above 255: give classes 1..N.")
        if top > p.n_classes:
            run.ctx.warn(f"CLASSED has classes up to {top}: using {top} classes.")
        area = classed_counts(run.src, csrc, None, n_classes, run.ctx.stage(50, 85))
        landslides = class_values(read_pixels(csrc, rows, cols), n_classes, p.classed)
        if np.any(landslides == 0):
            run.note(f"{int(np.sum(landslides == 0))} landslides fall on unclassed pixels.")
    text = f"{n_classes} classes from the classed raster '{Path(p.classed).name}'."
    return ClassCounts(n_classes, None, area, landslides, text)


def class_table(counts: ClassCounts) -> list[dict[str, Any]]:
    """Area share, landslide share, frequency ratio (and upper break) per class."""
    from slidewise.engine.susceptibility.classify import class_names

    ls = counts.landslides
    ls_counts = np.bincount(ls[ls > 0], minlength=counts.n_classes + 1)[1:]
    classes = class_statistics(counts.area, ls_counts, class_names(counts.n_classes))
    if counts.breaks is not None:
        for c, upper in zip(classes, counts.breaks[1:], strict=True):
            c["upper_break"] = float(upper)
    return classes


def evaluate_map(run: Run) -> Evaluation:
    """Inventories, raster pass, point metrics, rate curves and classes of one evaluation."""
    p, ctx = run.options, run.ctx
    # Inventories first: bad inventories fail fast, before the raster passes.
    inv = load_inventory(
        p.inventory, run.src, run.info, p.columns, "validation inventory", ctx.warn
    )
    run.note_all(inv.notes)
    training = None
    if p.training:
        training = load_inventory(
            p.training, run.src, run.info, p.columns, "training inventory", ctx.warn
        )
        run.note_all(training.notes)
    ctx.progress(5)
    summary = summarise_raster(run)
    samples = validation_samples(run, inv, summary)
    metrics = threshold_metrics(samples.y_true, samples.scores, p.threshold)
    ctx.progress(50)
    curves = rate_curves(summary, inv, training)
    pos = inv.labels == 1
    if p.classed:
        counts = given_classes(run, inv.rows[pos], inv.cols[pos])
    else:
        counts = computed_classes(run, inv.values[pos], summary)
    table = class_table(counts)
    return Evaluation(inv, summary, samples, metrics, curves, counts, table, run.notes)


def evaluation_figures(p: EvaluateParams, ev: Evaluation) -> dict[str, Any]:
    """The figures of the report and of the JSON (without curves and histogram)."""
    inv, breaks = ev.inventory, ev.classes.breaks
    return {
        "inputs": {
            "INPUT": p.input,
            "INVENTORY": p.inventory,
            "TRAINING": p.training,
            "CLASSED": p.classed,
            "inventory type": inv.kind,
            "validation features": inv.n_features,
            "dropped outside raster": inv.dropped_outside,
            "dropped on nodata": inv.dropped_nodata,
            "dropped without label": inv.dropped_label,
            "valid pixels": ev.summary.n_valid,
            "seed": p.seed,
        },
        "notes": ev.notes,
        "negatives": ev.samples.negatives,
        "metrics": ev.metrics,
        "prediction_rate_auc": ev.curves["prediction"].auc,
        "success_rate_auc": ev.curves["success"].auc if "success" in ev.curves else None,
        "classing": ev.classes.text,
        "class_breaks": breaks.tolist() if breaks is not None else None,
        "classes": ev.table,
    }


def write_outputs(
    p: EvaluateParams, json_path: Path, figures: dict[str, Any], ev: Evaluation
) -> None:
    """Write the HTML report and the JSON of every number."""
    from slidewise.engine.core.report import write_report

    roc = roc_points(ev.metrics, ev.samples.y_true, ev.samples.scores)
    report = build_evaluation_report(figures, ev.curves, roc, report_inputs(p, ev))
    histogram = (ev.summary.edges, ev.summary.counts)
    numbers = report_json(figures, ev.curves, roc, histogram) | {"report": report.figures()}
    write_report(p.output, report.html(), numbers, json_path)


def report_inputs(p: EvaluateParams, ev: Evaluation) -> ReportInputs:
    """Samples, map of classes over a hillshade, model summary and provenance of the report."""
    from slidewise.engine.core.modelsummary import model_summary
    from slidewise.engine.core.report import provenance
    from slidewise.engine.susceptibility.evaluation_map import (
        elevation_in_stack,
        susceptibility_map,
    )

    elevation = (p.dem, 1) if p.dem else (elevation_in_stack(p.model) if p.model else None)
    n_classes = ev.classes.n_classes
    image = susceptibility_map(p.input, p.classed, ev.classes.breaks, n_classes, elevation)
    names = ("INPUT", "INVENTORY", "TRAINING", "CLASSED", "MODEL", "DEM")
    paths = (p.input, p.inventory, p.training, p.classed, p.model, p.dem)
    return ReportInputs(
        y_true=ev.samples.y_true,
        scores=ev.samples.scores,
        map_image=image,
        model_rows=model_summary(p.model) if p.model else [],
        provenance=provenance(dict(zip(names, paths, strict=True))),
    )


def job_result(p: EvaluateParams, json_path: Path, ev: Evaluation, ctx: JobContext) -> JobResult:
    """Log the main figures and return the outputs, figures and inputs."""
    metrics = ev.metrics
    for key in METRIC_NAMES:
        ctx.log(f"{key}: {metrics[key]:.4f}")
    for name, curve in ev.curves.items():
        ctx.log(f"{name}-rate AUC: {curve.auc:.4f}")
    figures = {
        **{k: metrics[k] for k in METRIC_NAMES},
        "threshold": p.threshold,
        "n_positive": metrics["n_positive"],
        "n_negative": metrics["n_negative"],
        "prediction_rate_auc": ev.curves["prediction"].auc,
        "success_rate_auc": ev.curves["success"].auc if "success" in ev.curves else None,
        "classes": ev.table,
    }
    return JobResult(
        outputs={"OUTPUT": str(p.output), "JSON": str(json_path)},
        figures=figures,
        inputs=[p.input, p.inventory, *(x for x in (p.training, p.classed, p.model, p.dem) if x)],
    )


def run_evaluate(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Evaluate a landslide susceptibility (probability) map against an inventory.

    Parameters (declared in :mod:`slidewise.contract.specs.evaluatesusceptibility`):
        INPUT (str, required): probability-of-landslide raster (band 1, values 0..1,
            nodata or NaN where there is no prediction).
        INVENTORY (str, required): validation inventory: points or polygons (GeoPackage,
            Shapefile, GeoJSON...) or a CSV/XLSX table with X/Y columns. With a label
            column, 1 = landslide and 0 = not landslide; without one, every feature is a
            landslide and non-landslide samples are drawn at random from the valid area
            outside BUFFER. Polygons contribute every pixel whose centre is inside.
        LABEL_FIELD (str, optional): label column, matched case-insensitively; unset (or
            "label"), the names label, lslpts, landslide, class and target are tried, and
            no match means "all landslides". Any other LABEL_FIELD must exist.
        X_FIELD (str, default "x"): x (easting) column of a CSV/XLSX inventory, case-insensitive.
        Y_FIELD (str, default "y"): y (northing) column of a CSV/XLSX inventory. Table
            coordinates are taken to be in the raster's CRS; vector inventories in another
            CRS are reprojected.
        TRAINING (str, optional): training inventory (same formats, LABEL_FIELD, X_FIELD,
            Y_FIELD); its landslides give the success-rate curve.
        CLASSED (str, optional): classed susceptibility raster (classes 1..N, 0/nodata =
            none) on the grid of INPUT; used instead of computing class breaks.
        CLASSIFICATION (str, default "quantile"): class breaks when CLASSED is not
            given: "quantile", "natural_breaks" or "equal_interval".
        N_CLASSES (int, default 5, 2 to 255): number of classes (5: very low ... very high).
        THRESHOLD (float, default 0.5, 0 to 1): probability at or above which a sample is
            predicted a landslide (accuracy, precision, recall, F1, kappa).
        NEGATIVE_RATIO (float, default 1.0): random non-landslide samples per landslide
            when the inventory has no non-landslides.
        BUFFER (float, default 0 = 3 pixel widths): minimum distance, in raster CRS units,
            of random non-landslide samples from any landslide.
        SEED (int, default: the run's seed): seed of random negatives and samples.
        OUTPUT (str, required): HTML report path (.html); a JSON of all numbers and
            curves is written next to it with the suffix .json.

    Returns:
        Outputs OUTPUT (HTML) and JSON; figures: metrics, rate-curve AUCs, class table.
    """
    options = read_options(params, ctx.options.seed)
    json_path, info = open_inputs(options, ctx)
    with rasterio.open(options.input) as src:
        evaluation = evaluate_map(Run(options, ctx, src, info))
    figures = evaluation_figures(options, evaluation)
    ctx.progress(88)
    write_outputs(options, json_path, figures, evaluation)
    return job_result(options, json_path, evaluation, ctx)
