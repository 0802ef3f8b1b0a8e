"""The ``evaluatemapping`` job: compare a landslide map with a reference.

Pixel figures (precision, recall, F1, IoU, MCC of the landslide class) come
from a :class:`~slidewise.engine.imagery.segmetrics.Confusion` summed strip by strip;
object figures come from connected components streamed across strips
(:class:`~slidewise.engine.geo.polygons.StripLabeller`), so any raster size works.
The reference is read on the prediction's grid: a raster on another grid is
warped with nearest neighbour (:class:`~slidewise.engine.geo.align.AlignedStack`),
polygons are rasterised window by window.

Two kinds of reference:

* ``mask``: a landslide mask or outline polygons. Besides the pixel figures:
  the share of reference objects overlapped by predicted landslide pixels and
  the share of predicted objects that touch a reference landslide. Objects
  are 4-connected components of the evaluated pixels (valid in both rasters,
  not ignored).
* ``points``: labels only around inventory points, such as the Chattogram
  label rasters (0 = unlabelled, 1 = non-landslide, 2 = landslide: use
  ``LANDSLIDE_VALUES=2``, ``IGNORE_VALUES=0``). Pixel figures are computed on
  the labelled pixels only; the hit rate is the share of landslide blobs with
  any predicted landslide pixel and the false-alarm rate the share of
  non-landslide blobs with any.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from slidewise.contract.specs.evaluatemapping import SPEC as EVALUATE_SPEC
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.outputs import atomic_output, check_writable
from slidewise.engine.core.params import JobParams
from slidewise.engine.core.report import Report
from slidewise.engine.geo.polygons import Components, StripLabeller
from slidewise.engine.geo.raster import RasterInfo, open_raster, read_masked
from slidewise.engine.imagery.segmetrics import Confusion
from slidewise.engine.mapping.evaluation_report import ReportCollector, mapping_report

STRIP_PIXELS = 4_000_000
"""Pixels per strip read at once (full raster width)."""


@dataclass(frozen=True)
class EvaluateMappingParams(JobParams):
    """Parameters of the ``evaluatemapping`` job (see ``contract/specs/evaluatemapping.py``).

    Attributes:
        input: Landslide probability raster (from ``maplandslides``) or a 0/1 mask
            raster; nodata/NaN pixels are skipped.
        reference: Reference labels: a label raster (any grid: warped to the
            prediction grid with nearest neighbour) or a polygon layer of landslide
            outlines (``mask`` only; any CRS).
        reference_kind: ``mask`` (complete landslide mask or outlines: pixel and
            object figures) or ``points`` (labels only in blobs around inventory
            points: pixel figures on labelled pixels, blob hit rate and false-alarm rate).
        threshold: Prediction values at or above it are landslide (for a 0/1 mask
            any value in (0, 1] works); ``None``: the threshold a ``maplandslides``
            probability raster's mask was cut at (:func:`map_threshold`), else 0.5.
        landslide_values: Reference raster values meaning landslide, comma
            separated (Chattogram labels: 2).
        ignore_values: Reference raster values not evaluated, comma separated
            (Chattogram labels: 0 = unlabelled). All other valid values are "not
            landslide".
        output: The figures as JSON.
        output_html: The same as an HTML report (optional).
    """

    SPEC = EVALUATE_SPEC

    input: str = ""
    reference: str = ""
    reference_kind: str = "mask"
    threshold: float | None = None
    landslide_values: str = "1"
    ignore_values: str | None = None
    output: str = ""
    output_html: str | None = None


def _strip_rows(width: int) -> int:
    return max(16, min(1024, STRIP_PIXELS // max(1, width)))


def reference_wording(message: str, map_path: str) -> str:
    """The alignment's message in the words of an evaluation: the file is the reference
    raster (not a "factor raster"), the grid is the map's."""
    return message.replace("The factor raster", "The reference raster").replace(
        "the reference grid", f"the grid of the map '{Path(map_path).name}'"
    )


class _Reference:
    """Reference labels on the prediction grid, read window by window."""

    def __init__(
        self,
        path: str,
        info: RasterInfo,
        landslide: tuple[int, ...],
        ignore: tuple[int, ...],
        stack: ExitStack,
    ) -> None:
        self.landslide = np.asarray(landslide, dtype=np.float64)
        self.ignore = np.asarray(ignore, dtype=np.float64)
        self.polygons: Callable[[Window], np.ndarray] | None = None
        self.aligned: Any = None
        self.warped = False
        from slidewise.engine.mapping.apply import is_raster_path

        if is_raster_path(path):
            from slidewise.engine.geo.align import AlignedStack, FactorSource, GridSpec

            open_raster(path, what="reference raster")
            try:
                self.aligned = AlignedStack(
                    [FactorSource(path, band=1, name="reference", kind="categorical")],
                    reference=GridSpec.from_info(info),
                )
            except InputError as exc:
                raise InputError(reference_wording(str(exc), info.path)) from None
            self.warped = bool(self.aligned.same_grid_report())
            stack.enter_context(self.aligned)
        else:
            from slidewise.engine.mapping.apply import polygon_window_mask

            self.polygons = polygon_window_mask(path, info, what="reference")

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(landslide, other, valid)``: landslide pixels, labelled non-landslide, evaluable."""
        if self.polygons is not None:
            slide = self.polygons(window)
            valid = np.ones(slide.shape, dtype=bool)
            return slide, ~slide, valid
        data, valid = self.aligned.read(window)
        values = data[0]
        slide = valid & np.isin(values, self.landslide)
        ignored = valid & np.isin(values, self.ignore)
        valid &= ~ignored
        return slide, valid & ~slide, valid


def _values(value: str | None, name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    from slidewise.engine.imagery.labels import parse_values

    parsed = parse_values(value, name)
    return default if parsed is None else parsed


@dataclass
class _Tally:
    """Pixel counts and objects, added strip by strip.

    Objects: the first labeller holds the reference landslides, the second the
    predicted landslides (``mask``) or the non-landslide blobs (``points``); each
    object's ``hit`` maximum says whether it overlaps what it must.
    """

    kind: str
    width: int
    confusion: Confusion = field(default_factory=Confusion)
    first: StripLabeller = field(init=False)
    second: StripLabeller = field(init=False)
    firsts: list[Components] = field(default_factory=list)
    seconds: list[Components] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.first = StripLabeller(self.width, maxima=("hit",))
        self.second = StripLabeller(self.width, maxima=("hit",))

    def add(
        self,
        top: int,
        pred: np.ndarray,
        slide: np.ndarray,
        other: np.ndarray,
        evaluated: np.ndarray,
    ) -> None:
        """Count one strip starting at row ``top``."""
        self.confusion.update(pred, slide, evaluated)
        pred_eval = (pred & evaluated).astype(np.float64)
        self.firsts.append(self.first.add(top, slide & evaluated, {"hit": pred_eval}))
        if self.kind == "points":
            self.seconds.append(self.second.add(top, other & evaluated, {"hit": pred_eval}))
        else:
            hit = (slide & evaluated).astype(np.float64)
            self.seconds.append(self.second.add(top, pred & evaluated, {"hit": hit}))

    def hits(self) -> tuple[np.ndarray, np.ndarray]:
        """Whether each object of the first and of the second kind was hit."""
        firsts = [*self.firsts, self.first.finish()]
        seconds = [*self.seconds, self.second.finish()]
        hits_a = np.concatenate([c.maxima["hit"] for c in firsts]) > 0
        hits_b = np.concatenate([c.maxima["hit"] for c in seconds]) > 0
        return hits_a, hits_b

    @property
    def evaluated(self) -> int:
        """Pixels evaluated."""
        c = self.confusion
        return c.tp + c.fp + c.fn + c.tn


def evaluate_rasters(
    prediction: str,
    reference: str,
    threshold: float = 0.5,
    kind: str = "mask",
    landslide_values: tuple[int, ...] = (1,),
    ignore_values: tuple[int, ...] = (),
    progress: Callable[[float], None] | None = None,
    collect: ReportCollector | None = None,
) -> dict[str, Any]:
    """Compare a prediction raster with a reference; see the module docstring.

    Args:
        prediction: Probability raster (landslide where >= ``threshold``) or 0/1
            mask raster; nodata and NaN pixels are not evaluated.
        reference: Label raster (any grid; warped with nearest neighbour) or
            polygon layer (``mask`` only).
        threshold: Probability threshold.
        kind: ``mask`` or ``points``.
        landslide_values: Reference raster values meaning landslide.
        ignore_values: Reference raster values not evaluated (e.g. unlabelled).
        progress: Called with the fraction done.
        collect: Gathers the report's threshold curves and outcome map, strip by strip.

    Returns:
        The figures (JSON-ready).

    Raises:
        InputError: unreadable inputs, overlapping value lists, a polygon layer
            for ``points``, or no pixel to evaluate.
    """
    import rasterio

    info = open_raster(prediction, what="prediction raster")
    _check_reference(reference, kind, landslide_values, ignore_values)
    tally = _Tally(kind, info.width)
    with ExitStack() as stack:
        ref = _Reference(reference, info, landslide_values, ignore_values, stack)
        src = stack.enter_context(rasterio.open(prediction))
        for window in _strips(info):
            data, pred_valid = read_masked(src, window=window, indexes=1)
            with np.errstate(invalid="ignore"):
                pred = pred_valid & (data[0] >= threshold)
            slide, other, ref_valid = ref.read(window)
            tally.add(int(window.row_off), pred, slide, other, pred_valid & ref_valid)
            if collect is not None:
                collect.add(int(window.row_off), data[0], slide, pred_valid & ref_valid)
            if progress is not None:
                progress((window.row_off + window.height) / info.height)
        warped = ref.warped
    if tally.evaluated == 0:
        raise InputError(
            "No pixel could be evaluated: the prediction and the reference do not overlap, "
            "or every reference pixel is nodata or in IGNORE_VALUES. Check the inputs and "
            "LANDSLIDE_VALUES / IGNORE_VALUES."
        )
    if tally.confusion.tp + tally.confusion.fn == 0:
        raise InputError(_no_landslide_message(reference, landslide_values))
    figures: dict[str, Any] = {
        "prediction": str(prediction),
        "reference": str(reference),
        "reference_kind": kind,
        "threshold": threshold,
        "landslide_values": list(landslide_values),
        "ignore_values": list(ignore_values),
        "reference_warped": warped,
    }
    return figures | _pixel_figures(tally.confusion) | _object_figures(kind, *tally.hits())


def _no_landslide_message(reference: str, landslide_values: tuple[int, ...]) -> str:
    """Why no reference landslide pixel was evaluated, with the values the reference has."""
    from slidewise.engine.mapping.apply import is_raster_path

    if not is_raster_path(reference):
        return (
            f"No landslide polygon of the reference '{Path(reference).name}' lies on a valid "
            "pixel of the map: recall and F1 cannot be measured. Check that the reference and "
            "the map cover the same area."
        )
    wanted = ", ".join(str(v) for v in landslide_values)
    found = ", ".join(f"{v:g}" for v in _reference_values(reference)) or "none (all nodata)"
    return (
        f"No pixel of the reference '{Path(reference).name}' has a value in LANDSLIDE_VALUES "
        f"({wanted}) where the map has data, so recall and F1 cannot be measured: check "
        f"LANDSLIDE_VALUES (and IGNORE_VALUES); values found in the reference: {found}."
    )


def _reference_values(reference: str, limit: int = 12) -> list[float]:
    """Up to ``limit`` distinct valid values of band 1 (read decimated to about 4 Mpx)."""
    import rasterio

    with rasterio.open(reference) as src:
        step = max(1, int(np.ceil(np.sqrt(src.width * src.height / STRIP_PIXELS))))
        shape = (max(1, src.height // step), max(1, src.width // step))
        data = src.read(1, out_shape=shape, masked=True)
    values = np.unique(np.ma.compressed(data).astype(np.float64))
    return [float(v) for v in values[np.isfinite(values)][:limit]]


def _check_reference(
    reference: str, kind: str, landslide_values: tuple[int, ...], ignore_values: tuple[int, ...]
) -> None:
    from slidewise.engine.mapping.apply import is_raster_path

    shared = set(landslide_values) & set(ignore_values)
    if shared:
        raise InputError(
            f"LANDSLIDE_VALUES and IGNORE_VALUES share {sorted(shared)}: a value is either "
            "landslide or ignored."
        )
    if not Path(reference).exists():
        raise InputError(f"The reference '{reference}' does not exist: check the path.")
    if kind == "points" and not is_raster_path(reference):
        raise InputError(
            "REFERENCE_KIND 'points' needs a label raster (labelled blobs around inventory "
            "points); for landslide polygons use REFERENCE_KIND 'mask'."
        )


def _strips(info: RasterInfo) -> Iterator[Window]:
    """Full-width windows of :func:`_strip_rows` rows, from the top."""
    rows = _strip_rows(info.width)
    for top in range(0, info.height, rows):
        yield Window(0, top, info.width, min(rows, info.height - top))


def _pixel_figures(confusion: Confusion) -> dict[str, Any]:
    c = confusion
    return {
        "evaluated_pixels": c.tp + c.fp + c.fn + c.tn,
        **c.as_dict(),
        "confusion_matrix": {
            "labels": ["not landslide", "landslide"],
            "rows": "reference",
            "columns": "prediction",
            "matrix": [[c.tn, c.fp], [c.fn, c.tp]],
        },
    }


def _object_figures(kind: str, hits_a: np.ndarray, hits_b: np.ndarray) -> dict[str, Any]:
    def rate(hits: np.ndarray) -> float | None:
        return float(hits.mean()) if hits.size else None

    if kind == "points":
        return {
            "landslide_blobs": int(hits_a.size),
            "landslide_blobs_hit": int(hits_a.sum()),
            "hit_rate": rate(hits_a),
            "non_landslide_blobs": int(hits_b.size),
            "non_landslide_blobs_hit": int(hits_b.sum()),
            "false_alarm_rate": rate(hits_b),
        }
    return {
        "reference_objects": int(hits_a.size),
        "reference_objects_hit": int(hits_a.sum()),
        "object_hit_rate": rate(hits_a),
        "predicted_objects": int(hits_b.size),
        "predicted_objects_hit": int(hits_b.sum()),
        "predicted_object_precision": rate(hits_b),
    }


def report_html(figures: dict[str, Any]) -> str:
    """An HTML report of the figures alone (no curves, map or hashes)."""
    return mapping_report(figures).html()


def run_evaluate(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Evaluate a landslide map against a reference mask, polygons or point labels.

    The parameters are those of :class:`EvaluateMappingParams`.
    """
    options = EvaluateMappingParams.from_params(params)
    html_path = options.output_html or ""
    _check_outputs(options.output, html_path)
    landslide = _values(options.landslide_values, "LANDSLIDE_VALUES", (1,))
    ignore = _values(options.ignore_values, "IGNORE_VALUES", ())
    started = time.perf_counter()
    info = open_raster(options.input, what="prediction raster")
    threshold = map_threshold(options, ctx)
    options = replace(options, threshold=threshold)
    collect = ReportCollector(info.width, info.height, threshold)
    figures = evaluate_rasters(
        options.input,
        options.reference,
        threshold=threshold,
        kind=options.reference_kind,
        landslide_values=landslide,
        ignore_values=ignore,
        progress=ctx.stage(0, 95),
        collect=collect,
    )
    figures["seconds"] = round(time.perf_counter() - started, 3)
    suggest_threshold(figures, collect, options.reference_kind, ctx)
    report = evaluation_report(options, figures, collect, info) if html_path else None
    outputs = _write_outputs(figures, options.output, html_path, report)
    ctx.log(
        f"F1 {figures['f1']:.3f}, IoU {figures['iou']:.3f}, precision "
        f"{figures['precision']:.3f}, recall {figures['recall']:.3f}, MCC {figures['mcc']:.3f} "
        f"on {figures['evaluated_pixels']} pixels."
    )
    return JobResult(outputs=outputs, figures=figures, inputs=[options.input, options.reference])


def map_threshold(options: EvaluateMappingParams, ctx: JobContext) -> float:
    """THRESHOLD, or the threshold the map's mask was cut at, or 0.5 (said in the log).

    A probability raster written by ``maplandslides`` has a run manifest beside
    it whose figures hold the threshold of its mask and polygons (chosen on the
    raster by THRESHOLD_RULE ``expected_f1``, or stored in the model): scoring the
    map at another threshold would not score what the user sees.
    """
    if options.threshold is not None:
        return float(options.threshold)
    used = manifest_threshold(options.input)
    if used is None:
        ctx.log("THRESHOLD 0.5 (no Map landslides run manifest beside the map).")
        return 0.5
    ctx.log(f"THRESHOLD {used:g}: the threshold the map's mask was cut at (its run manifest).")
    return used


def manifest_threshold(path: str) -> float | None:
    """The mask threshold in the ``maplandslides`` manifest of probability raster ``path``.

    ``None`` when there is no such manifest, it describes another raster or job,
    or the map has several region thresholds.
    """
    from slidewise.contract.partials import manifest_path

    try:
        doc = json.loads(manifest_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    written = (doc.get("outputs") or {}).get("OUTPUT_PROBABILITY") or ""
    figures = doc.get("figures") or {}
    value = figures.get("threshold")
    if not str(doc.get("algorithm", "")).endswith("maplandslides") or not written:
        return None
    if Path(written).resolve() != Path(path).resolve() or "," in str(figures.get("regions", "")):
        return None
    return float(value) if isinstance(value, int | float) and 0 <= value <= 1 else None


def suggest_threshold(
    figures: dict[str, Any], collect: ReportCollector, kind: str, ctx: JobContext
) -> None:
    """Add the best-F1 threshold of a probability map on complete outlines, and say it.

    With a few labelled images of a new region this is how a model is fitted to it
    without training: its stored threshold was chosen on its own validation images.
    """
    best = collect.best_threshold() if kind == "mask" else None
    if best is None:
        return
    figures["best_threshold"], figures["best_f1"] = round(best[0], 2), round(best[1], 4)
    ctx.log(
        f"The best threshold on this reference is {best[0]:.2f} (F1 {best[1]:.3f}, against "
        f"{figures['f1']:.3f} at {figures['threshold']}): to map more of this area, give it as "
        "THRESHOLD to Map landslides."
    )


def _check_outputs(output: str, html_path: str) -> None:
    check_writable(output)
    if html_path:
        check_writable(html_path)
        if Path(html_path).resolve() == Path(output).resolve():
            raise InputError("OUTPUT and OUTPUT_HTML are the same file: give each its own path.")


def evaluation_report(
    options: EvaluateMappingParams, figures: dict[str, Any], collect: ReportCollector, info: Any
) -> Report:
    """The report with threshold curves, the outcome map and the inputs' hashes."""
    from slidewise.engine.core.report import provenance

    crs = info.crs.to_string() if info.crs else ""
    record = provenance({"INPUT": options.input, "REFERENCE": options.reference})
    return mapping_report(figures, collect, (info.transform, crs), record)


def _write_outputs(
    figures: dict[str, Any], output: str, html_path: str, report: Report | None = None
) -> dict[str, str]:
    """Write the JSON (and the HTML report); output name -> path."""
    from slidewise.engine.core.report import json_ready, write_report

    if html_path:
        report = report or mapping_report(figures)
        numbers = figures | {"report": report.figures()}
        write_report(html_path, report.html(), numbers, json_path=output)
        return {"OUTPUT": output, "OUTPUT_HTML": html_path}
    text = json.dumps(json_ready(figures), indent=2, allow_nan=False) + "\n"
    with atomic_output(output) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return {"OUTPUT": output}
