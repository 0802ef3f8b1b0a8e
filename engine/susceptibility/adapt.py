"""Few-shot adaptation of a block-wise model to new blocks: the ``adaptsusceptibility`` job.

A model trained with METHOD ``meta`` or ``hybrid`` holds a meta-learned
initialisation of a small MLP. This job adapts that initialisation to every
block of an area (new blocks of the same area, or a new area with the same
factors) with a few new samples per block, using :func:`.maml.adapt_many` (the
inner loop of meta-training, all blocks at once): no meta-training again,
seconds on a CPU. A ``hybrid`` model keeps its global part and the mix chosen in
training (:mod:`.hybridmix`); its bootstrap members are adapted the same way,
each from its own initialisation. (A hybrid file from before wave 2 session 6
also holds per-block logit offsets, :mod:`.blockoffset`: an adapted block drops
its offset, as new hybrids have none.)
Global models (``rf``, ``lr``, ``gbm``, ``svm``, ``mlp``, ``fr``) have nothing
block-wise to adapt and are refused with what to do instead.

Honest scores: in each block, a share (HOLDOUT) of each class is held out;
the block adapts on at most SHOTS of the other samples (class-balanced), and
every sample it did not adapt on is scored before adaptation (the model as it
was) and after. The adapted model is written as a model file of the same
method whose block raster is the area's, so ``predictsusceptibility`` uses it
as it is.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.contract.specs.adaptsusceptibility import SPEC as ADAPT_SPEC
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.geo.samples import FeatureEncoder, SampleSet, collect_samples
from slidewise.engine.susceptibility.blocks import (
    BlockJobParams,
    auto_blocks,
    grid_doc,
    read_block_raster,
    sample_blocks,
    segment_stack,
    write_block_raster,
)
from slidewise.engine.susceptibility.calibration import calibrator_from_model
from slidewise.engine.susceptibility.crossval import scores
from slidewise.engine.susceptibility.maml import MetaConfig
from slidewise.engine.susceptibility.models import (
    FittedModel,
    TrainSettings,
    adapt_blocks,
    model_from_tensors,
    model_tensors,
)
from slidewise.engine.susceptibility.predict import band_order

#: Methods whose models this job adapts (the block-wise ones).
ADAPTABLE_METHODS = ("meta", "hybrid")


@dataclass(frozen=True)
class AdaptParams(BlockJobParams):
    """Parameters of the ``adaptsusceptibility`` job (``contract/specs/adaptsusceptibility.py``).

    The stack, sampling and block fields are those of :class:`BlockJobParams`
    (categorical factors come from the model).

    Attributes:
        model: MODEL, a ``meta`` or ``hybrid`` model file from trainsusceptibility.
        blocks: BLOCKS raster of the area (empty: segment the stack here).
        shots: SHOTS, at most this many samples adapt each block (0: all not held out).
        holdout: HOLDOUT, share of each class per block kept out to score the block.
        output: OUTPUT adapted model file.
        output_blocks: OUTPUT_BLOCKS, where blocks segmented here go.
        output_samples: OUTPUT_SAMPLES, optional CSV of the samples and their scores.
    """

    SPEC = ADAPT_SPEC

    model: str = ""
    blocks: str | None = None
    shots: int = 0
    holdout: float = 0.3
    output: str = ""
    output_blocks: str | None = None
    output_samples: str | None = None

    def inputs(self) -> list[str]:
        """The files read (for the run manifest)."""
        return self.sample_inputs(self.blocks, self.model)


@dataclass
class LoadedModel:
    """The block-wise model to adapt, as read from its file.

    Attributes:
        fitted: The model (method ``meta`` or ``hybrid``).
        encoder: Raw factor values -> model features.
        metadata: The file's metadata (copied into the adapted model).
        tensors: The file's tensors.
    """

    fitted: FittedModel
    encoder: FeatureEncoder
    metadata: Any
    tensors: dict[str, Any]


@dataclass
class AreaSamples:
    """The new samples on the model's features, with their blocks.

    Attributes:
        samples: The samples (coordinates, labels, raw values).
        x: Encoded features (n, d).
        blocks: Block ID per sample.
        block_doc: Where the blocks come from (recorded in the adapted model).
    """

    samples: SampleSet
    x: np.ndarray
    blocks: np.ndarray
    block_doc: dict[str, Any]


def run_adapt(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Adapt a block-wise model's initialisation to every block of an area with a few samples.

    Parameters: see ``contract/specs/adaptsusceptibility.py``: MODEL, the factor
    stack, the new samples (INVENTORY...), BLOCKS or the block group, SHOTS,
    HOLDOUT, OUTPUT, OUTPUT_BLOCKS and OUTPUT_SAMPLES.
    """
    options = AdaptParams.from_params(params)
    for path in (options.output, options.output_samples):
        if path:
            check_writable(path)
    start = time.time()
    model = load_blockwise_model(options.model)
    warn_unweighted_mlp(model.fitted, ctx)
    area = area_samples(options, model, ctx)
    ctx.progress(40)
    seed = options.seed_or(ctx.options.seed)
    support = split_support(area.samples.labels, area.blocks, options.shots, options.holdout, seed)
    before = model_before(model, area.block_doc)
    tic = time.perf_counter()
    adapted = adapt_area(model, before, area, support)
    toc = time.perf_counter()
    ctx.progress(80)
    figures = adaptation_figures(model, area, support, before, adapted, ctx)
    figures["adaptation_seconds"] = round(toc - tic, 3)
    figures["seconds"] = round(time.time() - start, 3)
    ensemble = area_ensemble(model, adapted, area, support)
    save_adapted(options, model, adapted, (area.block_doc, ensemble), figures)
    outputs = {"OUTPUT": options.output}
    if options.output_samples:
        write_sample_scores(options.output_samples, model, area, support, (before, adapted))
        outputs["OUTPUT_SAMPLES"] = options.output_samples
    if not options.blocks:
        outputs["OUTPUT_BLOCKS"] = area.block_doc["path"]
    ctx.log(
        f"Adapted model written to {options.output} in {figures['seconds']} s "
        f"(adaptation {figures['adaptation_seconds']} s)."
    )
    return JobResult(outputs=outputs, figures=figures, inputs=options.inputs())


def warn_unweighted_mlp(fitted: FittedModel, ctx: JobContext) -> None:
    """Warn when a ``hybrid``'s mix gives its adapted MLP no weight: adapting changes nothing."""
    if fitted.method == "hybrid" and fitted.mix.weight == 0.0:
        ctx.warn(
            "This hybrid model's mix, chosen on its training blocks, gives the adapted MLP "
            f"weight 0 ({fitted.mix.describe()}): its maps are those of its global part, so "
            "adapting changes no probability. Train a meta model to adapt block by block, or "
            "add the new samples to the inventory and train again."
        )


def load_blockwise_model(path: str) -> LoadedModel:
    """Read a model file and check that it is a block-wise (``meta`` or ``hybrid``) model.

    Raises:
        InputError: the model is a global model, or was trained on a sample table.
    """
    from slidewise.engine.core.modelfile import load_model

    tensors, meta = load_model(path, task="susceptibility")
    fitted = model_from_tensors(tensors, meta.config)
    if fitted.method not in ADAPTABLE_METHODS:
        chosen = meta.config.get("selection", {}).get("requested") == "auto"
        raise InputError(
            f"The model '{Path(path).name}' was trained with METHOD {fitted.method}"
            f"{' (chosen by METHOD auto)' if chosen else ''}, one global "
            "model for every block: it has no block-wise part to adapt. Add the new samples "
            "to the inventory and train it again (Train susceptibility model), or train a "
            "block-wise model (METHOD hybrid or meta) and adapt that one."
        )
    if meta.extra.get("blocks", {}).get("source") == "kmeans":
        raise InputError(
            f"The model '{Path(path).name}' was trained on a sample table (its blocks are "
            "clusters of coordinates): adapt a model trained on a factor stack."
        )
    return LoadedModel(fitted, FeatureEncoder.from_dict(meta.normalisation), meta, tensors)


def area_samples(options: AdaptParams, model: LoadedModel, ctx: JobContext) -> AreaSamples:
    """The new samples of the area on the model's factors, and their blocks.

    Blocks come from BLOCKS, or the stack is segmented here and the blocks are
    written to OUTPUT_BLOCKS (default ``<model>_blocks.tif``).
    """
    from slidewise.engine.core.manifest import file_sha256

    sampling = options.sampling_options(ctx.options.seed)
    with options.open_stack(list(model.encoder.categorical)) as stack:
        order = band_order(stack.names, model.encoder.bands)
        samples = collect_samples(stack, sampling, warn=ctx.warn)
        ctx.log(
            f"New samples: {samples.counts['landslides']} landslides, "
            f"{samples.counts['non_landslides']} non-landslides."
        )
        block_path = options.blocks or ""
        if block_path:
            labels, factor = read_block_raster(block_path, stack), 1
        else:
            block_path = options.output_blocks or str(
                Path(options.output).with_name(Path(options.output).stem + "_blocks.tif")
            )
            n_blocks = options.n_blocks or blocks_like_model(model, stack, len(samples))
            labels, factor, bands, _ = segment_stack(stack, options.block_params(n_blocks))
            write_block_raster(block_path, labels, factor, stack)
            ctx.log(
                f"Segmented {int(labels.max())} blocks on {', '.join(bands)}; wrote {block_path}."
            )
        doc = {
            "source": "raster",
            "path": str(Path(block_path).resolve()),
            "sha256": file_sha256(block_path),
            "grid": grid_doc(stack),
        }
    x = model.encoder.transform(samples.values[:, order].astype(np.float64), warn=ctx.warn)
    blocks = sample_blocks(labels, samples.rows, samples.cols, factor)
    return AreaSamples(samples, x, blocks, doc)


def blocks_like_model(model: LoadedModel, stack: Any, n_samples: int) -> int:
    """Blocks of the size the model was trained on, over the area of ``stack``.

    Falls back on about 25 samples per block when the model does not record its grid.
    """
    grid = model.metadata.extra.get("blocks", {}).get("grid") or {}
    ids = [int(k.split(".")[1]) for k in model.tensors if k.startswith("blocks.")]
    ids += [int(k) for k in model.fitted.fallback]
    if not grid.get("width") or not ids:
        return auto_blocks(n_samples)
    a = abs(grid["transform"][0] * grid["transform"][4]) * grid["width"] * grid["height"]
    area = abs(stack.transform.a * stack.transform.e) * stack.width * stack.height
    return int(min(256, max(1, round(max(ids) * area / max(a, 1e-12)))))


def split_support(
    labels: np.ndarray, blocks: np.ndarray, shots: int, holdout: float, seed: int
) -> np.ndarray:
    """Which samples adapt their block (``True``); the others are scored.

    In each block, ``ceil(holdout * n)`` samples of each class with ``n >= 2``
    samples are held out; from the rest at most ``shots`` (0: all), class-balanced,
    adapt the block. Samples on block 0 (nodata in the blocks) are never adapted on.
    """
    rng = np.random.default_rng(seed)
    support = np.zeros(labels.size, dtype=bool)
    for bid in np.unique(blocks[blocks > 0]):
        pools = []
        for cls in (1, 0):
            members = rng.permutation(np.flatnonzero((blocks == bid) & (labels == cls)))
            n_hold = math.ceil(holdout * members.size) if members.size >= 2 else 0
            pools.append(members[n_hold:])
        pos, neg = pools
        n_sup = pos.size + neg.size if shots <= 0 else min(shots, pos.size + neg.size)
        k_pos = min(pos.size, max(n_sup - neg.size, (n_sup + 1) // 2))
        support[pos[:k_pos]] = True
        support[neg[: n_sup - k_pos]] = True
    return support


def model_before(model: LoadedModel, block_doc: dict[str, Any]) -> FittedModel:
    """The model as it predicts the area before adaptation.

    On the block raster it was trained with, each block keeps its adapted weights;
    on other blocks every block starts from the meta-learned initialisation
    (``hybrid``: with its global part).
    """
    return unadapted(model.fitted, model, block_doc)


def unadapted(fitted: FittedModel, model: LoadedModel, block_doc: dict[str, Any]) -> FittedModel:
    """``fitted`` (the model or one of its members) without its blocks, unless on its raster."""
    trained = model.metadata.extra.get("blocks", {}).get("sha256")
    if trained and trained == block_doc["sha256"]:
        return fitted
    return replace(fitted, blocks={}, fallback={}, offsets={})


def adaptation_settings(model: LoadedModel) -> TrainSettings:
    """The model's own adaptation settings (inner loop, MIN_BLOCK_SAMPLES, ONE_CLASS_BLOCKS)."""
    config = model.metadata.config
    return TrainSettings(
        method=model.fitted.method,
        meta=MetaConfig.from_dict(config.get("meta", {})),
        min_block_samples=int(config.get("min_block_samples", 3)),
        one_class=str(config.get("one_class", "adapt")),
    )


def area_ensemble(
    model: LoadedModel, adapted: FittedModel, area: AreaSamples, support: np.ndarray
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Bootstrap members of the adapted model on the area's support samples (UNCERTAINTY).

    The source model's members were adapted to its own blocks; the area's blocks
    get their own, each re-adapted on a resample of its support samples (``meta``:
    from the shared initialisation; ``hybrid``: each source member from its own
    initialisation, with its own global part).
    """
    from slidewise.engine.susceptibility.uncertainty import ensemble_tensors, fit_ensemble

    keep = support & (area.blocks > 0)
    samples = (area.x[keep], area.samples.labels[keep], area.blocks[keep])
    settings = adaptation_settings(model)
    if model.fitted.method == "meta":
        return ensemble_tensors(fit_ensemble(adapted, samples, settings))
    members = hybrid_members(model, samples, settings, area.block_doc)
    return ensemble_tensors(members)


def hybrid_members(
    model: LoadedModel,
    samples: tuple[np.ndarray, np.ndarray, np.ndarray],
    settings: TrainSettings,
    block_doc: dict[str, Any],
) -> list[FittedModel]:
    """The ``hybrid`` source model's bootstrap members, adapted to a resample of ``samples``.

    Each member keeps its own initialisation and global part; on the area's
    blocks (``block_doc``) it starts as the model does (:func:`unadapted`).
    """
    from slidewise.engine.susceptibility.uncertainty import (
        bootstrap_within_blocks,
        ensemble_from_model,
    )

    x, y, blocks = samples
    rng = np.random.default_rng(settings.seed + 7919)
    members = []
    for member in ensemble_from_model(model.tensors, model.metadata.config, model.fitted):
        member.skeleton = model.fitted.skeleton  # the members' config omits the MLP's layers
        before = unadapted(member, model, block_doc)
        idx = bootstrap_within_blocks(blocks, rng)
        members.append(adapt_fitted(before, (x[idx], y[idx], blocks[idx]), settings))
    return members


def adapt_area(
    model: LoadedModel, before: FittedModel, area: AreaSamples, support: np.ndarray
) -> FittedModel:
    """Adapt the initialisation to every block with its support samples.

    Blocks without (enough) support samples keep what they had before; the
    model's MIN_BLOCK_SAMPLES and ONE_CLASS_BLOCKS settings apply.
    """
    keep = support & (area.blocks > 0)
    samples = (area.x[keep], area.samples.labels[keep], area.blocks[keep])
    return adapt_fitted(before, samples, adaptation_settings(model))


def adapt_fitted(
    before: FittedModel,
    samples: tuple[np.ndarray, np.ndarray, np.ndarray],
    settings: TrainSettings,
) -> FittedModel:
    """``before`` with every block of ``samples`` adapted on its samples.

    ``hybrid``: the global part and the mix are kept; an old file's block that
    is adapted here drops its offset (new hybrids have none), other blocks keep
    theirs.
    """
    x, y, blocks = samples
    adapted = replace(before, blocks=dict(before.blocks), fallback={}, one_class={})
    adapt_blocks(adapted, x, y, blocks, settings)
    for bid in list(adapted.fallback):
        if bid in before.blocks:  # a block trained before keeps its weights
            del adapted.fallback[bid]
    here = {int(b) for b in np.unique(blocks)}
    adapted.offsets = {b: c for b, c in before.offsets.items() if b not in here}
    return adapted


def block_scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC (NaN with one class) and Brier score of probabilities ``p``."""
    brier = float(np.mean((p - y) ** 2)) if y.size else float("nan")
    return {"auc": scores(y, p)["auc"] if y.size else float("nan"), "brier": brier}


def adaptation_figures(
    model: LoadedModel,
    area: AreaSamples,
    support: np.ndarray,
    before: FittedModel,
    adapted: FittedModel,
    ctx: JobContext,
) -> dict[str, Any]:
    """Scores before and after adaptation on the samples not adapted on, pooled and per block.

    Probabilities are calibrated with the model's calibrator, as predictsusceptibility
    writes them.
    """
    y, held = area.samples.labels, ~support
    calibrated = calibrator_from_model(model.tensors, model.metadata.config).apply
    pb = calibrated(before.predict(area.x[held], area.blocks[held]))
    pa = calibrated(adapted.predict(area.x[held], area.blocks[held]))
    per_block: dict[str, Any] = {}
    for bid in np.unique(area.blocks):
        sel_h, hb = area.blocks[held] == bid, int(bid)
        sb, sa = block_scores(y[held][sel_h], pb[sel_h]), block_scores(y[held][sel_h], pa[sel_h])
        per_block[str(hb)] = {
            "support": int(np.sum(support & (area.blocks == bid))),
            "holdout": int(sel_h.sum()),
            "holdout_landslides": int(y[held][sel_h].sum()),
            "adapted": hb in adapted.blocks and hb not in adapted.fallback,
            "auc_before": sb["auc"],
            "auc_after": sa["auc"],
            "brier_before": sb["brier"],
            "brier_after": sa["brier"],
        }
    pooled_b, pooled_a = block_scores(y[held], pb), block_scores(y[held], pa)
    figures = {
        "support_samples": int(support.sum()),
        "holdout_samples": int(held.sum()),
        "adapted_blocks": sorted(
            int(b) for b in np.unique(area.blocks[support]) if int(b) not in adapted.fallback
        ),
        "holdout_auc_before": pooled_b["auc"],
        "holdout_auc_after": pooled_a["auc"],
        "holdout_brier_before": pooled_b["brier"],
        "holdout_brier_after": pooled_a["brier"],
        "blocks": per_block,
    }
    log_scores(figures, adapted, ctx)
    return figures


def log_scores(figures: dict[str, Any], adapted: FittedModel, ctx: JobContext) -> None:
    """Log the pooled and per-block scores; warn about blocks that could not adapt."""
    ctx.log(
        f"Adapted {len(figures['adapted_blocks'])} blocks on {figures['support_samples']} "
        f"samples; scored on {figures['holdout_samples']} samples not adapted on: AUC "
        f"{figures['holdout_auc_before']:.3f} before, {figures['holdout_auc_after']:.3f} after "
        f"(Brier {figures['holdout_brier_before']:.3f} -> {figures['holdout_brier_after']:.3f})."
    )
    for bid, row in figures["blocks"].items():
        if row["holdout"]:
            ctx.log(
                f"  block {bid}: {row['support']} adapted on, {row['holdout']} scored "
                f"({row['holdout_landslides']} landslides): AUC {auc_text(row['auc_before'])} -> "
                f"{auc_text(row['auc_after'])}, Brier {row['brier_before']:.3f} -> "
                f"{row['brier_after']:.3f}"
            )
    if adapted.fallback:
        listed = "; ".join(f"block {k}: {v}" for k, v in sorted(adapted.fallback.items())[:20])
        ctx.warn(f"{len(adapted.fallback)} blocks kept the meta-learned initialisation: {listed}")
    if figures["holdout_samples"] == 0:
        ctx.warn("No sample was held out (HOLDOUT 0 or too few samples): no scores.")


def auc_text(auc: float) -> str:
    """An AUC for the log: three decimals, or why there is none."""
    return "n/a (one class)" if math.isnan(auc) else f"{auc:.3f}"


def save_adapted(
    options: AdaptParams,
    model: LoadedModel,
    adapted: FittedModel,
    area_doc: tuple[dict[str, Any], tuple[dict[str, Any], dict[str, Any]]],
    figures: dict[str, Any],
) -> None:
    """Write the adapted model: the source's metadata with the area's blocks and scores.

    ``area_doc`` is the area's block record and its bootstrap members (tensors,
    config entry), which replace the source's.
    """
    from slidewise.engine.core.modelfile import save_model

    block_doc, (member_tensors, member_config) = area_doc
    meta = model.metadata
    config = dict(meta.config)
    config["ensemble"] = member_config
    config["fallback"] = {str(k): v for k, v in sorted(adapted.fallback.items())}
    provenance = dict(meta.provenance)
    provenance["adapted_from"] = str(Path(options.model).resolve())
    provenance["adaptation_inputs"] = options.inputs()
    metrics = dict(meta.metrics)
    metrics["adaptation"] = {k: v for k, v in figures.items() if k != "blocks"}
    extra = {**meta.extra, "blocks": block_doc, "adaptation_blocks": figures["blocks"]}
    doc = replace(meta, config=config, provenance=provenance, metrics=metrics, extra=extra)
    kept = {k: v for k, v in model.tensors.items() if not k.startswith(("init.", "inner_lr."))}
    kept = {k: v for k, v in kept.items() if not k.startswith(("blocks.", "ensemble.", "offsets."))}
    save_model(options.output, {**model_tensors(adapted), **kept, **member_tensors}, doc)


def write_sample_scores(
    path: str,
    model: LoadedModel,
    area: AreaSamples,
    support: np.ndarray,
    fitted: tuple[FittedModel, FittedModel],
) -> None:
    """CSV of the samples: x, y, label, block, role and calibrated probability before/after."""
    import csv

    from slidewise.engine.core.outputs import atomic_output

    calibrated = calibrator_from_model(model.tensors, model.metadata.config).apply
    pb = calibrated(fitted[0].predict(area.x, area.blocks))
    pa = calibrated(fitted[1].predict(area.x, area.blocks))
    s = area.samples
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["x", "y", "label", "block", "role", "p_before", "p_after"])
        for i in range(len(s)):
            role = "support" if support[i] else "holdout"
            xy = [f"{s.xs[i]:.3f}", f"{s.ys[i]:.3f}"]
            label = [int(s.labels[i]), int(area.blocks[i]), role]
            writer.writerow([*xy, *label, f"{pb[i]:.6f}", f"{pa[i]:.6f}"])
