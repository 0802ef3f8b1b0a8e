"""Predicting susceptibility: the ``predictsusceptibility`` engine job.

Model + factor stack -> probability of landslide (GeoTIFF float32 0-1, NaN
nodata, written window by window) and optionally a classed map (uint8
1..N_CLASSES = very low..very high, 0 nodata); or model + table -> table with
a ``susceptibility`` column. A ``meta`` model predicts every pixel with the
adapted model of its block (from the block raster recorded in the model, or the
nearest k-means centre for models trained on tables); within BLEND_WIDTH pixels
of a block border the adjacent blocks' models are blended (:mod:`.blending`).
The model's calibrator (:mod:`.calibration`) is applied, and the spread of its
bootstrap members (:mod:`.uncertainty`) is written as the UNCERTAINTY raster.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.contract.specs.predictsusceptibility import SPEC as PREDICT_SPEC
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.core.resume import SCALE_OUT_FIELDS, ResumeRequest, run_key
from slidewise.engine.geo.align import AlignedStack
from slidewise.engine.geo.samples import FeatureEncoder
from slidewise.engine.geo.stackparams import StackParams
from slidewise.engine.susceptibility.blending import blend_predictions, halo_pixels
from slidewise.engine.susceptibility.blocks import check_block_grid, nearest_centre
from slidewise.engine.susceptibility.calibration import Calibrator, calibrator_from_model
from slidewise.engine.susceptibility.models import FittedModel, model_from_tensors
from slidewise.engine.susceptibility.uncertainty import ensemble_from_model

BREAK_SAMPLE = 200_000
BREAK_SEED = 0
"""Seed of the class-break sample."""
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
        blend_width: BLEND_WIDTH, pixels over which adjacent blocks' models are blended.
        output: OUTPUT probability GeoTIFF (a CSV for TABLE).
        classed: CLASSED map (optional).
        uncertainty: UNCERTAINTY raster, the bootstrap members' spread (optional).
        workers: WORKERS, local Dask worker processes (1: none).
        scheduler: SCHEDULER, address of an existing Dask scheduler.
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
    blend_width: int = 2
    output: str = ""
    classed: str | None = None
    uncertainty: str | None = None
    workers: int = 1
    scheduler: str | None = None
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
        calibrator: Calibration of the probability (``none`` for old model files).
        members: Bootstrap members (none for old model files).
        blend_width: Pixels over which adjacent blocks' models are blended (0: none).
    """

    fitted: FittedModel
    encoder: FeatureEncoder
    order: list[int]
    block_src: Any = None
    centres: Any = None
    calibrator: Calibrator = field(default_factory=Calibrator)
    members: list[FittedModel] = field(default_factory=list)
    blend_width: float = 0.0

    def window(
        self, stack: AlignedStack, windows: tuple[Any, Any, Any], unseen: Unseen | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(probability, spread of the members, valid mask)`` of one window.

        Args:
            stack: The open factor stack.
            windows: ``(read window with halo, write window, inner slices)``.
            unseen: Where unseen categorical classes are counted.
        """
        halo_win, win, inner = windows
        data, valid = stack.read(win)
        out = np.full(valid.shape, np.nan, dtype=np.float32)
        spread = np.full(valid.shape, np.nan, dtype=np.float32)
        if not valid.any():
            return out, spread, valid
        raw = data[self.order][:, valid].T
        x = self.encoder.transform(raw, warn=None)
        count_unseen(self.encoder, raw, unseen)
        ids = np.zeros((int(halo_win.height), int(halo_win.width)), dtype=np.int64)
        if self.fitted.blockwise:
            every = np.ones(ids.shape, dtype=bool)
            ids = window_blocks(halo_win, every, self.block_src, self.centres, stack)
            ids = ids.reshape(every.shape)

        def predict(sel: np.ndarray, bid: int) -> np.ndarray:
            xs, block = x[sel], np.full(int(sel.sum()), bid, dtype=np.int64)
            return np.stack([m.predict(xs, block) for m in [self.fitted, *self.members]], axis=1)

        cols = self.calibrator.apply(
            blend_predictions(predict, ids, inner, valid, self.blend_width)
        )
        out[valid] = cols[:, 0].astype(np.float32)
        if cols.shape[1] > 2:
            spread[valid] = cols[:, 1:].std(axis=1).astype(np.float32)
        return out, spread, valid


def run_predict(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Predict the probability of landslide with a trained susceptibility model.

    Parameters: see ``contract/specs/predictsusceptibility.py``: MODEL, the factor
    stack (its band names must include the model's factors) or TABLE, BLOCKS,
    CLASSIFICATION, N_CLASSES, BLOCK_SIZE, BLEND_WIDTH, OUTPUT, CLASSED and
    UNCERTAINTY.
    """
    from slidewise.engine.core.modelfile import load_model

    options = PredictParams.from_params(params)
    for path in (options.output, options.classed, options.uncertainty):
        if path:
            check_writable(path)
    tensors, meta = load_model(options.model, task="susceptibility")
    predictor = load_predictor(tensors, meta.config, meta.normalisation, options, ctx.log)
    start = time.time()
    if options.table:
        figures = predict_table(options, predictor, ctx)
        return JobResult(
            outputs={"OUTPUT": options.output}, figures=figures, inputs=options.inputs()
        )
    blocks_doc = dict(meta.extra.get("blocks", {}))
    figures = predict_stack(options, predictor, blocks_doc, ctx)
    outputs = {"OUTPUT": options.output}
    if figures.get("uncertainty_written"):
        outputs["UNCERTAINTY"] = str(options.uncertainty)
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


def load_predictor(
    tensors: dict[str, Any],
    config: dict[str, Any],
    normalisation: dict[str, Any],
    options: PredictParams,
    note: Callable[[str], None] | None = None,
) -> Predictor:
    """The model, its calibrator and bootstrap members from a model file's contents.

    Model files written before calibration (no calibrator, no members) still
    predict, with the raw probability and no uncertainty; a note says so.
    """
    fitted = model_from_tensors(tensors, config)
    predictor = Predictor(
        fitted,
        FeatureEncoder.from_dict(normalisation),
        [],
        centres=tensors.get("kmeans.centres"),
        calibrator=calibrator_from_model(tensors, config),
        members=ensemble_from_model(tensors, config, fitted)
        if options.uncertainty or options.table
        else [],
        blend_width=float(options.blend_width) if fitted.blockwise else 0.0,
    )
    if "calibration" not in config and note is not None:
        note(
            "Note: this model was trained before Slidewise calibrated probabilities: the raw "
            "probability is written (train it again for a calibrated one and an uncertainty)."
        )
    return predictor


def predict_stack(
    options: PredictParams, predictor: Predictor, blocks_doc: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    """Write the probability raster of the stack; warn about classes unseen in training.

    With WORKERS > 1 or a SCHEDULER the windows are computed on a Dask cluster
    (:mod:`.predict_cluster`); this process still writes them, in order.
    """
    import rasterio

    from slidewise.engine.core.cluster import ClusterOptions, dask_client

    cluster = ClusterOptions(options.workers, options.scheduler)
    unseen: Unseen = {}
    started = time.perf_counter()
    # GDAL's block cache defaults to 5 % of the machine's memory: cap it so that
    # memory stays bounded by the window size, whatever the raster size.
    with (
        rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20),
        options.open_stack(list(predictor.encoder.categorical)) as stack,
        dask_client(cluster, ctx.log) if cluster.parallel else contextlib.nullcontext() as client,
    ):
        remote = remote_windows(client, options, blocks_doc)
        cluster_start = time.perf_counter() - started
        predictor.order = band_order(stack.names, predictor.encoder.bands)
        predictor.block_src = prediction_blocks(options, predictor.fitted, blocks_doc, stack)
        uncertainty = options.uncertainty if len(predictor.members) > 1 else None
        if options.uncertainty and not uncertainty:
            ctx.warn(
                "This model holds no bootstrap members (trained before Slidewise measured "
                "uncertainty): UNCERTAINTY is not written. Train the model again to get it."
            )
        figures = predict_raster(
            stack,
            predictor,
            (options.output, uncertainty),
            block=options.block_size,
            unseen=unseen,
            progress=ctx.stage(0, 80 if options.classed else 100),
            remote=remote,
            resume=ResumeRequest(run_key(options, options.inputs(), SCALE_OUT_FIELDS), ctx.log),
        )
        if remote is not None:
            figures["cluster"] = {
                "workers": remote.workers(),
                "start_seconds": round(cluster_start, 2),
                "first_window_seconds": round(remote.first_result_seconds, 2),
            }
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


def remote_windows(client: Any, options: PredictParams, blocks_doc: dict[str, Any]) -> Any:
    """The Dask side of the window loop (``None`` without a client)."""
    if client is None:
        return None
    from slidewise.engine.susceptibility.predict_cluster import RemoteWindows, StackWindowTask

    return RemoteWindows(client, StackWindowTask(options, blocks_doc))


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
    outputs: tuple[str, str | None],
    block: int = 512,
    unseen: Unseen | None = None,
    progress: Callable[[float], None] | None = None,
    remote: Any = None,
    resume: ResumeRequest | None = None,
) -> dict[str, Any]:
    """Write the probability (and its uncertainty) window by window.

    Memory is bounded by the window (``block`` x ``block`` pixels plus a halo of
    the blending width): each window is read, encoded, predicted as one batch per
    block ID and written. A random sample of at most :data:`BREAK_SAMPLE`
    predictions is kept for class breaks. Closes ``predictor.block_src``.

    Args:
        stack: The open factor stack.
        predictor: The model and how pixels reach it.
        outputs: ``(probability path, uncertainty path or None)``.
        block: Window side in pixels.
        unseen: Where unseen categorical classes are counted.
        progress: Fraction-done callback.
        remote: Computes the windows on a Dask cluster
            (:class:`.predict_cluster.RemoteWindows`); ``None``: in this process.
        resume: Make the run resumable (:mod:`slidewise.engine.core.resume`):
            a run of the same key killed half-way continues after its last
            checkpoint; ``None``: not resumable.

    Returns:
        Figures: valid pixel count, min/max/mean probability, share of pixels
        below 0.05 or over 0.95, mean uncertainty, and ``_sample``.
    """
    from slidewise.engine.core.resume import Checkpoints, resumable_rasters
    from slidewise.engine.geo.raster import iter_windows, output_profile

    halo = halo_pixels(predictor.blend_width)
    windows = list(iter_windows(stack.width, stack.height, block, halo))
    profile = output_profile(stack.grid.profile(), 1, "float32")
    specs = [(outputs[0], profile, ["susceptibility"])]
    if outputs[1]:
        specs.append((outputs[1], profile, ["uncertainty"]))
    paths = [spec[0] for spec in specs]
    if resume is None:
        run = Checkpoints.disabled(paths, len(windows))
    else:
        run = Checkpoints.start(paths, resume.key, len(windows), resume.log)
    unseen = {} if unseen is None else unseen
    try:
        with resumable_rasters(run, specs) as rasters:
            tally = restored_tally(rasters, windows[: run.done], unseen, stack)
            rest = windows[run.done :]
            results = (
                remote.results(rest, unseen)
                if remote is not None
                else (predictor.window(stack, w, unseen) for w in rest)
            )
            for i, ((_, win, _), (out, spread, valid)) in enumerate(
                zip(rest, results, strict=True), start=run.done + 1
            ):
                tally.add(out[valid], spread[valid], tally.rng, tally.rate)
                rasters.write(win, out, spread)
                rasters.written(i, lambda: tally.state(unseen))
                if progress:
                    progress(i / len(windows))
            if tally.n_valid == 0:  # raised inside: the output is removed, not left empty
                raise InputError(
                    "The factor stack has no pixel where every factor has a value (all "
                    "nodata): nothing to predict. Check the rasters' nodata values."
                )
    finally:
        if predictor.block_src is not None:
            predictor.block_src.close()
    return {**tally.figures(), "uncertainty_written": bool(outputs[1]), "blend_pixels": halo}


def restored_tally(rasters: Any, finished: list[Any], unseen: Unseen, stack: AlignedStack) -> Tally:
    """The running figures after the ``finished`` windows of a resumed run (fresh if none).

    The probabilities written are read back in window order, so the class-break
    sample draws the same random numbers as an uninterrupted run; the spread
    total and the unseen classes come from the last checkpoint.
    """
    tally = Tally(rng=np.random.default_rng(BREAK_SEED))
    tally.rate = min(1.0, BREAK_SAMPLE / max(1, stack.width * stack.height))
    none = np.zeros(0, dtype=np.float32)
    for _, win, _ in finished:
        out = rasters.datasets[0].read(1, window=win)
        tally.add(out[np.isfinite(out)], none, tally.rng, tally.rate)
    if finished:
        saved = rasters.run.extra
        tally.spread_total = float(saved.get("spread_total", 0.0))
        for band, counts in dict(saved.get("unseen", {})).items():
            unseen[band] = {float(v): int(c) for v, c in counts.items()}
    return tally


@dataclass
class Tally:
    """Running figures of the predicted pixels and the class-break sample."""

    n_valid: int = 0
    total: float = 0.0
    lo: float = np.inf
    hi: float = -np.inf
    extreme: int = 0
    spread_total: float = 0.0
    kept: list[np.ndarray] = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    rate: float = 1.0

    def state(self, unseen: Unseen) -> dict[str, Any]:
        """What a resumed run cannot read back from its partial outputs (JSON-able)."""
        counts = {b: {str(v): c for v, c in cs.items()} for b, cs in unseen.items()}
        return {"spread_total": self.spread_total, "unseen": counts}

    def add(self, p: np.ndarray, spread: np.ndarray, rng: np.random.Generator, rate: float) -> None:
        """Count one window's valid probabilities ``p`` and their ``spread``."""
        if p.size == 0:
            return
        self.n_valid += p.size
        self.total += float(p.sum())
        self.lo, self.hi = min(self.lo, float(p.min())), max(self.hi, float(p.max()))
        self.extreme += int(np.sum((p < 0.05) | (p > 0.95)))
        self.spread_total += float(np.nansum(spread))
        self.kept.append(p[rng.random(p.size) < rate])

    def figures(self) -> dict[str, Any]:
        """Pixel count, min/max/mean, extreme share, mean spread and ``_sample``."""
        n = max(1, self.n_valid)
        return {
            "valid_pixels": self.n_valid,
            "min": self.lo,
            "max": self.hi,
            "mean": self.total / n,
            "extreme_share": self.extreme / n,
            "uncertainty_mean": self.spread_total / n,
            "_sample": np.concatenate(self.kept) if self.kept else np.zeros(0),
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


def predict_table(options: PredictParams, predictor: Predictor, ctx: JobContext) -> dict[str, Any]:
    """Write TABLE with an added ``susceptibility`` column to OUTPUT (CSV).

    The probability is calibrated; with bootstrap members an ``uncertainty``
    column (their spread) follows.

    Raises:
        InputError: a ``meta`` model whose blocks come from a raster.
    """
    import csv

    from slidewise.engine.core.outputs import atomic_output
    from slidewise.engine.geo.tables import find_column, numeric_columns, read_table

    fitted, encoder, centres = predictor.fitted, predictor.encoder, predictor.centres
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
    models = [fitted, *predictor.members]
    probs = predictor.calibrator.apply(np.stack([m.predict(x, ids) for m in models], axis=1))
    p = probs[:, 0]
    spread = probs[:, 1:].std(axis=1) if probs.shape[1] > 2 else None
    keys = list(table)
    with atomic_output(options.output) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*keys, "susceptibility", *(["uncertainty"] if spread is not None else [])])
        for i in range(p.size):
            extra = [f"{spread[i]:.6f}"] if spread is not None else []
            writer.writerow([*(table[k][i] for k in keys), f"{p[i]:.6f}", *extra])
    return {"rows": int(p.size), "mean": float(p.mean()) if p.size else float("nan")}
