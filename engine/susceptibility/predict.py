"""Predicting susceptibility: the ``predictsusceptibility`` engine job.

Model + factor stack -> probability of landslide (GeoTIFF float32 0-1, NaN
nodata, written window by window) and optionally a classed map (uint8
1..N_CLASSES = very low..very high, 0 nodata); or model + table -> table with
a ``susceptibility`` column. A ``meta`` model predicts every pixel with the
adapted model of its block (from the block raster recorded in the model, or the
nearest k-means centre for models trained on tables).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.contract.specs.predictsusceptibility import SPEC as PREDICT_SPEC
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.geo.align import AlignedStack
from slidewise.engine.geo.samples import FeatureEncoder
from slidewise.engine.geo.stackparams import StackParams
from slidewise.engine.susceptibility.blocks import check_block_grid, nearest_centre
from slidewise.engine.susceptibility.models import FittedModel, model_from_tensors

BREAK_SAMPLE = 200_000
GDAL_CACHE_MB = 64
#: Unseen categorical classes: factor -> class value -> pixels.
Unseen = dict[str, dict[float, int]]


@dataclass(frozen=True)
class PredictParams(StackParams):
    """Parameters of the ``predictsusceptibility`` job (declared in ``contract/specs``).

    The stack fields are those of :class:`StackParams` (categorical factors come
    from the model).

    Attributes:
        model: MODEL file from trainsusceptibility.
        blocks: BLOCKS raster (default: the one recorded in the model; its hash must match).
        classification: CLASSIFICATION, ``quantile``, ``natural_breaks`` or ``equal_interval``.
        n_classes: N_CLASSES of the classed map.
        block_size: BLOCK_SIZE, window side in pixels.
        output: OUTPUT probability GeoTIFF (a CSV for TABLE).
        classed: CLASSED map (optional).
        table: TABLE to predict instead of a stack.
        x_field: X_FIELD of the table.
        y_field: Y_FIELD of the table.
    """

    SPEC = PREDICT_SPEC

    model: str = ""
    blocks: str | None = None
    classification: str = "quantile"
    n_classes: int = 5
    block_size: int = 512
    output: str = ""
    classed: str | None = None
    table: str | None = None
    x_field: str = "x"
    y_field: str = "y"

    def inputs(self) -> list[str]:
        """The files read (for the run manifest)."""
        files = [self.input, self.blocks, self.table, self.model]
        return [str(f) for f in files if f] + [str(f) for f in self.factors]


@dataclass
class Predictor:
    """A loaded model and how stack pixels reach it.

    Attributes:
        fitted: The model.
        encoder: Raw factor values -> model features.
        order: Stack band index of each of the model's factors.
        block_src: Open block raster (``meta`` models on rasters), else ``None``.
        centres: k-means block centres (``meta`` models trained on tables), else ``None``.
    """

    fitted: FittedModel
    encoder: FeatureEncoder
    order: list[int]
    block_src: Any = None
    centres: Any = None

    def window(
        self, stack: AlignedStack, win: Any, unseen: Unseen | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(probability float32, valid mask)`` of one window of the stack."""
        data, valid = stack.read(win)
        out = np.full(valid.shape, np.nan, dtype=np.float32)
        if not valid.any():
            return out, valid
        raw = data[self.order][:, valid].T
        x = self.encoder.transform(raw, warn=None)
        count_unseen(self.encoder, raw, unseen)
        ids = None
        if self.fitted.blockwise:
            ids = window_blocks(win, valid, self.block_src, self.centres, stack)
        out[valid] = self.fitted.predict(x, ids).astype(np.float32)
        return out, valid


def run_predict(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Predict the probability of landslide with a trained susceptibility model.

    Parameters: see ``contract/specs/predictsusceptibility.py``: MODEL, the factor
    stack (its band names must include the model's factors) or TABLE, BLOCKS,
    CLASSIFICATION, N_CLASSES, BLOCK_SIZE, OUTPUT and CLASSED.
    """
    from slidewise.engine.core.modelfile import load_model

    options = PredictParams.from_params(params)
    check_writable(options.output)
    if options.classed:
        check_writable(options.classed)
    tensors, meta = load_model(options.model, task="susceptibility")
    fitted = model_from_tensors(tensors, meta.config)
    encoder = FeatureEncoder.from_dict(meta.normalisation)
    centres = tensors.get("kmeans.centres")
    start = time.time()
    if options.table:
        figures = predict_table(options, fitted, encoder, centres, ctx)
        return JobResult(
            outputs={"OUTPUT": options.output}, figures=figures, inputs=options.inputs()
        )
    blocks_doc = dict(meta.extra.get("blocks", {}))
    figures = predict_stack(options, Predictor(fitted, encoder, [], None, centres), blocks_doc, ctx)
    outputs = {"OUTPUT": options.output}
    sample = figures.pop("_sample")
    if options.classed:
        import rasterio

        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20):
            figures["classes"] = classify_raster(
                options.output,
                options.classed,
                sample,
                options.classification,
                options.n_classes,
                ctx.stage(80, 100),
            )
        outputs["CLASSED"] = options.classed
    figures["seconds"] = round(time.time() - start, 3)
    ctx.log(f"Susceptibility written to {options.output} in {figures['seconds']} s.")
    return JobResult(outputs=outputs, figures=figures, inputs=options.inputs())


def predict_stack(
    options: PredictParams, predictor: Predictor, blocks_doc: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    """Write the probability raster of the stack; warn about classes unseen in training."""
    import rasterio

    unseen: Unseen = {}
    # GDAL's block cache defaults to 5 % of the machine's memory: cap it so that
    # memory stays bounded by the window size, whatever the raster size.
    with (
        rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20),
        options.open_stack(list(predictor.encoder.categorical)) as stack,
    ):
        predictor.order = band_order(stack.names, predictor.encoder.bands)
        predictor.block_src = prediction_blocks(options, predictor.fitted, blocks_doc, stack)
        figures = predict_raster(
            stack,
            predictor,
            options.output,
            block=options.block_size,
            unseen=unseen,
            progress=ctx.stage(0, 80 if options.classed else 100),
        )
    if unseen:
        for band, counts in unseen.items():
            listed = ", ".join(f"{v:g}: {c}" for v, c in sorted(counts.items()))
            ctx.warn(
                f"Factor '{band}' has classes not seen in training (class: pixels {listed}); "
                "these pixels were predicted with no class (all-zero one-hot)."
            )
        figures["unseen_classes"] = {
            b: {f"{v:g}": c for v, c in cs.items()} for b, cs in unseen.items()
        }
    return figures


def band_order(names: list[str], wanted: list[str]) -> list[int]:
    """Stack band index of each of the model's factors.

    Raises:
        InputError: the stack lacks one of them.
    """
    missing = [b for b in wanted if b not in names]
    if missing:
        raise InputError(
            f"The factor stack lacks the model's factor(s) {', '.join(missing)}: its bands are "
            f"{', '.join(names)}. Give the same factors as in training "
            "(band descriptions name them)."
        )
    return [names.index(b) for b in wanted]


def prediction_blocks(
    options: PredictParams, fitted: FittedModel, doc: dict[str, Any], stack: AlignedStack
) -> Any:
    """Open the block raster for a meta model on a raster (None otherwise).

    Raises:
        InputError: the block raster is missing, another one than in training, or on
            another grid than the stack.
    """
    if not fitted.blockwise or doc.get("source") != "raster":
        return None
    import rasterio

    from slidewise.engine.core.manifest import file_sha256

    path = str(options.blocks or doc.get("path") or "")
    if not path or not Path(path).is_file():
        raise InputError(
            f"The block raster of this model ('{path}') was not found: give BLOCKS, the block "
            "raster written when the model was trained."
        )
    if doc.get("sha256") and file_sha256(path) != doc["sha256"]:
        raise InputError(
            f"The block raster '{Path(path).name}' is not the one the model was trained with "
            "(its hash differs): give the training block raster as BLOCKS, or train again."
        )
    check_block_grid(path, stack, "predict on the stack the model was trained on")
    return rasterio.open(path)


def predict_raster(
    stack: AlignedStack,
    predictor: Predictor,
    output: str,
    block: int = 512,
    unseen: Unseen | None = None,
    progress: Callable[[float], None] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the probability of landslide window by window (closes ``predictor.block_src``).

    Memory is bounded by the window (``block`` x ``block`` pixels): each window is
    read, encoded, predicted as one batch per block ID and written. A random
    sample of at most :data:`BREAK_SAMPLE` predictions is kept for class breaks.

    Returns:
        Figures: valid pixel count, min/max/mean probability, and ``_sample``.
    """
    from slidewise.engine.geo.raster import create_raster, iter_windows, output_profile

    rng = np.random.default_rng(seed)
    rate = min(1.0, BREAK_SAMPLE / max(1, stack.width * stack.height))
    kept: list[np.ndarray] = []
    n_valid, total, lo, hi = 0, 0.0, np.inf, -np.inf
    windows = list(iter_windows(stack.width, stack.height, block))
    profile = output_profile(stack.grid.profile(), 1, "float32")
    try:
        with create_raster(output, profile, band_names=["susceptibility"]) as dst:
            for i, (_, win, _) in enumerate(windows):
                out, valid = predictor.window(stack, win, unseen)
                if valid.any():
                    p = out[valid]
                    n_valid += p.size
                    total += float(p.sum())
                    lo, hi = min(lo, float(p.min())), max(hi, float(p.max()))
                    kept.append(p[rng.random(p.size) < rate])
                dst.write(out[None], window=win)
                if progress:
                    progress((i + 1) / len(windows))
            if n_valid == 0:  # raised inside: the output is removed, not left empty
                raise InputError(
                    "The factor stack has no pixel where every factor has a value (all "
                    "nodata): nothing to predict. Check the rasters' nodata values."
                )
    finally:
        if predictor.block_src is not None:
            predictor.block_src.close()
    return {
        "valid_pixels": n_valid,
        "min": lo,
        "max": hi,
        "mean": total / n_valid,
        "_sample": np.concatenate(kept) if kept else np.zeros(0),
    }


def window_blocks(
    win: Any, valid: np.ndarray, block_src: Any, centres: Any, stack: AlignedStack
) -> np.ndarray:
    """Block ID of each valid pixel of a window (block raster, nearest centre, or 0)."""
    if block_src is not None:
        ids = block_src.read(1, window=win)
        return np.nan_to_num(ids[valid], nan=0).astype(np.int64)
    if centres is not None:
        rows, cols = np.nonzero(valid)
        from slidewise.engine.geo.samples import pixel_centres

        xs, ys = pixel_centres(stack, rows + int(win.row_off), cols + int(win.col_off))
        return nearest_centre(xs, ys, np.asarray(centres))
    return np.zeros(int(valid.sum()), dtype=np.int64)


def count_unseen(encoder: FeatureEncoder, raw: np.ndarray, unseen: Unseen | None) -> None:
    """Add the pixels of categorical classes unseen in training to ``unseen``."""
    if unseen is None:
        return
    for j, band in enumerate(encoder.bands):
        if band in encoder.categorical:
            col = raw[:, j]
            bad = ~np.isin(col, encoder.categorical[band]) & np.isfinite(col)
            if bad.any():
                vals, cnt = np.unique(col[bad], return_counts=True)
                slot = unseen.setdefault(band, {})
                for v, c in zip(vals.tolist(), cnt.tolist(), strict=False):
                    slot[v] = slot.get(v, 0) + int(c)


def classify_raster(
    source: str,
    output: str,
    sample: np.ndarray,
    method: str,
    n_classes: int,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Write a classed map of a probability raster; breaks from the prediction sample.

    Returns:
        Figures: method, breaks (``n_classes + 1`` edges), class names, pixels per class.
    """
    import rasterio

    from slidewise.engine.geo.raster import create_raster, iter_windows, output_profile
    from slidewise.engine.susceptibility.classify import apply_breaks, class_breaks, class_names

    breaks = class_breaks(sample, n_classes, method)
    counts = np.zeros(n_classes + 1, dtype=np.int64)
    with rasterio.open(source) as src:
        profile = output_profile(
            {"width": src.width, "height": src.height, "crs": src.crs, "transform": src.transform},
            1,
            "uint8",
            nodata=0,
        )
        windows = list(iter_windows(src.width, src.height, 1024))
        with create_raster(output, profile, band_names=["susceptibility_class"]) as dst:
            for i, (_, win, _) in enumerate(windows):
                classes = apply_breaks(src.read(1, window=win), breaks)
                counts += np.bincount(classes.ravel(), minlength=n_classes + 1)
                dst.write(classes[None], window=win)
                if progress:
                    progress((i + 1) / len(windows))
    return {
        "method": method,
        "breaks": [float(b) for b in breaks],
        "names": class_names(n_classes),
        "pixels": [int(c) for c in counts[1:]],
    }


def predict_table(
    options: PredictParams,
    fitted: FittedModel,
    encoder: FeatureEncoder,
    centres: Any,
    ctx: JobContext,
) -> dict[str, Any]:
    """Write TABLE with an added ``susceptibility`` column to OUTPUT (CSV).

    Raises:
        InputError: a ``meta`` model whose blocks come from a raster.
    """
    import csv

    from slidewise.engine.core.outputs import atomic_output
    from slidewise.engine.geo.tables import find_column, numeric_columns, read_table

    path = str(options.table)
    name = Path(path).name
    table = read_table(path, warn=ctx.warn)
    cols = [find_column(table, b, name) for b in encoder.bands]
    raw = numeric_columns(table, cols, name)
    x = encoder.transform(raw, warn=ctx.warn)
    ids = None
    if fitted.blockwise:
        if centres is None:
            raise InputError(
                "This model's blocks come from a raster: predict it on a factor stack, not a table."
            )
        xc = find_column(table, options.x_field, name)
        yc = find_column(table, options.y_field, name)
        xy = numeric_columns(table, [xc, yc], name)
        ids = nearest_centre(xy[:, 0], xy[:, 1], np.asarray(centres))
    p = fitted.predict(x, ids)
    keys = list(table)
    with atomic_output(options.output) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*keys, "susceptibility"])
        for i in range(p.size):
            writer.writerow([*(table[k][i] for k in keys), f"{p[i]:.6f}"])
    return {"rows": int(p.size), "mean": float(p.mean()) if p.size else float("nan")}
