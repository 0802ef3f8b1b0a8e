"""Training a susceptibility model: the ``trainsusceptibility`` engine job.

Stack (or a sample table) + inventory -> model file. Method ``meta``
meta-learns an MLP initialisation over the blocks (MAML) and adapts it to every
block with that block's samples; ``rf``, ``lr``, ``mlp`` and ``fr`` fit one
global model (:mod:`.models`). Leave-blocks-out and random cross-validation
AUCs are reported (:mod:`.crossval`). Blocks come from a block raster
(segmentblocks), from segmenting the stack here, or, for tables, from k-means
clusters of the sample coordinates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.contract.specs.trainsusceptibility import BLOCKWISE_METHODS
from slidewise.contract.specs.trainsusceptibility import SPEC as TRAIN_SPEC
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.geo.samples import FeatureEncoder, collect_samples
from slidewise.engine.geo.sampletables import read_sample_table
from slidewise.engine.susceptibility.blocks import (
    BlockJobParams,
    auto_blocks,
    grid_doc,
    kmeans_blocks,
    read_block_raster,
    sample_blocks,
    segment_stack,
    write_block_raster,
)
from slidewise.engine.susceptibility.classical import ARCHITECTURES
from slidewise.engine.susceptibility.crossval import (
    LabelledSamples,
    leave_blocks_out,
    random_cv,
    scores,
    summarise,
)
from slidewise.engine.susceptibility.factor_analysis import (
    FactorAnalysisParams,
    analyse_trained_factors,
    screen_training_factors,
)
from slidewise.engine.susceptibility.maml import MetaConfig
from slidewise.engine.susceptibility.model_extras import calibrate_and_ensemble
from slidewise.engine.susceptibility.models import (
    FittedModel,
    TrainSettings,
    fit_model,
    hybrid_config,
    model_tensors,
)

#: Unlabelled pixels drawn for denoising-autoencoder pretraining.
PRETRAIN_PIXELS = 50_000
#: Blocks listed in a warning.
LISTED_BLOCKS = 20
#: What ``auto`` trains when cross-validation is switched off.
AUTO_FALLBACK = "hybrid"


@dataclass(frozen=True)
class TrainParams(BlockJobParams, FactorAnalysisParams):
    """Parameters of the ``trainsusceptibility`` job (``contract/specs/trainsusceptibility.py``).

    The stack, sampling and block fields are those of :class:`BlockJobParams`
    (N_BLOCKS 0: about 25 samples per block); the factor-analysis fields those of
    :class:`FactorAnalysisParams`.

    Attributes:
        table: TABLE, a sample table instead of a stack and an inventory.
        factor_fields: FACTOR_FIELDS of the table (empty: every other numeric column).
        blocks: BLOCKS, a block raster from segmentblocks (empty: segment the stack).
        method: METHOD, one of ``auto`` (chosen by cross-validation), ``meta``,
            ``hybrid``, ``rf``, ``lr``, ``mlp``, ``svm``, ``gbm``, ``fr``.
        iterations_meta: ITERATIONS_META, meta-iterations.
        inner_steps: INNER_STEPS, adaptation steps.
        inner_lr: INNER_LR, adaptation learning rate.
        learn_inner_lr: LEARN_INNER_LR, learn the adaptation learning rates.
        meta_lr: META_LR, outer Adam learning rate.
        tasks_per_batch: TASKS_PER_BATCH, blocks per meta-batch.
        support: SUPPORT samples per block in meta-training.
        query: QUERY samples per block in meta-training.
        pretrain_epochs: PRETRAIN_EPOCHS of the denoising autoencoder (0 = none).
        min_block_samples: MIN_BLOCK_SAMPLES to adapt a block.
        one_class_blocks: ONE_CLASS_BLOCKS, ``adapt`` or ``fallback``.
        shots: SHOTS, support samples per held-out block in leave-blocks-out CV.
        cv_folds: CV_FOLDS of both cross-validations (0 = none).
        n_estimators: N_ESTIMATORS, trees of ``rf``.
        calibration: CALIBRATION, ``platt``, ``isotonic`` or ``none`` (:mod:`.calibration`).
        output: OUTPUT model file.
        output_blocks: OUTPUT_BLOCKS, where blocks segmented here go (default
            ``<model>_blocks.tif``).
    """

    SPEC = TRAIN_SPEC

    table: str | None = None
    factor_fields: Sequence[str] = ()
    blocks: str | None = None
    method: str = "auto"
    iterations_meta: int = 2000
    inner_steps: int = 10
    inner_lr: float = 0.1
    learn_inner_lr: bool = False
    meta_lr: float = 0.001
    tasks_per_batch: int = 16
    support: int = 6
    query: int = 32
    pretrain_epochs: int = 0
    min_block_samples: int = 3
    one_class_blocks: str = "adapt"
    shots: int = 5
    cv_folds: int = 5
    n_estimators: int = 200
    calibration: str = "platt"
    output: str = ""
    output_blocks: str | None = None
    output_report: str | None = None

    def train_settings(self, run_seed: int) -> TrainSettings:
        """Method and hyper-parameters; SEED defaults to the run seed."""
        meta = MetaConfig(
            hidden=MetaConfig.hidden,
            inner_steps=self.inner_steps,
            inner_lr=self.inner_lr,
            learn_inner_lr=self.learn_inner_lr,
            meta_lr=self.meta_lr,
            iterations=self.iterations_meta,
            tasks_per_batch=self.tasks_per_batch,
            support=self.support,
            query=self.query,
            pretrain_epochs=self.pretrain_epochs,
        )
        return TrainSettings(
            method=self.method,
            meta=meta,
            min_block_samples=self.min_block_samples,
            one_class=self.one_class_blocks,
            n_estimators=self.n_estimators,
            seed=self.seed_or(run_seed),
        )

    def inputs(self) -> list[str]:
        """The files read (for the run manifest)."""
        return self.sample_inputs(self.blocks, self.table)


@dataclass
class TrainingData(LabelledSamples):
    """Samples prepared for training: values, labels, blocks and provenance.

    Attributes:
        block_doc: Where the blocks come from (recorded in the model file).
        extra_tensors: Tensors stored besides the model's (k-means centres).
        unlabelled: Raw values of unlabelled pixels (DAE pretraining).
        pixel_size: Pixel size of the stack.
        counts: Sample counts (landslides, non-landslides...).
    """

    block_doc: dict[str, Any] = field(default_factory=dict)
    extra_tensors: dict[str, Any] = field(default_factory=dict)
    unlabelled: np.ndarray | None = None
    pixel_size: list[float] | None = None
    counts: dict[str, int] = field(default_factory=dict)


def auto_without_cv(settings: TrainSettings, ctx: JobContext) -> TrainSettings:
    """``auto`` with CV_FOLDS below 2: no comparison; the hybrid is trained, with a warning."""
    ctx.warn(
        "METHOD auto chooses the method by leave-blocks-out cross-validation, but CV_FOLDS "
        f"is below 2: no methods were compared and {AUTO_FALLBACK} was trained. Set CV_FOLDS "
        "to 2 or more to compare the methods on these data."
    )
    return replace(settings, method=AUTO_FALLBACK, selected_by="auto")


def resolve_method(
    settings: TrainSettings, figures: dict[str, Any], ctx: JobContext
) -> TrainSettings:
    """The method to fit: ``auto``'s choice from the comparison; logs and warns about it."""
    from slidewise.engine.susceptibility.selection import MethodScore, choose

    rows = figures["cv"].get("comparison", [])
    table = [MethodScore(**row) for row in rows]
    chosen, lines, warnings = choose(settings.method, table)
    for line in lines:
        ctx.log(line)
    for text in warnings:
        ctx.warn(text)
    if settings.method == "auto":
        figures["cv"]["chosen"] = chosen
        figures["method"] = chosen
        for key in ("auc_mean", "auc_sd"):
            row = next(r for r in rows if r["method"] == chosen)
            figures["cv"][f"spatial_{key}"] = row[key]
    return replace(settings, method=chosen, selected_by=settings.method)


def run_train(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Train a susceptibility model (few-shot meta-learning over blocks, or a global model).

    Parameters: see ``contract/specs/trainsusceptibility.py``: the factor stack and
    inventory (or TABLE), BLOCKS or the block group, METHOD and its
    hyper-parameters, SHOTS and CV_FOLDS of the cross-validation, OUTPUT and
    OUTPUT_BLOCKS.
    """
    options = TrainParams.from_params(params)
    check_writable(options.output)
    if options.output_report:
        check_writable(options.output_report)
    settings = options.train_settings(ctx.options.seed)
    if settings.method == "auto" and options.cv_folds < 2:
        settings = auto_without_cv(settings, ctx)
    prepare_runtime(settings.seed, ctx)
    start = time.time()
    if options.table:
        data = training_data_table(options, settings.seed, ctx)
    else:
        pretrain = (
            settings.method in ("meta", "hybrid", "auto") and settings.meta.pretrain_epochs > 0
        )
        data = training_data_raster(options, ctx, pretrain)
    ctx.progress(12)
    figures = block_figures(data, settings, ctx)
    figures["collinearity"] = screen_training_factors(options, data, ctx)
    if options.cv_folds:
        figures["cv"] = cross_validate(data, settings, options.cv_folds, options.shots, ctx)
        settings = resolve_method(settings, figures, ctx)
        if settings.selected_by == "auto":
            random_cv_figures(data, settings, options.cv_folds, figures["cv"], ctx)
    ctx.progress(60)
    encoder = FeatureEncoder.fit(data.values, data.bands, data.categorical)
    fitted = fit_final(data, encoder, settings, ctx)
    config = model_config(fitted, settings, figures, ctx)
    calibrate_and_ensemble(
        data, encoder, fitted, settings, options.calibration, options.output, ctx
    ).add_to(data.extra_tensors, config, figures)
    xt = encoder.transform(data.values)
    figures["train_auc"] = scores(data.labels, fitted.predict(xt, data.blocks))["auc"]
    factors = analyse_trained_factors(options, options.output, data, fitted, encoder, figures, ctx)
    figures["seconds"] = round(time.time() - start, 2)
    save_trained(options, data, fitted, encoder, settings, config, figures)
    ctx.log(f"Model written to {options.output} (training AUC {figures['train_auc']:.3f}).")
    outputs = {"OUTPUT": options.output, "OUTPUT_FACTORS": factors}
    if data.block_doc.get("source") == "raster" and not options.blocks:
        outputs["OUTPUT_BLOCKS"] = data.block_doc["path"]
    if options.output_report:
        outputs["OUTPUT_REPORT"] = write_report_of(options, data, figures)
    return JobResult(outputs=outputs, figures=figures, inputs=options.inputs())


def write_report_of(options: TrainParams, data: TrainingData, figures: dict[str, Any]) -> str:
    """Write the training report (OUTPUT_REPORT, and its JSON); returns its path."""
    from slidewise.engine.susceptibility.training_report import (
        training_report,
        write_training_report,
    )

    assert options.output_report
    inputs: dict[str, str | None] = {
        "INPUT": options.input,
        "INVENTORY": options.inventory,
        "NEGATIVES": options.negatives,
        "TABLE": options.table,
        "BLOCKS": options.blocks,
        **{f"FACTORS {i + 1}": str(f) for i, f in enumerate(options.factors or [])},
    }
    blocks = str(data.block_doc.get("path") or "")
    report = training_report(options.output, figures, inputs, blocks)
    for section, after in analysis_sections(figures):
        report.add(section, after=after)
    write_training_report(options.output_report, report, figures)
    return options.output_report


def analysis_sections(figures: dict[str, Any]) -> list[tuple[Any, str]]:
    """Report sections of the method comparison and the factor analysis, with where they go.

    Returns:
        ``(section, key of the section it follows)``; an empty key: at the end.
    """
    from slidewise.engine.susceptibility.factor_report import factor_sections
    from slidewise.engine.susceptibility.selection import comparison_section

    sections: list[tuple[Any, str]] = []
    cv = figures.get("cv") or {}
    if cv.get("comparison"):
        sections.append((comparison_section(cv["comparison"], str(cv.get("chosen", ""))), "cv"))
    for section in factor_sections(figures.get("importance"), figures.get("collinearity")):
        sections.append((section, ""))
    return sections


def prepare_runtime(seed: int, ctx: JobContext) -> None:
    """Seed every generator; deterministic kernels and thread count as the run asks."""
    from slidewise.engine.core.runtime import seed_everything, set_deterministic

    seed_everything(seed)
    if ctx.options.deterministic:  # (switching it off is the default: skip the costly import)
        set_deterministic(True)
    if ctx.options.threads > 0:
        import torch

        torch.set_num_threads(ctx.options.threads)


def training_data_raster(options: TrainParams, ctx: JobContext, pretrain: bool) -> TrainingData:
    """Samples of the stack at the inventory, their blocks and (``pretrain``) unlabelled pixels.

    Blocks come from BLOCKS, or the stack is segmented here and the blocks written
    to OUTPUT_BLOCKS (default ``<model>_blocks.tif``).
    """
    from slidewise.engine.core.manifest import file_sha256

    sampling = options.sampling_options(ctx.options.seed)
    with options.open_stack() as stack:
        samples = collect_samples(stack, sampling, warn=ctx.warn)
        ctx.log(
            f"Samples: {samples.counts['landslides']} landslides, "
            f"{samples.counts['non_landslides']} non-landslides."
        )
        ctx.progress(8)
        block_path = options.blocks or ""
        if block_path:
            labels, factor = read_block_raster(block_path, stack), 1
        else:
            block_path = options.output_blocks or str(
                Path(options.output).with_name(Path(options.output).stem + "_blocks.tif")
            )
            labels, factor = segment_blocks_here(options, stack, len(samples), block_path, ctx)
        unlabelled = unlabelled_pixels(stack, sampling.seed) if pretrain else None
        doc = {
            "source": "raster",
            "path": str(Path(block_path).resolve()),
            "sha256": file_sha256(block_path),
            "grid": grid_doc(stack),
        }
        res = [abs(stack.transform.a), abs(stack.transform.e)]
    return TrainingData(
        samples.values.astype(np.float64),
        samples.labels,
        sample_blocks(labels, samples.rows, samples.cols, factor),
        list(samples.bands),
        list(options.categorical),
        block_doc=doc,
        unlabelled=unlabelled,
        pixel_size=res,
        counts=dict(samples.counts),
    )


def segment_blocks_here(
    options: TrainParams, stack: Any, n_samples: int, path: str, ctx: JobContext
) -> tuple[np.ndarray, int]:
    """Segment the (open) stack, write the block raster to ``path``; ``(labels, factor)``."""
    bparams = options.block_params(auto_blocks(n_samples))
    labels, factor, bands, _weights = segment_stack(stack, bparams)
    write_block_raster(path, labels, factor, stack)
    ctx.log(f"Segmented {int(labels.max())} blocks on {', '.join(bands)}; wrote {path}.")
    return labels, factor


def unlabelled_pixels(stack: Any, seed: int) -> np.ndarray:
    """Raw values of random valid pixels of the (open) stack, for DAE pretraining."""
    from slidewise.engine.geo.samples import sample_pixels

    rng = np.random.default_rng(seed)
    m = min(PRETRAIN_PIXELS, stack.width * stack.height)
    r, c = rng.integers(0, stack.height, m), rng.integers(0, stack.width, m)
    pix, ok = sample_pixels(stack, r, c)
    return pix[ok]


def training_data_table(options: TrainParams, seed: int, ctx: JobContext) -> TrainingData:
    """Samples of TABLE; blocks are k-means clusters of their coordinates.

    Raises:
        InputError: the table lacks one of the classes, or CATEGORICAL names no column.
    """
    import torch

    table = str(options.table)
    values, labels, xs, ys, names = read_sample_table(
        table,
        options.label_field or "label",
        options.x_field,
        options.y_field,
        list(options.factor_fields),
        warn=ctx.warn,
    )
    if not np.any(labels == 1) or not np.any(labels == 0):
        raise InputError(
            f"The table '{Path(table).name}' must hold both landslides (1) and non-landslides (0)."
        )
    n_blocks = options.n_blocks or auto_blocks(len(labels))
    blocks, centres = kmeans_blocks(xs, ys, n_blocks, seed)
    categorical = list(options.categorical)
    unknown = [c for c in categorical if c not in names]
    if unknown:
        raise InputError(f"CATEGORICAL names {', '.join(unknown)}, which is not a factor column.")
    return TrainingData(
        values,
        labels,
        blocks,
        names,
        categorical,
        block_doc={"source": "kmeans", "n_blocks": n_blocks},
        extra_tensors={"kmeans.centres": torch.as_tensor(centres)},
        counts={"landslides": int(labels.sum()), "non_landslides": int((labels == 0).sum())},
    )


def block_figures(data: TrainingData, settings: TrainSettings, ctx: JobContext) -> dict[str, Any]:
    """Log how the samples fall into blocks; the first training figures."""
    ids, counts = np.unique(data.blocks[data.blocks > 0], return_counts=True)
    if np.any(data.blocks == 0):
        ctx.warn(
            f"{int(np.sum(data.blocks == 0))} samples lie on block 0 (nodata in BLOCKS) "
            "and use the meta-learned initialisation."
        )
    eligible = int(np.sum(counts >= settings.meta.task_samples))
    ctx.log(f"{ids.size} blocks hold samples; {eligible} have enough for meta-learning tasks.")
    return {
        "method": settings.method,
        "samples": data.counts,
        "blocks_with_samples": int(ids.size),
    }


def cross_validate(
    data: TrainingData, settings: TrainSettings, folds: int, shots: int, ctx: JobContext
) -> dict[str, Any]:
    """Leave-blocks-out and random cross-validation AUCs (a CV that cannot run is skipped)."""
    from slidewise.engine.susceptibility.selection import compared_methods, comparison

    n_blocks = np.unique(data.blocks).size
    out: dict[str, Any] = {"folds": folds, "shots": shots}
    methods = compared_methods(settings.method)
    try:
        records = leave_blocks_out(
            data,
            methods,
            settings,
            shots=shots,
            n_folds=min(folds, n_blocks),
            seed=settings.seed,
            progress=ctx.stage(12, 40),
            log=ctx.log,
        )
        out["comparison"] = [row.to_dict() for row in comparison(records, methods)]
        if settings.method != "auto":
            summary = summarise(records, [settings.method])[settings.method]
            out["spatial_auc_mean"] = summary["auc_mean"]
            out["spatial_auc_sd"] = summary["auc_sd"]
        out["spatial_folds_scored"] = len(records)
    except InputError as exc:
        if settings.method == "auto":
            raise InputError(
                f"METHOD auto could not compare the methods ({exc}); choose a method."
            ) from exc
        ctx.warn(f"Leave-blocks-out CV skipped: {exc}")
    if settings.method == "auto":
        return out  # the random CV runs on the chosen method (see random_cv_figures)
    random_cv_figures(data, settings, folds, out, ctx)
    return out


def random_cv_figures(
    data: TrainingData, settings: TrainSettings, folds: int, out: dict[str, Any], ctx: JobContext
) -> None:
    """Random k-fold AUC of ``settings.method`` into ``out``; logs both CV AUCs."""
    try:
        aucs = random_cv(data, settings, folds, settings.seed)
        out["random_auc_mean"] = float(np.mean(aucs))
        out["random_auc_sd"] = float(np.std(aucs))
    except InputError as exc:
        ctx.warn(f"Random CV skipped: {exc}")
    ctx.log(
        f"CV AUC: leave-blocks-out {out.get('spatial_auc_mean', float('nan')):.3f}, "
        f"random {out.get('random_auc_mean', float('nan')):.3f}."
    )


def fit_final(
    data: TrainingData, encoder: FeatureEncoder, settings: TrainSettings, ctx: JobContext
) -> FittedModel:
    """Fit the model on every sample (and pretrain on the unlabelled pixels, if any)."""
    unl = None
    if data.unlabelled is not None and len(data.unlabelled):
        unl = encoder.transform(data.unlabelled)
    return fit_model(
        encoder.transform(data.values),
        data.labels,
        data.blocks,
        settings,
        groups=encoder.groups,
        unlabelled=unl,
        progress=ctx.stage(60, 95),
    )


def model_config(
    fitted: FittedModel, settings: TrainSettings, figures: dict[str, Any], ctx: JobContext
) -> dict[str, Any]:
    """The model file's config; adds the block figures of ``meta`` and warns about blocks."""
    config: dict[str, Any] = {"method": settings.method}
    if "comparison" in figures.get("cv", {}):
        config["selection"] = {
            "requested": settings.selected_by or settings.method,
            "comparison": figures["cv"]["comparison"],
        }
    if settings.method not in BLOCKWISE_METHODS:
        assert fitted.classical is not None
        config.update(fitted.classical.config)
        return config
    if settings.method == "hybrid":
        config.update(hybrid_config(fitted))
        figures["hybrid_mix"] = fitted.mix.to_dict()
        ctx.log(f"Hybrid mix chosen on the training blocks: {fitted.mix.describe()}")
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
            "initialisation there): " + listed_blocks(fitted.one_class, ellipsis=False)
        )
    if fitted.history:
        figures["meta_loss_first_last"] = [
            float(np.mean(fitted.history[:50])),
            float(np.mean(fitted.history[-50:])),
        ]
    if fitted.fallback:
        ctx.warn(
            f"{len(fitted.fallback)} blocks use the meta-learned initialisation: "
            + listed_blocks(fitted.fallback, ellipsis=True)
        )
    return config


def listed_blocks(blocks: dict[int, str], ellipsis: bool) -> str:
    """``block 3: why; block 7: why`` for the first :data:`LISTED_BLOCKS` blocks."""
    text = "; ".join(f"block {k}: {v}" for k, v in list(sorted(blocks.items()))[:LISTED_BLOCKS])
    return text + (" ..." if ellipsis and len(blocks) > LISTED_BLOCKS else "")


def architecture(method: str, hybrid_global: str = "gbm") -> str:
    """The model file's architecture name of a fitted ``method`` (and a hybrid's global part)."""
    if method == "meta":
        return "maml-mlp"
    if method == "hybrid":
        return f"maml-mlp+{ARCHITECTURES[hybrid_global]}"
    return ARCHITECTURES[method]


def save_trained(
    options: TrainParams,
    data: TrainingData,
    fitted: FittedModel,
    encoder: FeatureEncoder,
    settings: TrainSettings,
    config: dict[str, Any],
    figures: dict[str, Any],
) -> None:
    """Write the model file (tensors and metadata)."""
    from slidewise.engine.core.modelfile import ModelMetadata, save_model

    metadata = ModelMetadata(
        task="susceptibility",
        architecture=architecture(settings.method, fitted.mix.global_method),
        config=config,
        bands=data.bands,
        normalisation=encoder.to_dict(),
        pixel_size=data.pixel_size,
        provenance={"seed": settings.seed, "inputs": options.inputs()},
        metrics={k: v for k, v in figures.items() if k in ("cv", "train_auc")},
        extra={"blocks": data.block_doc, "categorical": data.categorical},
    )
    save_model(options.output, {**model_tensors(fitted), **data.extra_tensors}, metadata)
