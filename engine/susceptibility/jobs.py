"""Block-wise few-shot landslide susceptibility: sampling, blocks, training, prediction.

Jobs (registered in :mod:`slidewise.engine.jobs`):

* ``samplefactors`` (:func:`run_sample_factors`): factor values at landslides and
  non-landslide samples -> CSV table or GeoPackage points.
* ``segmentblocks`` (:func:`run_segment_blocks`): SLIC blocks -> block-ID raster
  and block polygons with statistics.
* ``trainsusceptibility`` (:func:`run_train`): stack (or a sample table) +
  inventory -> model file. Method ``meta`` meta-learns an MLP initialisation over
  the blocks (MAML) and adapts it to every block with that block's samples;
  ``rf``, ``lr``, ``mlp`` and ``fr`` fit one global model. Leave-blocks-out and
  random cross-validation AUCs are reported.
* ``predictsusceptibility`` (:func:`run_predict`): model + stack -> probability of
  landslide (GeoTIFF, window by window), optional classed map; or model + table
  -> table with a ``susceptibility`` column.

Label convention everywhere: 1 = landslide, 0 = not landslide.

Protocol of the leave-blocks-out evaluation (:func:`leave_blocks_out`, shared
with ``python -m slidewise.bench.susceptibility``): the blocks are split into
folds; in each fold, every held-out block gives ``shots`` random *support*
samples and its other samples are *query* samples. ``meta`` is meta-trained on
the other blocks and adapted to each held-out block with its support samples;
the global methods are trained on the other blocks plus all support samples.
Every method is scored on the same pooled query samples.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.engine.core.errors import InputError, ModelFileError
from slidewise.engine.core.job import JobContext, JobResult, check_known, choice, require
from slidewise.engine.geo.samples import FeatureEncoder, SampleSet, SamplingOptions
from slidewise.engine.susceptibility.blocks import (
    BlockParams,
    block_statistics,
    kmeans_blocks,
    nearest_centre,
    polygonise,
    sample_blocks,
    segment_stack,
    upsample_window,
)
from slidewise.engine.susceptibility.classical import ARCHITECTURES, ClassicalModel, fit_classical
from slidewise.engine.susceptibility.maml import MetaConfig, MetaState, Params

METHODS = ("meta", "rf", "lr", "mlp", "fr")
ONE_CLASS = ("fallback", "adapt")
Warn = Callable[[str], None]


# --- fitted models -------------------------------------------------------------------


@dataclass
class FittedModel:
    """A fitted susceptibility model on encoded features.

    Attributes:
        method: ``meta``, ``rf``, ``lr``, ``mlp`` or ``fr``.
        classical: The global model (methods other than ``meta``).
        skeleton: The MLP module (``meta``).
        state: Meta-learned initialisation (``meta``).
        blocks: Adapted parameters per block ID (``meta``).
        fallback: Block ID -> why it uses the meta-learned initialisation.
        one_class: Block ID -> description, for blocks adapted on one class only.
        history: Meta-training loss per iteration.
    """

    method: str
    classical: ClassicalModel | None = None
    skeleton: Any = None
    state: MetaState | None = None
    blocks: dict[int, Params] = field(default_factory=dict)
    fallback: dict[int, str] = field(default_factory=dict)
    one_class: dict[int, str] = field(default_factory=dict)
    history: list[float] = field(default_factory=list)

    def predict(self, x: np.ndarray, block_ids: np.ndarray | None = None) -> np.ndarray:
        """Probability of landslide; ``meta`` uses each sample's block model."""
        if self.method != "meta":
            assert self.classical is not None
            return self.classical.predict_proba(x)
        import torch
        from torch.func import functional_call

        assert self.state is not None
        out = np.empty(x.shape[0], dtype=np.float64)
        if x.shape[0] == 0:
            return out
        ids = np.zeros(x.shape[0], dtype=np.int64) if block_ids is None else np.asarray(block_ids)
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
        with torch.no_grad():
            for bid in np.unique(ids):
                sel = np.flatnonzero(ids == bid)
                params = self.blocks.get(int(bid), self.state.params)
                logits = functional_call(self.skeleton, params, (xt[sel],))
                out[sel] = torch.softmax(logits, dim=-1)[:, 1].double().numpy()
        return out


@dataclass
class TrainSettings:
    """What :func:`fit_model` needs besides the data.

    Attributes:
        method: One of :data:`METHODS`.
        meta: Meta-learning hyper-parameters.
        min_block_samples: Blocks with fewer samples keep the meta-learned initialisation.
        one_class: ``fallback`` (default) or ``adapt`` for blocks whose samples are one class.
        n_estimators: Trees of the random forest.
        seed: Random seed.
    """

    method: str = "meta"
    meta: MetaConfig = field(default_factory=MetaConfig)
    min_block_samples: int = 3
    one_class: str = "adapt"
    n_estimators: int = 200
    seed: int = 0


def fit_model(
    x: np.ndarray,
    y: np.ndarray,
    blocks: np.ndarray,
    settings: TrainSettings,
    groups: list[list[int]] | None = None,
    unlabelled: np.ndarray | None = None,
    adapt_on: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    progress: Callable[[float], None] | None = None,
) -> FittedModel:
    """Fit a model on encoded features.

    Args:
        x: Features (n, d).
        y: Labels 0/1.
        blocks: Block ID per sample (meta-training tasks).
        settings: Method and hyper-parameters.
        groups: Feature columns per factor (``fr``).
        unlabelled: Feature vectors for DAE pretraining.
        adapt_on: ``(x, y, blocks)`` to adapt block models on (default: the
            training samples themselves).
        progress: Fraction-done callback.
    """
    if settings.method != "meta":
        model = fit_classical(
            settings.method, x, y, settings.seed, groups, settings.n_estimators, n_jobs=None
        )
        return FittedModel(settings.method, classical=model)
    from slidewise.engine.susceptibility.maml import meta_train

    skeleton, state = meta_train(
        x, y, blocks, settings.meta, settings.seed, unlabelled=unlabelled, progress=progress
    )
    fitted = FittedModel("meta", skeleton=skeleton, state=state, history=state.history)
    ax, ay, ab = adapt_on if adapt_on is not None else (x, y, blocks)
    adapt_blocks(fitted, ax, ay, ab, settings)
    return fitted


def adapt_blocks(
    fitted: FittedModel,
    x: np.ndarray,
    y: np.ndarray,
    blocks: np.ndarray,
    settings: TrainSettings,
) -> None:
    """Adapt the meta-learned initialisation to every block with its samples.

    Blocks with fewer than ``settings.min_block_samples`` samples, or (with
    ``one_class="fallback"``) samples of one class only, keep the initialisation;
    ``fitted.fallback`` records why.
    """
    from slidewise.engine.susceptibility.maml import adapt_many

    assert fitted.state is not None
    tasks, ids = [], []
    for bid in np.unique(blocks):
        sel = blocks == bid
        n, n_pos = int(sel.sum()), int(y[sel].sum())
        if n < settings.min_block_samples:
            fitted.fallback[int(bid)] = f"{n} samples (fewer than {settings.min_block_samples})"
            continue
        if n_pos in (0, n):
            kind = "no landslides" if n_pos == 0 else "only landslides"
            if settings.one_class == "fallback":
                fitted.fallback[int(bid)] = f"one class only ({kind}, {n} samples)"
                continue
            fitted.one_class[int(bid)] = f"{kind}, {n} samples"
        tasks.append((x[sel], y[sel]))
        ids.append(int(bid))
    for bid, params in zip(
        ids,
        adapt_many(fitted.skeleton, fitted.state, tasks, settings.meta.inner_steps),
        strict=False,
    ):
        fitted.blocks[bid] = params


# --- evaluation ----------------------------------------------------------------------


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC, F1 and Cohen's kappa (threshold 0.5) of probabilities ``p``."""
    from sklearn.metrics import cohen_kappa_score, f1_score, roc_auc_score

    y = np.asarray(y, dtype=int)
    pred = (np.asarray(p) >= 0.5).astype(int)
    auc = float(roc_auc_score(y, p)) if np.unique(y).size == 2 else float("nan")
    return {
        "auc": auc,
        "f1": float(f1_score(y, pred, zero_division=0)),
        "kappa": float(cohen_kappa_score(y, pred)) if np.unique(np.r_[y, pred]).size > 1 else 0.0,
    }


def leave_blocks_out(
    values: np.ndarray,
    y: np.ndarray,
    blocks: np.ndarray,
    bands: list[str],
    methods: Sequence[str],
    settings: TrainSettings,
    shots: int = 5,
    n_folds: int = 5,
    seed: int = 0,
    categorical: Sequence[str] = (),
    progress: Callable[[float], None] | None = None,
    log: Warn | None = None,
) -> list[dict[str, Any]]:
    """Leave-blocks-out evaluation with ``shots`` support samples per held-out block.

    See the module docstring for the protocol. Held-out blocks with no more than
    ``shots`` samples give no query and are skipped.

    Returns:
        One record per fold: ``{"fold", "n_query", "<method>": scores}``.
    """
    from slidewise.engine.susceptibility.spatialcv import block_folds

    rng = np.random.default_rng(seed)
    folds = block_folds(blocks, n_folds, seed)
    records = []
    for k, (train, test) in enumerate(folds):
        support, query = [], []
        for bid in np.unique(blocks[test]):
            members = test[blocks[test] == bid]
            if members.size <= shots:
                continue
            perm = rng.permutation(members)
            support.append(perm[:shots])
            query.append(perm[shots:])
        if not query:
            continue
        sup = np.concatenate(support)
        qry = np.concatenate(query)
        if np.unique(y[qry]).size < 2:
            continue
        record: dict[str, Any] = {"fold": k, "n_query": int(qry.size)}
        encoder = FeatureEncoder.fit(values[np.r_[train, sup]], bands, categorical)
        xt = encoder.transform(values)
        for m in methods:
            s = replace(settings, method=m)
            if m == "meta":
                fitted = fit_model(
                    xt[train],
                    y[train],
                    blocks[train],
                    s,
                    adapt_on=(xt[sup], y[sup], blocks[sup]),
                )
            else:
                idx = np.r_[train, sup]
                fitted = fit_model(xt[idx], y[idx], blocks[idx], s, groups=encoder.groups)
            record[m] = scores(y[qry], fitted.predict(xt[qry], blocks[qry]))
            if log:
                log(f"fold {k + 1}/{len(folds)} {m}: AUC {record[m]['auc']:.3f}")
        records.append(record)
        if progress:
            progress((k + 1) / len(folds))
    return records


def random_cv(
    values: np.ndarray,
    y: np.ndarray,
    blocks: np.ndarray,
    bands: list[str],
    settings: TrainSettings,
    n_folds: int = 5,
    seed: int = 0,
    categorical: Sequence[str] = (),
) -> list[float]:
    """Random k-fold AUCs of the whole pipeline (``meta``: blocks adapted on training samples)."""
    from slidewise.engine.susceptibility.spatialcv import random_folds

    aucs = []
    for train, test in random_folds(len(y), n_folds, seed, labels=y):
        encoder = FeatureEncoder.fit(values[train], bands, categorical)
        xt = encoder.transform(values)
        fitted = fit_model(xt[train], y[train], blocks[train], settings, groups=encoder.groups)
        aucs.append(scores(y[test], fitted.predict(xt[test], blocks[test]))["auc"])
    return aucs


def summarise(records: list[dict[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of fold scores per method."""
    out = {}
    for m in methods:
        auc = np.array([r[m]["auc"] for r in records if m in r], dtype=float)
        f1 = np.array([r[m]["f1"] for r in records if m in r], dtype=float)
        kappa = np.array([r[m]["kappa"] for r in records if m in r], dtype=float)
        out[m] = {
            "auc_mean": float(np.nanmean(auc)) if auc.size else float("nan"),
            "auc_sd": float(np.nanstd(auc)) if auc.size else float("nan"),
            "f1_mean": float(np.nanmean(f1)) if f1.size else float("nan"),
            "kappa_mean": float(np.nanmean(kappa)) if kappa.size else float("nan"),
        }
    return out


# --- model files ---------------------------------------------------------------------


def model_tensors(fitted: FittedModel) -> dict[str, Any]:
    """Named tensors of a fitted model (no pickle: plain arrays only)."""
    from slidewise.engine.susceptibility.maml import state_tensors

    if fitted.method != "meta":
        assert fitted.classical is not None
        return fitted.classical.tensors()
    assert fitted.state is not None
    tensors = state_tensors(fitted.state, prefix="init.")
    for bid, params in fitted.blocks.items():
        for k, v in params.items():
            tensors[f"blocks.{bid}.{k}"] = v
    return tensors


def model_from_tensors(tensors: dict[str, Any], config: dict[str, Any]) -> FittedModel:
    """Rebuild a :class:`FittedModel` from a model file's tensors and config."""
    method = str(config.get("method", ""))
    if method not in METHODS:
        raise ModelFileError(
            f"The model file names an unknown susceptibility method '{method}': "
            "train the model again with this version of Slidewise."
        )
    if method != "meta":
        return FittedModel(method, classical=ClassicalModel.from_tensors(method, tensors, config))
    from slidewise.engine.susceptibility.maml import SusceptibilityMLP, state_from_tensors

    meta = MetaConfig.from_dict(config.get("meta", {}))
    state = state_from_tensors(tensors, prefix="init.")
    if not state.params:
        raise ModelFileError("The model file has no meta-learned parameters: train it again.")
    n_features = int(state.params["net.0.weight"].shape[1])
    skeleton = SusceptibilityMLP(n_features, meta.hidden)
    blocks: dict[int, Params] = {}
    for name, v in tensors.items():
        if name.startswith("blocks."):
            _, bid, pname = name.split(".", 2)
            blocks.setdefault(int(bid), {})[pname] = v
    fallback = {int(k): str(v) for k, v in config.get("fallback", {}).items()}
    return FittedModel("meta", skeleton=skeleton, state=state, blocks=blocks, fallback=fallback)


# --- job helpers ---------------------------------------------------------------------

SAMPLING_PARAMS = {
    "INPUT",
    "FACTORS",
    "CATEGORICAL",
    "ALIGN",
    "INVENTORY",
    "NEGATIVES",
    "NEGATIVE_RATIO",
    "BUFFER",
    "PER_POLYGON",
    "X_FIELD",
    "Y_FIELD",
    "LABEL_FIELD",
    "INVENTORY_CRS",
    "SEED",
}
BLOCK_PARAMS = {"N_BLOCKS", "COMPACTNESS", "BANDS", "WEIGHTS", "ITERATIONS"}


def _names(value: Any) -> list[str]:
    """A list parameter given as a list or a comma-separated string."""
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _floats(value: Any, name: str) -> list[float]:
    try:
        return [float(v) for v in _names(value)]
    except ValueError:
        raise InputError(f"{name} must be a list of numbers, not '{value}'.") from None


def _number(
    params: dict[str, Any], name: str, default: float, minimum: float | None = None
) -> float:
    value = params.get(name)
    if value in (None, ""):
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, not '{value}'.") from None
    if not np.isfinite(out) or (minimum is not None and out < minimum):
        raise InputError(f"{name} must be a number of at least {minimum}, not '{value}'.")
    return out


def _bool(params: dict[str, Any], name: str, default: bool = False) -> bool:
    value = params.get(name, default)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _sampling_options(params: dict[str, Any], ctx: JobContext) -> SamplingOptions:
    require(params, "INVENTORY")
    buffer = params.get("BUFFER")
    return SamplingOptions(
        inventory=str(params["INVENTORY"]),
        negatives=str(params.get("NEGATIVES") or ""),
        negative_ratio=_number(params, "NEGATIVE_RATIO", 1.0, 0.0),
        buffer=None if buffer in (None, "") else _number(params, "BUFFER", 0.0, 0.0),
        per_polygon=int(_number(params, "PER_POLYGON", 0, 0)),
        x_field=str(params.get("X_FIELD") or "x"),
        y_field=str(params.get("Y_FIELD") or "y"),
        label_field=str(params.get("LABEL_FIELD") or ""),
        inventory_crs=str(params.get("INVENTORY_CRS") or ""),
        seed=int(_number(params, "SEED", ctx.options.seed)),
    )


def _open_stack(params: dict[str, Any]) -> Any:
    from slidewise.engine.geo.samples import open_factor_stack

    return open_factor_stack(
        str(params.get("INPUT") or "") or None,
        _names(params.get("FACTORS")) or None,
        _names(params.get("CATEGORICAL")),
        align=_bool(params, "ALIGN"),
    )


def _block_params(params: dict[str, Any], n_default: int) -> BlockParams:
    n = int(_number(params, "N_BLOCKS", 0, 0)) or n_default
    return BlockParams(
        n_blocks=n,
        compactness=_number(params, "COMPACTNESS", BlockParams.compactness, 0.0),
        bands=_names(params.get("BANDS")),
        weights=_floats(params.get("WEIGHTS"), "WEIGHTS"),
        iterations=int(_number(params, "ITERATIONS", BlockParams.iterations, 1)),
    )


def auto_blocks(n_samples: int) -> int:
    """Default block count: about 25 samples per block, 4 to 256 blocks."""
    return int(min(256, max(4, n_samples // 25)))


def _write_block_raster(path: str, labels: np.ndarray, factor: int, stack: Any) -> None:
    from slidewise.engine.geo.raster import create_raster, iter_windows, output_profile

    profile = output_profile(stack.grid.profile(), 1, dtype="int32", nodata=0)
    with create_raster(path, profile, band_names=["block"]) as dst:
        for _, write, _ in iter_windows(stack.width, stack.height, 1024):
            win = upsample_window(
                labels,
                factor,
                int(write.row_off),
                int(write.col_off),
                int(write.height),
                int(write.width),
            )
            dst.write(win[None].astype(np.int32), window=write)


def _read_block_raster(path: str, stack: Any) -> np.ndarray:
    """Read a block raster, refusing one on another grid than the stack."""
    from slidewise.engine.geo.align import GridSpec, grid_differences
    from slidewise.engine.geo.raster import open_raster

    info = open_raster(path, what="block raster")
    diff = grid_differences(GridSpec.from_info(info), stack.grid, path)
    if diff is not None:
        raise InputError(
            f"The block raster '{Path(path).name}' is not on the grid of the factor stack "
            f"({diff.describe()}): segment the same stack with segmentblocks."
        )
    import rasterio

    with rasterio.open(path) as src:
        data = src.read(1)
    if not np.issubdtype(data.dtype, np.integer):
        data = np.nan_to_num(data, nan=0).astype(np.int64)
    return data.astype(np.int64)


def _grid_doc(stack: Any) -> dict[str, Any]:
    return {
        "crs": stack.crs.to_wkt() if stack.crs is not None else None,
        "transform": list(stack.transform)[:6],
        "width": stack.width,
        "height": stack.height,
    }


def _attach_blocks(samples: SampleSet, labels: np.ndarray, factor: int) -> np.ndarray:
    return sample_blocks(labels, samples.rows, samples.cols, factor)


# --- job: samplefactors ----------------------------------------------------------------


def run_sample_factors(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Sample a factor stack at landslides and non-landslide places.

    Parameters:
        INPUT (str): Multi-band factor raster (band descriptions name the factors).
        FACTORS (list of str): Or single factor rasters (the first gives the grid).
        CATEGORICAL (list of str, default none): Categorical factor names (kept as
            class codes in the output; one-hot encoding happens at training).
        ALIGN (bool, default false): Align rasters on other grids to the first one
            (else they are refused, naming the one that differs).
        INVENTORY (str): Landslides: points or polygons (vector file) or a CSV/XLSX
            table with coordinate columns.
        NEGATIVES (str, optional): Non-landslide points or polygons.
        NEGATIVE_RATIO (float, default 1.0): Random non-landslides per landslide
            when there are no NEGATIVES and no 0 labels (0 = none).
        BUFFER (float, default 2 pixels): Random non-landslides lie farther than this
            from every landslide (map units).
        PER_POLYGON (int, default 0): Pixels drawn per polygon (0 = every pixel inside).
        X_FIELD, Y_FIELD (str, default x, y): Coordinate columns of tables.
        LABEL_FIELD (str, optional): Field with 1 (landslide) / 0 (not).
        INVENTORY_CRS (str, optional): CRS of table coordinates (default: the stack's).
        SEED (int, default the run seed): Seed of random draws.
        OUTPUT (str): ``.csv`` table (factors..., X, Y, label) or ``.gpkg`` points.
    """
    check_known(params, SAMPLING_PARAMS | {"OUTPUT"})
    require(params, "OUTPUT")
    options = _sampling_options(params, ctx)
    output = str(params["OUTPUT"])
    from slidewise.engine.core.outputs import check_writable
    from slidewise.engine.geo.samples import collect_samples

    check_writable(output)
    if Path(output).suffix.lower() not in (".csv", ".gpkg"):
        raise InputError(f"OUTPUT '{Path(output).name}' must be a .csv table or a .gpkg layer.")
    with _open_stack(params) as stack:
        ctx.progress(10)
        samples = collect_samples(stack, options, warn=ctx.warn)
        crs = stack.crs
    _write_samples(output, samples, crs)
    ctx.log(
        f"{samples.counts['landslides']} landslide and {samples.counts['non_landslides']} "
        f"non-landslide samples of {len(samples.bands)} factors written to {output}."
    )
    return JobResult(
        outputs={"OUTPUT": output},
        figures={"counts": samples.counts, "bands": samples.bands},
        inputs=[p for p in [params.get("INPUT"), options.inventory, options.negatives] if p]
        + _names(params.get("FACTORS")),
    )


def _write_samples(output: str, samples: SampleSet, crs: Any) -> None:
    import csv

    from slidewise.engine.core.outputs import atomic_output

    if output.lower().endswith(".csv"):
        with atomic_output(output) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow([*samples.bands, "X", "Y", "label"])
            for row, x, y, lab in zip(
                samples.values, samples.xs, samples.ys, samples.labels, strict=False
            ):
                writer.writerow([*(f"{v:.9g}" for v in row), f"{x:.6f}", f"{y:.6f}", int(lab)])
        return
    import shapely

    from slidewise.engine.geo.vectors import write_vector

    fields = {name: samples.values[:, j].astype(np.float64) for j, name in enumerate(samples.bands)}
    fields.update(label=samples.labels.astype(np.int32), origin=samples.origin.astype(str))
    write_vector(output, shapely.points(samples.xs, samples.ys), fields, crs, geometry_type="Point")


# --- job: segmentblocks ----------------------------------------------------------------


def run_segment_blocks(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Segment the factor stack into blocks (SLIC superpixels on terrain bands).

    Parameters:
        INPUT / FACTORS / CATEGORICAL / ALIGN: The factor stack (see samplefactors).
        N_BLOCKS (int, default 256): Approximate number of blocks.
        COMPACTNESS (float, default 0.5): Higher = more compact, less terrain-following
            blocks (bands are standardised and weighted).
        BANDS (list of str, default terrain bands by name): Bands to segment on;
            by default the DEM/elevation, aspect, curvature and slope bands.
        WEIGHTS (list of float, default 0.3/0.1/0.2/0.4 for DEM/aspect/curvature/slope):
            One weight per band.
        ITERATIONS (int, default 10): SLIC iterations.
        INVENTORY and the other sampling parameters (optional): Count landslides
            and samples per block.
        OUTPUT (str): Block-ID raster (GeoTIFF int32, 0 = nodata).
        OUTPUT_POLYGONS (str, optional): Block polygons with statistics (.gpkg):
            block, pixels, area, landslides, samples, mean_<band>.
    """
    check_known(params, SAMPLING_PARAMS | BLOCK_PARAMS | {"OUTPUT", "OUTPUT_POLYGONS"})
    require(params, "OUTPUT")
    from slidewise.engine.core.outputs import check_writable

    output = str(params["OUTPUT"])
    check_writable(output)
    polygons_out = str(params.get("OUTPUT_POLYGONS") or "")
    if polygons_out:
        check_writable(polygons_out)
    bparams = _block_params(params, 256)
    with _open_stack(params) as stack:
        samples = None
        if params.get("INVENTORY"):
            from slidewise.engine.geo.samples import collect_samples

            samples = collect_samples(stack, _sampling_options(params, ctx), warn=ctx.warn)
        labels, factor, bands, weights = segment_stack(stack, bparams, ctx.stage(5, 70))
        _write_block_raster(output, labels, factor, stack)
        figures: dict[str, Any] = {
            "n_blocks": int(labels.max()),
            "bands": bands,
            "weights": weights,
            "decimation": factor,
        }
        if polygons_out:
            _write_block_polygons(polygons_out, labels, factor, stack, samples)
    ctx.log(f"{figures['n_blocks']} blocks from bands {', '.join(bands)} (weights {weights}).")
    outputs = {"OUTPUT": output}
    if polygons_out:
        outputs["OUTPUT_POLYGONS"] = polygons_out
    return JobResult(outputs=outputs, figures=figures, inputs=_input_paths(params))


def _write_block_polygons(
    path: str, labels: np.ndarray, factor: int, stack: Any, samples: SampleSet | None
) -> None:
    from affine import Affine

    from slidewise.engine.geo.vectors import write_vector

    transform = stack.transform * Affine.scale(factor) if factor > 1 else stack.transform
    if factor == 1:
        from rasterio.windows import Window

        data, _ = stack.read(Window(0, 0, stack.width, stack.height))
    else:  # statistics on the decimated grid the blocks were segmented on
        from slidewise.engine.susceptibility.blocks import decimated_read

        data, _ = decimated_read(stack, list(range(stack.count)), factor)
    pixel_area = abs(transform.a * transform.e)
    sb = _attach_blocks(samples, labels, factor) if samples is not None else None
    stats = block_statistics(
        labels, data, stack.names, pixel_area, sb, samples.labels if samples is not None else None
    )
    ids, geoms = polygonise(labels, transform)
    fields = {k: v[ids - 1] for k, v in stats.items()}
    write_vector(path, geoms, fields, stack.crs, geometry_type="MultiPolygon")


def _input_paths(params: dict[str, Any]) -> list[str]:
    keys = ("INPUT", "INVENTORY", "NEGATIVES", "BLOCKS", "TABLE", "MODEL")
    return [str(params[k]) for k in keys if params.get(k)] + _names(params.get("FACTORS"))


# --- job: trainsusceptibility ------------------------------------------------------------


TRAIN_PARAMS = (
    SAMPLING_PARAMS
    | BLOCK_PARAMS
    | {
        "BLOCKS",
        "OUTPUT_BLOCKS",
        "TABLE",
        "FACTOR_FIELDS",
        "METHOD",
        "ITERATIONS_META",
        "INNER_STEPS",
        "INNER_LR",
        "META_LR",
        "TASKS_PER_BATCH",
        "SUPPORT",
        "QUERY",
        "LEARN_INNER_LR",
        "PRETRAIN_EPOCHS",
        "MIN_BLOCK_SAMPLES",
        "ONE_CLASS_BLOCKS",
        "SHOTS",
        "CV_FOLDS",
        "N_ESTIMATORS",
        "OUTPUT",
    }
)


def _train_settings(params: dict[str, Any], ctx: JobContext) -> TrainSettings:
    method = choice(params, "METHOD", METHODS, "meta")
    base = MetaConfig()
    meta = MetaConfig(
        hidden=base.hidden,
        inner_steps=int(_number(params, "INNER_STEPS", base.inner_steps, 1)),
        inner_lr=_number(params, "INNER_LR", base.inner_lr, 0.0),
        learn_inner_lr=_bool(params, "LEARN_INNER_LR", base.learn_inner_lr),
        meta_lr=_number(params, "META_LR", base.meta_lr, 0.0),
        iterations=int(_number(params, "ITERATIONS_META", base.iterations, 1)),
        tasks_per_batch=int(_number(params, "TASKS_PER_BATCH", base.tasks_per_batch, 1)),
        support=int(_number(params, "SUPPORT", base.support, 1)),
        query=int(_number(params, "QUERY", base.query, 1)),
        pretrain_epochs=int(_number(params, "PRETRAIN_EPOCHS", base.pretrain_epochs, 0)),
    )
    return TrainSettings(
        method=method,
        meta=meta,
        min_block_samples=int(
            _number(params, "MIN_BLOCK_SAMPLES", TrainSettings.min_block_samples, 1)
        ),
        one_class=choice(params, "ONE_CLASS_BLOCKS", ONE_CLASS, TrainSettings.one_class),
        n_estimators=int(_number(params, "N_ESTIMATORS", TrainSettings.n_estimators, 1)),
        seed=int(_number(params, "SEED", ctx.options.seed)),
    )


@dataclass
class TrainingData:
    """Samples prepared for training: raw values, labels, blocks and provenance."""

    values: np.ndarray
    labels: np.ndarray
    blocks: np.ndarray
    bands: list[str]
    categorical: list[str]
    block_doc: dict[str, Any]
    extra_tensors: dict[str, Any] = field(default_factory=dict)
    unlabelled: np.ndarray | None = None
    pixel_size: list[float] | None = None
    counts: dict[str, int] = field(default_factory=dict)


def _training_data_raster(
    params: dict[str, Any], ctx: JobContext, output: str, pretrain: bool = False
) -> TrainingData:
    from slidewise.engine.core.manifest import file_sha256
    from slidewise.engine.geo.samples import collect_samples, sample_pixels

    options = _sampling_options(params, ctx)
    categorical = _names(params.get("CATEGORICAL"))
    with _open_stack(params) as stack:
        samples = collect_samples(stack, options, warn=ctx.warn)
        ctx.log(
            f"Samples: {samples.counts['landslides']} landslides, "
            f"{samples.counts['non_landslides']} non-landslides."
        )
        ctx.progress(8)
        block_path = str(params.get("BLOCKS") or "")
        if block_path:
            labels = _read_block_raster(block_path, stack)
            factor = 1
        else:
            bparams = _block_params(params, auto_blocks(len(samples)))
            labels, factor, bands, _weights = segment_stack(stack, bparams)
            block_path = str(params.get("OUTPUT_BLOCKS") or "") or str(
                Path(output).with_name(Path(output).stem + "_blocks.tif")
            )
            _write_block_raster(block_path, labels, factor, stack)
            ctx.log(
                f"Segmented {int(labels.max())} blocks on {', '.join(bands)}; wrote {block_path}."
            )
        blocks = _attach_blocks(samples, labels, factor)
        unlabelled = None
        if pretrain:  # unlabelled pixels for DAE pretraining: a random sample of valid pixels
            rng = np.random.default_rng(options.seed)
            m = min(50_000, stack.width * stack.height)
            r, c = rng.integers(0, stack.height, m), rng.integers(0, stack.width, m)
            pix, ok = sample_pixels(stack, r, c)
            unlabelled = pix[ok]
        doc = {
            "source": "raster",
            "path": str(Path(block_path).resolve()),
            "sha256": file_sha256(block_path),
            "grid": _grid_doc(stack),
        }
        res = [abs(stack.transform.a), abs(stack.transform.e)]
    return TrainingData(
        samples.values.astype(np.float64),
        samples.labels,
        blocks,
        list(samples.bands),
        categorical,
        doc,
        unlabelled=unlabelled,
        pixel_size=res,
        counts=dict(samples.counts),
    )


def read_sample_table(
    path: str,
    label: str,
    x: str,
    y: str,
    factors: Sequence[str] = (),
    warn: Warn | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Read a sample table: factors, coordinates and 0/1 labels.

    Args:
        path: CSV or XLSX.
        label: Label column (1 landslide, 0 not); ``""`` for prediction tables.
        x: X column.
        y: Y column.
        factors: Factor columns (default: every other numeric column).
        warn: Receives the dropped-rows message.

    Returns:
        ``(values (n, f), labels or empty, xs, ys, factor names)``.
    """
    from slidewise.engine.geo.tables import find_column, numeric_columns, read_table

    name = Path(path).name
    table = read_table(path, warn=warn)
    xc, yc = find_column(table, x, name), find_column(table, y, name)
    lc = find_column(table, label, name) if label else ""
    names = (
        [find_column(table, f, name) for f in factors]
        if factors
        else [k for k in table if k not in (xc, yc, lc) and table[k].dtype.kind == "f"]
    )
    if not names:
        raise InputError(f"The table '{name}' has no numeric factor column besides {xc}, {yc}.")
    values = numeric_columns(table, names, name)
    xs, ys = numeric_columns(table, [xc, yc], name).T
    labels = np.zeros(0, dtype=np.int64)
    if lc:
        lab = numeric_columns(table, [lc], name)[:, 0]
        if not np.all(np.isin(lab, (0, 1))):
            raise InputError(
                f"The label column '{lc}' of '{name}' must hold 1 (landslide) or 0 (not landslide)."
            )
        labels = lab.astype(np.int64)
    return values, labels, xs, ys, names


def _training_data_table(params: dict[str, Any], ctx: JobContext) -> TrainingData:
    import torch

    table = str(params["TABLE"])
    values, labels, xs, ys, names = read_sample_table(
        table,
        str(params.get("LABEL_FIELD") or "label"),
        str(params.get("X_FIELD") or "x"),
        str(params.get("Y_FIELD") or "y"),
        _names(params.get("FACTOR_FIELDS")),
        warn=ctx.warn,
    )
    if not np.any(labels == 1) or not np.any(labels == 0):
        raise InputError(
            f"The table '{Path(table).name}' must hold both landslides (1) and non-landslides (0)."
        )
    n_blocks = int(_number(params, "N_BLOCKS", 0, 0)) or auto_blocks(len(labels))
    seed = int(_number(params, "SEED", ctx.options.seed))
    blocks, centres = kmeans_blocks(xs, ys, n_blocks, seed)
    categorical = _names(params.get("CATEGORICAL"))
    unknown = [c for c in categorical if c not in names]
    if unknown:
        raise InputError(f"CATEGORICAL names {', '.join(unknown)}, which is not a factor column.")
    doc = {"source": "kmeans", "n_blocks": n_blocks}
    return TrainingData(
        values,
        labels,
        blocks,
        names,
        categorical,
        doc,
        extra_tensors={"kmeans.centres": torch.as_tensor(centres)},
        unlabelled=None,
        counts={"landslides": int(labels.sum()), "non_landslides": int((labels == 0).sum())},
    )


def run_train(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Train a susceptibility model (few-shot meta-learning over blocks, or a global model).

    Parameters:
        INPUT / FACTORS / CATEGORICAL / ALIGN: The factor stack (see samplefactors).
        INVENTORY, NEGATIVES, NEGATIVE_RATIO, BUFFER, PER_POLYGON, X_FIELD, Y_FIELD,
            LABEL_FIELD, INVENTORY_CRS, SEED: Samples (see samplefactors).
        TABLE (str, optional): Instead of a stack and inventory: a CSV/XLSX sample
            table (factors..., X, Y, label); blocks are k-means clusters of X, Y.
            LABEL_FIELD (default ``label``), X_FIELD, Y_FIELD name its columns,
            FACTOR_FIELDS (list, default every other numeric column) its factors.
        BLOCKS (str, optional): Block raster from segmentblocks; default: segment the
            stack (N_BLOCKS default about 25 samples per block, 4-256) and write
            OUTPUT_BLOCKS (default ``<model>_blocks.tif``).
        N_BLOCKS, COMPACTNESS, BANDS, WEIGHTS, ITERATIONS: Segmentation (see segmentblocks).
        METHOD (str, default ``meta``): ``meta`` (MAML over blocks + per-block
            adaptation), ``rf``, ``lr``, ``mlp`` (scikit-learn, one global model) or
            ``fr`` (frequency ratio).
        ITERATIONS_META (int, default 2000): Meta-iterations.
        INNER_STEPS (int, default 5), INNER_LR (float, default 0.1): Adaptation steps
            and learning rate (the same at meta-training and adaptation).
        LEARN_INNER_LR (bool, default false): Learn the inner learning rates.
        META_LR (float, default 0.001): Outer Adam learning rate.
        TASKS_PER_BATCH (int, default 16), SUPPORT (int, default 6), QUERY (int, default 6):
            Meta-batch layout; blocks with at least SUPPORT + QUERY samples are tasks.
        PRETRAIN_EPOCHS (int, default 0): Denoising-autoencoder pretraining epochs on
            unlabelled pixels (0 = none).
        MIN_BLOCK_SAMPLES (int, default 3): Blocks with fewer samples keep the
            meta-learned initialisation.
        ONE_CLASS_BLOCKS (str, default ``adapt``): ``adapt`` or ``fallback`` for blocks
            whose samples are all one class.
        SHOTS (int, default 5): Support samples per held-out block in leave-blocks-out CV.
        CV_FOLDS (int, default 5): Folds of the leave-blocks-out and random CV (0 = none).
        N_ESTIMATORS (int, default 200): Trees of ``rf``.
        OUTPUT (str): Model file (.safetensors).
    """
    check_known(params, TRAIN_PARAMS)
    require(params, "OUTPUT")
    from slidewise.engine.core.modelfile import ModelMetadata, save_model
    from slidewise.engine.core.outputs import check_writable
    from slidewise.engine.core.runtime import seed_everything, set_deterministic

    output = str(params["OUTPUT"])
    check_writable(output)
    settings = _train_settings(params, ctx)
    seed_everything(settings.seed)
    if ctx.options.deterministic:  # (switching it off is the default: skip the costly import)
        set_deterministic(True)
    if ctx.options.threads > 0:
        import torch

        torch.set_num_threads(ctx.options.threads)
    start = time.time()
    if params.get("TABLE"):
        data = _training_data_table(params, ctx)
    else:
        pretrain = settings.method == "meta" and settings.meta.pretrain_epochs > 0
        data = _training_data_raster(params, ctx, output, pretrain)
    ctx.progress(12)
    ids, counts = np.unique(data.blocks[data.blocks > 0], return_counts=True)
    if np.any(data.blocks == 0):
        ctx.warn(
            f"{int(np.sum(data.blocks == 0))} samples lie on block 0 (nodata in BLOCKS) "
            "and use the meta-learned initialisation."
        )
    eligible = int(np.sum(counts >= settings.meta.support + settings.meta.query))
    ctx.log(f"{ids.size} blocks hold samples; {eligible} have enough for meta-learning tasks.")
    figures: dict[str, Any] = {
        "method": settings.method,
        "samples": data.counts,
        "blocks_with_samples": int(ids.size),
    }
    folds = int(_number(params, "CV_FOLDS", 5, 0))
    shots = int(_number(params, "SHOTS", 5, 1))
    if folds:
        figures["cv"] = _cross_validate(data, settings, folds, shots, ctx)
    ctx.progress(60)
    encoder = FeatureEncoder.fit(data.values, data.bands, data.categorical)
    xt = encoder.transform(data.values)
    unl = None
    if data.unlabelled is not None and len(data.unlabelled):
        unl = encoder.transform(data.unlabelled)
    fitted = fit_model(
        xt,
        data.labels,
        data.blocks,
        settings,
        groups=encoder.groups,
        unlabelled=unl,
        progress=ctx.stage(60, 95),
    )
    config: dict[str, Any] = {"method": settings.method}
    if settings.method == "meta":
        config["meta"] = settings.meta.to_dict()
        config["fallback"] = {str(k): v for k, v in sorted(fitted.fallback.items())}
        config["min_block_samples"] = settings.min_block_samples
        config["one_class"] = settings.one_class
        figures["adapted_blocks"] = sorted(fitted.blocks)
        figures["fallback_blocks"] = config["fallback"]
        figures["one_class_blocks"] = {str(k): v for k, v in sorted(fitted.one_class.items())}
        if fitted.one_class:
            ctx.warn(
                f"{len(fitted.one_class)} blocks hold samples of one class only and were adapted "
                "with them (set ONE_CLASS_BLOCKS=fallback to keep the meta-learned "
                "initialisation there): "
                + "; ".join(
                    f"block {k}: {v}" for k, v in list(sorted(fitted.one_class.items()))[:20]
                )
            )
        if fitted.history:
            figures["meta_loss_first_last"] = [
                float(np.mean(fitted.history[:50])),
                float(np.mean(fitted.history[-50:])),
            ]
        if fitted.fallback:
            ctx.warn(
                f"{len(fitted.fallback)} blocks use the meta-learned initialisation: "
                + "; ".join(
                    f"block {k}: {v}" for k, v in list(sorted(fitted.fallback.items()))[:20]
                )
                + (" ..." if len(fitted.fallback) > 20 else "")
            )
    else:
        assert fitted.classical is not None
        config.update(fitted.classical.config)
    train_auc = scores(data.labels, fitted.predict(xt, data.blocks))["auc"]
    figures["train_auc"] = train_auc
    figures["seconds"] = round(time.time() - start, 2)
    metadata = ModelMetadata(
        task="susceptibility",
        architecture="maml-mlp" if settings.method == "meta" else ARCHITECTURES[settings.method],
        config=config,
        bands=data.bands,
        normalisation=encoder.to_dict(),
        pixel_size=data.pixel_size,
        provenance={"seed": settings.seed, "inputs": _input_paths(params)},
        metrics={k: v for k, v in figures.items() if k in ("cv", "train_auc")},
        extra={"blocks": data.block_doc, "categorical": data.categorical},
    )
    tensors = {**model_tensors(fitted), **data.extra_tensors}
    save_model(output, tensors, metadata)
    ctx.log(f"Model written to {output} (training AUC {train_auc:.3f}).")
    outputs = {"OUTPUT": output}
    if data.block_doc.get("source") == "raster" and not params.get("BLOCKS"):
        outputs["OUTPUT_BLOCKS"] = data.block_doc["path"]
    return JobResult(outputs=outputs, figures=figures, inputs=_input_paths(params))


def _cross_validate(
    data: TrainingData, settings: TrainSettings, folds: int, shots: int, ctx: JobContext
) -> dict[str, Any]:
    n_blocks = np.unique(data.blocks).size
    out: dict[str, Any] = {"folds": folds, "shots": shots}
    try:
        records = leave_blocks_out(
            data.values,
            data.labels,
            data.blocks,
            data.bands,
            [settings.method],
            settings,
            shots=shots,
            n_folds=min(folds, n_blocks),
            seed=settings.seed,
            categorical=data.categorical,
            progress=ctx.stage(12, 40),
            log=ctx.log,
        )
        summary = summarise(records, [settings.method])[settings.method]
        out["spatial_auc_mean"] = summary["auc_mean"]
        out["spatial_auc_sd"] = summary["auc_sd"]
        out["spatial_folds_scored"] = len(records)
    except InputError as exc:
        ctx.warn(f"Leave-blocks-out CV skipped: {exc}")
    try:
        aucs = random_cv(
            data.values,
            data.labels,
            data.blocks,
            data.bands,
            settings,
            folds,
            settings.seed,
            data.categorical,
        )
        out["random_auc_mean"] = float(np.mean(aucs))
        out["random_auc_sd"] = float(np.std(aucs))
    except InputError as exc:
        ctx.warn(f"Random CV skipped: {exc}")
    ctx.log(
        f"CV AUC: leave-blocks-out {out.get('spatial_auc_mean', float('nan')):.3f}, "
        f"random {out.get('random_auc_mean', float('nan')):.3f}."
    )
    return out


# --- job: predictsusceptibility ----------------------------------------------------------


PREDICT_PARAMS = {
    "MODEL",
    "INPUT",
    "FACTORS",
    "ALIGN",
    "BLOCKS",
    "TABLE",
    "X_FIELD",
    "Y_FIELD",
    "OUTPUT",
    "CLASSED",
    "CLASSIFICATION",
    "N_CLASSES",
    "BLOCK_SIZE",
}
BREAK_SAMPLE = 200_000
GDAL_CACHE_MB = 64


def run_predict(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Predict the probability of landslide with a trained susceptibility model.

    Parameters:
        MODEL (str): Model file from trainsusceptibility.
        INPUT / FACTORS / ALIGN: The factor stack; its band names must include the
            model's factors.
        BLOCKS (str, optional): Block raster (default: the one recorded in the model;
            its hash must match).
        TABLE (str, optional): Instead of a stack: a CSV/XLSX table with the model's
            factor columns (and X_FIELD/Y_FIELD for models trained on tables);
            OUTPUT is then a CSV with an added ``susceptibility`` column.
        OUTPUT (str): Probability-of-landslide GeoTIFF (float32 0-1, NaN nodata).
        CLASSED (str, optional): Classed map (uint8 1..N_CLASSES = very low..very
            high, 0 nodata).
        CLASSIFICATION (str, default ``quantile``): ``quantile``, ``natural_breaks``
            (Fisher-Jenks on a 5,000-value sample) or ``equal_interval``.
        N_CLASSES (int, default 5): Number of classes.
        BLOCK_SIZE (int, default 512): Window side in pixels.
    """
    check_known(params, PREDICT_PARAMS)
    require(params, "MODEL", "OUTPUT")
    from slidewise.engine.core.modelfile import load_model
    from slidewise.engine.core.outputs import check_writable
    from slidewise.engine.susceptibility.classify import METHODS as CLASS_METHODS

    output = str(params["OUTPUT"])
    check_writable(output)
    classed = str(params.get("CLASSED") or "")
    if classed:
        check_writable(classed)
    classification = choice(params, "CLASSIFICATION", CLASS_METHODS, "quantile")
    n_classes = int(_number(params, "N_CLASSES", 5, 2))
    tensors, meta = load_model(str(params["MODEL"]), task="susceptibility")
    fitted = model_from_tensors(tensors, meta.config)
    encoder = FeatureEncoder.from_dict(meta.normalisation)
    blocks_doc = dict(meta.extra.get("blocks", {}))
    centres = tensors.get("kmeans.centres")
    start = time.time()
    if params.get("TABLE"):
        figures = _predict_table(params, fitted, encoder, centres, output, ctx)
        return JobResult(outputs={"OUTPUT": output}, figures=figures, inputs=_input_paths(params))
    unseen: dict[str, dict[float, int]] = {}
    import rasterio

    # GDAL's block cache defaults to 5 % of the machine's memory: cap it so that
    # memory stays bounded by the window size, whatever the raster size.
    with (
        rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20),
        _open_stack({**params, "CATEGORICAL": list(encoder.categorical)}) as stack,
    ):
        order = _band_order(stack.names, encoder.bands)
        block_src = _prediction_blocks(params, fitted, blocks_doc, stack)
        figures = predict_raster(
            stack,
            order,
            fitted,
            encoder,
            block_src,
            centres,
            output,
            block=int(_number(params, "BLOCK_SIZE", 512, 16)),
            unseen=unseen,
            progress=ctx.stage(0, 80 if classed else 100),
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
    outputs = {"OUTPUT": output}
    if classed:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20):
            figures["classes"] = classify_raster(
                output,
                classed,
                figures.pop("_sample"),
                classification,
                n_classes,
                ctx.stage(80, 100),
            )
        outputs["CLASSED"] = classed
    else:
        figures.pop("_sample", None)
    figures["seconds"] = round(time.time() - start, 3)
    ctx.log(f"Susceptibility written to {output} in {figures['seconds']} s.")
    return JobResult(outputs=outputs, figures=figures, inputs=_input_paths(params))


def _band_order(names: list[str], wanted: list[str]) -> list[int]:
    missing = [b for b in wanted if b not in names]
    if missing:
        raise InputError(
            f"The factor stack lacks the model's factor(s) {', '.join(missing)}: its bands are "
            f"{', '.join(names)}. Give the same factors as in training "
            "(band descriptions name them)."
        )
    return [names.index(b) for b in wanted]


def _prediction_blocks(
    params: dict[str, Any], fitted: FittedModel, doc: dict[str, Any], stack: Any
) -> Any:
    """Open the block raster for a meta model on a raster (None otherwise)."""
    if fitted.method != "meta" or doc.get("source") != "raster":
        return None
    import rasterio

    from slidewise.engine.core.manifest import file_sha256
    from slidewise.engine.geo.align import GridSpec, grid_differences
    from slidewise.engine.geo.raster import open_raster

    path = str(params.get("BLOCKS") or doc.get("path") or "")
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
    info = open_raster(path, what="block raster")
    diff = grid_differences(GridSpec.from_info(info), stack.grid, path)
    if diff is not None:
        raise InputError(
            f"The block raster '{Path(path).name}' is not on the grid of the factor stack "
            f"({diff.describe()}): predict on the stack the model was trained on."
        )
    return rasterio.open(path)


def predict_raster(
    stack: Any,
    order: list[int],
    fitted: FittedModel,
    encoder: FeatureEncoder,
    block_src: Any,
    centres: Any,
    output: str,
    block: int = 512,
    unseen: dict[str, dict[float, int]] | None = None,
    progress: Callable[[float], None] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the probability of landslide window by window.

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
                data, valid = stack.read(win)
                out = np.full(valid.shape, np.nan, dtype=np.float32)
                if valid.any():
                    raw = data[order][:, valid].T
                    x = encoder.transform(raw, warn=None)
                    _count_unseen(encoder, raw, unseen)
                    ids = None
                    if fitted.method == "meta":
                        ids = _window_blocks(win, valid, block_src, centres, stack)
                    p = fitted.predict(x, ids).astype(np.float32)
                    out[valid] = p
                    n_valid += p.size
                    total += float(p.sum())
                    lo, hi = min(lo, float(p.min())), max(hi, float(p.max()))
                    take = rng.random(p.size) < rate
                    kept.append(p[take])
                dst.write(out[None], window=win)
                if progress:
                    progress((i + 1) / len(windows))
    finally:
        if block_src is not None:
            block_src.close()
    if n_valid == 0:
        raise InputError(
            "The factor stack has no pixel where every factor has a value (all nodata): "
            "nothing to predict. Check the rasters' nodata values."
        )
    return {
        "valid_pixels": n_valid,
        "min": lo,
        "max": hi,
        "mean": total / n_valid,
        "_sample": np.concatenate(kept) if kept else np.zeros(0),
    }


def _window_blocks(
    win: Any, valid: np.ndarray, block_src: Any, centres: Any, stack: Any
) -> np.ndarray:
    if block_src is not None:
        ids = block_src.read(1, window=win)
        return np.nan_to_num(ids[valid], nan=0).astype(np.int64)
    if centres is not None:
        rows, cols = np.nonzero(valid)
        from slidewise.engine.geo.samples import pixel_centres

        xs, ys = pixel_centres(stack, rows + int(win.row_off), cols + int(win.col_off))
        return nearest_centre(xs, ys, np.asarray(centres))
    return np.zeros(int(valid.sum()), dtype=np.int64)


def _count_unseen(
    encoder: FeatureEncoder, raw: np.ndarray, unseen: dict[str, dict[float, int]] | None
) -> None:
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


def _predict_table(
    params: dict[str, Any],
    fitted: FittedModel,
    encoder: FeatureEncoder,
    centres: Any,
    output: str,
    ctx: JobContext,
) -> dict[str, Any]:
    import csv

    from slidewise.engine.core.outputs import atomic_output
    from slidewise.engine.geo.tables import find_column, numeric_columns, read_table

    path = str(params["TABLE"])
    name = Path(path).name
    table = read_table(path, warn=ctx.warn)
    cols = [find_column(table, b, name) for b in encoder.bands]
    raw = numeric_columns(table, cols, name)
    x = encoder.transform(raw, warn=ctx.warn)
    ids = None
    if fitted.method == "meta":
        if centres is None:
            raise InputError(
                "This model's blocks come from a raster: predict it on a factor stack, not a table."
            )
        xc = find_column(table, str(params.get("X_FIELD") or "x"), name)
        yc = find_column(table, str(params.get("Y_FIELD") or "y"), name)
        xy = numeric_columns(table, [xc, yc], name)
        ids = nearest_centre(xy[:, 0], xy[:, 1], np.asarray(centres))
    p = fitted.predict(x, ids)
    keys = list(table)
    with atomic_output(output) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*keys, "susceptibility"])
        for i in range(p.size):
            writer.writerow([*(table[k][i] for k in keys), f"{p[i]:.6f}"])
    return {"rows": int(p.size), "mean": float(p.mean()) if p.size else float("nan")}
