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
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult, check_known, choice, require
from slidewise.engine.core.outputs import atomic_output, check_writable
from slidewise.engine.geo.raster import RasterInfo, open_raster, read_masked

PARAMS = {
    "INPUT",
    "REFERENCE",
    "OUTPUT",
    "OUTPUT_HTML",
    "THRESHOLD",
    "REFERENCE_KIND",
    "LANDSLIDE_VALUES",
    "IGNORE_VALUES",
}
REFERENCE_KINDS = ("mask", "points")
STRIP_PIXELS = 4_000_000
"""Pixels per strip read at once (full raster width)."""


def _strip_rows(width: int) -> int:
    return max(16, min(1024, STRIP_PIXELS // max(1, width)))


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
            self.aligned = AlignedStack(
                [FactorSource(path, band=1, name="reference", kind="categorical")],
                reference=GridSpec.from_info(info),
            )
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


def _values(params: dict[str, Any], name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    from slidewise.engine.imagery.labels import parse_values

    parsed = parse_values(params.get(name), name)
    return default if parsed is None else parsed


def evaluate_rasters(
    prediction: str,
    reference: str,
    threshold: float = 0.5,
    kind: str = "mask",
    landslide_values: tuple[int, ...] = (1,),
    ignore_values: tuple[int, ...] = (),
    progress: Callable[[float], None] | None = None,
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

    Returns:
        The figures (JSON-ready).

    Raises:
        InputError: unreadable inputs, overlapping value lists, a polygon layer
            for ``points``, or no pixel to evaluate.
    """
    from slidewise.engine.geo.polygons import StripLabeller
    from slidewise.engine.imagery.segmetrics import Confusion

    info = open_raster(prediction, what="prediction raster")
    if set(landslide_values) & set(ignore_values):
        raise InputError(
            "LANDSLIDE_VALUES and IGNORE_VALUES share "
            f"{sorted(set(landslide_values) & set(ignore_values))}: a value is either "
            "landslide or ignored."
        )
    from slidewise.engine.mapping.apply import is_raster_path

    if not Path(reference).exists():
        raise InputError(f"The reference '{reference}' does not exist: check the path.")
    if kind == "points" and not is_raster_path(reference):
        raise InputError(
            "REFERENCE_KIND 'points' needs a label raster (labelled blobs around inventory "
            "points); for landslide polygons use REFERENCE_KIND 'mask'."
        )
    confusion = Confusion()
    # Objects: (pixels that form them, what they must overlap to count as hit).
    first = StripLabeller(info.width, maxima=("hit",))
    second = StripLabeller(info.width, maxima=("hit",))
    firsts, seconds = [], []
    rows = _strip_rows(info.width)
    import rasterio

    with ExitStack() as stack:
        ref = _Reference(reference, info, landslide_values, ignore_values, stack)
        src = stack.enter_context(rasterio.open(prediction))
        for top in range(0, info.height, rows):
            window = Window(0, top, info.width, min(rows, info.height - top))
            data, pred_valid = read_masked(src, window=window, indexes=1)
            with np.errstate(invalid="ignore"):
                pred = pred_valid & (data[0] >= threshold)
            slide, other, ref_valid = ref.read(window)
            evaluated = pred_valid & ref_valid
            confusion.update(pred, slide, evaluated)
            pred_eval = (pred & evaluated).astype(np.float64)
            firsts.append(first.add(top, slide & evaluated, {"hit": pred_eval}))
            if kind == "points":
                seconds.append(second.add(top, other & evaluated, {"hit": pred_eval}))
            else:
                hit = (slide & evaluated).astype(np.float64)
                seconds.append(second.add(top, pred & evaluated, {"hit": hit}))
            if progress is not None:
                progress((top + window.height) / info.height)
        warped = ref.warped
    firsts.append(first.finish())
    seconds.append(second.finish())
    evaluated_pixels = confusion.tp + confusion.fp + confusion.fn + confusion.tn
    if evaluated_pixels == 0:
        raise InputError(
            "No pixel could be evaluated: the prediction and the reference do not overlap, "
            "or every reference pixel is nodata or in IGNORE_VALUES. Check the inputs and "
            "LANDSLIDE_VALUES / IGNORE_VALUES."
        )
    hits_a = np.concatenate([c.maxima["hit"] for c in firsts]) > 0
    hits_b = np.concatenate([c.maxima["hit"] for c in seconds]) > 0
    figures: dict[str, Any] = {
        "prediction": str(prediction),
        "reference": str(reference),
        "reference_kind": kind,
        "threshold": threshold,
        "landslide_values": list(landslide_values),
        "ignore_values": list(ignore_values),
        "reference_warped": warped,
        "evaluated_pixels": evaluated_pixels,
        **confusion.as_dict(),
        "confusion_matrix": {
            "labels": ["not landslide", "landslide"],
            "rows": "reference",
            "columns": "prediction",
            "matrix": [[confusion.tn, confusion.fp], [confusion.fn, confusion.tp]],
        },
    }
    if kind == "points":
        figures.update(
            {
                "landslide_blobs": int(hits_a.size),
                "landslide_blobs_hit": int(hits_a.sum()),
                "hit_rate": float(hits_a.mean()) if hits_a.size else None,
                "non_landslide_blobs": int(hits_b.size),
                "non_landslide_blobs_hit": int(hits_b.sum()),
                "false_alarm_rate": float(hits_b.mean()) if hits_b.size else None,
            }
        )
    else:
        figures.update(
            {
                "reference_objects": int(hits_a.size),
                "reference_objects_hit": int(hits_a.sum()),
                "object_hit_rate": float(hits_a.mean()) if hits_a.size else None,
                "predicted_objects": int(hits_b.size),
                "predicted_objects_hit": int(hits_b.sum()),
                "predicted_object_precision": float(hits_b.mean()) if hits_b.size else None,
            }
        )
    return figures


def report_html(figures: dict[str, Any]) -> str:
    """An HTML report of the figures (engine/report.py)."""
    from slidewise.engine.core.report import Section, Table, html_report

    pixel = Table(
        columns=["figure", "value"],
        rows=[[k, figures[k]] for k in ("precision", "recall", "f1", "iou", "mcc", "accuracy")],
        caption="Landslide class, pixels",
    )
    m = figures["confusion_matrix"]["matrix"]
    matrix = Table(
        columns=["reference \\ prediction", "not landslide", "landslide"],
        rows=[["not landslide", m[0][0], m[0][1]], ["landslide", m[1][0], m[1][1]]],
        caption="Confusion matrix (pixels)",
    )
    if figures["reference_kind"] == "points":
        keys = (
            "landslide_blobs",
            "landslide_blobs_hit",
            "hit_rate",
            "non_landslide_blobs",
            "non_landslide_blobs_hit",
            "false_alarm_rate",
        )
    else:
        keys = (
            "reference_objects",
            "reference_objects_hit",
            "object_hit_rate",
            "predicted_objects",
            "predicted_objects_hit",
            "predicted_object_precision",
        )
    objects = Table(columns=["figure", "value"], rows=[[k, figures[k]] for k in keys])
    inputs = [
        f"Prediction: {figures['prediction']} (landslide where >= {figures['threshold']}).",
        f"Reference: {figures['reference']} ({figures['reference_kind']}; landslide values "
        f"{figures['landslide_values']}, ignored {figures['ignore_values']}"
        + ("; warped to the prediction grid" if figures["reference_warped"] else "")
        + ").",
        f"Evaluated pixels: {figures['evaluated_pixels']}.",
    ]
    return html_report(
        "Landslide map evaluation",
        [
            Section("Inputs", text=inputs),
            Section("Pixels", tables=[pixel, matrix]),
            Section("Objects", tables=[objects]),
        ],
    )


def run_evaluate(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Evaluate a landslide map against a reference mask, polygons or point labels.

    Parameters:
        INPUT (str, raster path): Landslide probability raster (from
            ``maplandslides``) or a 0/1 mask raster; nodata/NaN pixels are skipped.
        REFERENCE (str, raster or vector path): Reference labels: a label raster
            (any grid: warped to the prediction grid with nearest neighbour) or a
            polygon layer of landslide outlines (``mask`` only; any CRS).
        OUTPUT (str, .json path): The figures as JSON.
        OUTPUT_HTML (str, optional .html path, default ""): The same as an HTML report.
        THRESHOLD (float, default 0.5): Prediction values at or above it are
            landslide (for a 0/1 mask any value in (0, 1] works).
        REFERENCE_KIND (str, default "mask"): ``mask`` (complete landslide
            mask or outlines: pixel and object figures) or ``points`` (labels
            only in blobs around inventory points: pixel figures on labelled
            pixels, blob hit rate and false-alarm rate).
        LANDSLIDE_VALUES (str, default "1"): Reference raster values meaning
            landslide, comma separated (Chattogram labels: 2).
        IGNORE_VALUES (str, default ""): Reference raster values not evaluated,
            comma separated (Chattogram labels: 0 = unlabelled). All other valid
            values are "not landslide".
    """
    check_known(params, PARAMS)
    require(params, "INPUT", "REFERENCE", "OUTPUT")
    output = str(params["OUTPUT"])
    html_path = str(params.get("OUTPUT_HTML") or "").strip()
    check_writable(output)
    if html_path:
        check_writable(html_path)
        if Path(html_path).resolve() == Path(output).resolve():
            raise InputError("OUTPUT and OUTPUT_HTML are the same file: give each its own path.")
    kind = choice(params, "REFERENCE_KIND", REFERENCE_KINDS, "mask")
    try:
        threshold = float(params.get("THRESHOLD", 0.5) if params.get("THRESHOLD") != "" else 0.5)
    except (TypeError, ValueError):
        raise InputError(f"THRESHOLD must be a number, got '{params.get('THRESHOLD')}'.") from None
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"THRESHOLD must be between 0 and 1, got {threshold}.")
    landslide = _values(params, "LANDSLIDE_VALUES", (1,))
    ignore = _values(params, "IGNORE_VALUES", ())
    started = time.perf_counter()
    figures = evaluate_rasters(
        str(params["INPUT"]),
        str(params["REFERENCE"]),
        threshold=threshold,
        kind=kind,
        landslide_values=landslide,
        ignore_values=ignore,
        progress=ctx.stage(0, 95),
    )
    figures["seconds"] = round(time.perf_counter() - started, 3)
    from slidewise.engine.core.report import json_ready

    text = json.dumps(json_ready(figures), indent=2, allow_nan=False) + "\n"
    outputs = {"OUTPUT": output}
    if html_path:
        from slidewise.engine.core.report import write_report

        write_report(html_path, report_html(figures), figures, json_path=output)
        outputs["OUTPUT_HTML"] = html_path
    else:
        with atomic_output(output) as tmp:
            tmp.write_text(text, encoding="utf-8")
    ctx.log(
        f"F1 {figures['f1']:.3f}, IoU {figures['iou']:.3f}, precision "
        f"{figures['precision']:.3f}, recall {figures['recall']:.3f}, MCC {figures['mcc']:.3f} "
        f"on {figures['evaluated_pixels']} pixels."
    )
    return JobResult(
        outputs=outputs,
        figures=figures,
        inputs=[str(params["INPUT"]), str(params["REFERENCE"])],
    )
