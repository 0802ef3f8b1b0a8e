"""The ``trainmapping`` job: train a landslide segmentation model.

Reads one of three dataset layouts (:mod:`slidewise.engine.imagery.datasets`), splits a
spatial validation set off the training data (or takes a given one), trains an
smp model or the residual U-Net (:mod:`slidewise.engine.imagery.resunet`), selects the
epoch (and the probability threshold) on the validation split, and writes a
model file with the architecture, the bands, the normalisation, the threshold
and the validation metrics (:func:`slidewise.engine.imagery.segmodels.save_mapping_model`).

The job reads its parameters (:class:`TrainMappingParams`), checks the files,
reads the chips (:mod:`slidewise.engine.mapping.chips`), resolves the recipe
(:mod:`slidewise.engine.mapping.recipes`), trains
(:mod:`slidewise.engine.mapping.trainloop`, checkpoints in
:mod:`slidewise.engine.mapping.checkpoints`) and writes the model.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from slidewise.contract.specs.trainmapping import FROM_RECIPE
from slidewise.contract.specs.trainmapping import SPEC as TRAINMAPPING_SPEC
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.imagery.datasets import ChipRequest, MappingData
from slidewise.engine.imagery.segmodels import SegModelConfig, build_model, save_mapping_model
from slidewise.engine.mapping.chips import (
    MappingDataParams,
    chip_request,
    job_runtime,
    read_chips,
)
from slidewise.engine.mapping.recipes import (
    RECIPES,
    Recipe,
    TrainSettings,
    model_options,
    parse_streams,
    pos_weight_from,
    threshold_setting,
)
from slidewise.engine.mapping.trainloop import TrainOutcome, train_model


@dataclass(frozen=True)
class TrainMappingParams(MappingDataParams):
    """Parameters of the ``trainmapping`` job (declared in ``contract/specs/trainmapping.py``).

    The dataset and chip fields are those of :class:`MappingDataParams`. ``None``
    (and the word ``recipe`` of a choice) keeps the recipe's value.

    Attributes:
        recipe: ``default`` or ``l4s_baseline`` (see the module doc).
        architecture: ``resunet`` or an smp architecture.
        loss: Loss name.
        select_metric: ``f1``, ``iou`` or ``mcc`` of the landslide class.
        augment: ``true``, ``false`` or ``recipe``: random D4 of each chip.
        photometric: ``true``, ``false`` or ``recipe``: photometric augmentation.
        calibrate: ``true``, ``false`` or ``recipe``: Platt scaling on validation pixels.
        select_on: ``metric``, ``loss`` or ``recipe``: what ranks the epochs.
        encoder: smp encoder.
        streams: Input streams of the residual U-Net (``"1,2,3;4,5,6"``).
        model_options: Extra model options (JSON object).
        threshold: ``auto`` or a probability.
        pos_weight: ``auto``, ``none`` or a number.
        epochs: Training epochs.
        batch_size: Chips per batch.
        lr: Learning rate.
        weight_decay: Weight decay.
        patience: Early-stopping patience in epochs (0 = never).
        oversample: Share of chips with landslides drawn per epoch.
        chips_per_epoch: Chips drawn per epoch (0 = as many as there are).
        encoder_depth: smp encoder depth.
        encoder_weights: Local encoder weights file.
        checkpoint: Checkpoint file written every epoch.
        resume: Continue from the checkpoint.
        output: The model file.
    """

    SPEC = TRAINMAPPING_SPEC

    recipe: str = "default"
    architecture: str = FROM_RECIPE
    loss: str = FROM_RECIPE
    select_metric: str = "f1"
    augment: str = FROM_RECIPE
    photometric: str = FROM_RECIPE
    calibrate: str = FROM_RECIPE
    select_on: str = FROM_RECIPE
    encoder: str | None = None
    streams: str | None = None
    model_options: str | None = None
    threshold: str | None = None
    pos_weight: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    patience: int | None = None
    oversample: float | None = None
    chips_per_epoch: int = 0
    encoder_depth: int | None = None
    encoder_weights: str | None = None
    checkpoint: str | None = None
    resume: bool = False
    output: str = ""


def run_train(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Train a landslide segmentation model and write it to OUTPUT.

    The parameters are declared in ``contract/specs/trainmapping.py``; an empty
    value means the default, recipe-dependent defaults are those of RECIPE (see
    the module doc). VALID_IMAGES and VALID_MASKS give a separate validation
    set; without them VALID_FRACTION of the training data is split off by space
    (whole images, or a stripe of one extent; see
    :mod:`slidewise.engine.imagery.splits`). CHECKPOINT is written every epoch
    (weights, best weights, optimizer state, random state; no pickle) and RESUME
    continues from it up to EPOCHS. SEED (default: the runtime seed) seeds the
    split, the sampling, the augmentation and the weights.

    Returns:
        OUTPUT = the model path; figures = validation metrics of the selected epoch.
    """
    options = TrainMappingParams.from_params(params)
    check_writable(options.output)
    seed, device = job_runtime(options.seed, ctx)
    recipe = resolve_recipe(options)
    threshold = threshold_setting(options.threshold or recipe.threshold)
    request = chip_request(options, seed)
    check_checkpoint_and_weights(options)
    data = read_chips(request, ctx, "the training data")
    settings = TrainSettings(
        recipe=recipe,
        model=model_config_for(recipe, data, options),
        encoder_weights=options.encoder_weights,
        epochs=options.epochs or recipe.epochs,
        batch_size=options.batch_size or recipe.batch_size,
        chips_per_epoch=options.chips_per_epoch,
        patience=recipe.patience if options.patience is None else options.patience,
        select_metric=options.select_metric,
        threshold=threshold,
        checkpoint=options.checkpoint,
        resume=options.resume,
        seed=seed,
        device=str(device),
    )
    ctx.log(recipe_line(recipe, settings))
    outcome = train_model(data, settings, log=ctx.log, progress=ctx.stage(3, 97), warn=ctx.warn)
    write_model(options, request, data, settings, outcome)
    ctx.log(f"Model written to {options.output}.")
    return job_result(options, outcome, device)


def resolve_recipe(options: TrainMappingParams) -> Recipe:
    """RECIPE with every parameter that was given put over its value.

    Raises:
        InputError: a POS_WEIGHT that is neither auto, none nor a positive number, or
            an ENCODER with ARCHITECTURE resunet (with the recipe's resunet, an
            ENCODER or ENCODER_DEPTH picks the smp U-Net instead).
    """
    recipe = RECIPES[options.recipe]
    overrides: dict[str, Any] = {}
    wants_encoder = bool(options.encoder) or options.encoder_depth is not None
    if options.architecture == FROM_RECIPE and recipe.architecture == "resunet" and wants_encoder:
        # An encoder only exists in smp models: giving one picks the smp U-Net.
        overrides.update(architecture="unet", model_extra={})
    if options.architecture != FROM_RECIPE:
        overrides["architecture"] = options.architecture
        if options.architecture != recipe.architecture:
            overrides["model_extra"] = {}
    if options.encoder:
        overrides["encoder"] = options.encoder
    if options.encoder_depth is not None:
        overrides["encoder_depth"] = options.encoder_depth
    if options.loss != FROM_RECIPE:
        overrides["loss"] = options.loss
    for name in ("augment", "photometric", "calibrate"):
        if getattr(options, name) != FROM_RECIPE:
            overrides[name] = getattr(options, name) == "true"
    if options.select_on != FROM_RECIPE:
        overrides["select_on_loss"] = options.select_on == "loss"
    if options.pos_weight:
        pos_weight_from(options.pos_weight, 0.1)  # validate early
        overrides["pos_weight"] = options.pos_weight
    numbers = {"oversample": options.oversample, "lr": options.lr}
    numbers["weight_decay"] = options.weight_decay
    overrides.update({k: v for k, v in numbers.items() if v is not None})
    recipe = replace(recipe, **overrides)
    if wants_encoder and recipe.architecture == "resunet":
        raise InputError(
            "ENCODER or ENCODER_DEPTH is set but ARCHITECTURE is resunet, which has no "
            "encoder: choose an smp ARCHITECTURE such as unet, or leave them empty."
        )
    if not recipe.encoder:
        recipe = replace(recipe, encoder="resnet18")
    return recipe


def check_checkpoint_and_weights(options: TrainMappingParams) -> None:
    """RESUME needs a CHECKPOINT that is not OUTPUT; ENCODER_WEIGHTS must exist.

    Raises:
        InputError: naming the parameter and what to do.
    """
    checkpoint = options.checkpoint
    if options.resume and not checkpoint:
        raise InputError("RESUME is set but no CHECKPOINT was given: give the checkpoint file.")
    if checkpoint:
        check_writable(checkpoint)
        if Path(checkpoint).resolve() == Path(options.output).resolve():
            raise InputError("CHECKPOINT and OUTPUT are the same file: give them different names.")
    weights = options.encoder_weights
    if weights and not Path(weights).is_file():
        raise InputError(f"The encoder weights file '{weights}' does not exist: check the path.")


def model_config_for(
    recipe: Recipe, data: MappingData, options: TrainMappingParams
) -> SegModelConfig:
    """The model to train: the recipe's architecture on the data's bands, with the options.

    Raises:
        InputError: a chip size an smp model cannot take, bad STREAMS or MODEL_OPTIONS,
            or an unknown architecture or encoder (the model is built once to check).
    """
    if recipe.architecture != "resunet" and data.chip_size % 32:
        raise InputError(
            f"CHIP_SIZE {data.chip_size} does not suit {recipe.architecture}: use a multiple "
            "of 32 (for example 128 or 256)."
        )
    streams = parse_streams(options.streams, len(data.band_indices))
    extra = dict(recipe.model_extra)
    extra.update(model_options(options.model_options))
    channels = extra.get("decoder_channels")
    if isinstance(channels, list) and len(channels) > recipe.encoder_depth:
        extra["decoder_channels"] = channels[: recipe.encoder_depth]  # one per encoder stage
    if streams is not None:
        if recipe.architecture != "resunet":
            raise InputError("STREAMS needs ARCHITECTURE resunet.")
        extra["streams"] = streams
    config = SegModelConfig(
        architecture=recipe.architecture,
        encoder=recipe.encoder,
        in_channels=len(data.band_indices),
        encoder_depth=recipe.encoder_depth,
        extra=extra,
    )
    build_model(config)  # fail early on a bad architecture or encoder
    return config


def recipe_line(recipe: Recipe, settings: TrainSettings) -> str:
    """One log line: the recipe as resolved, epochs, batch and device."""
    return (
        f"Recipe {recipe.name}: {recipe.architecture}"
        f"{'' if recipe.architecture == 'resunet' else ' / ' + recipe.encoder}, loss "
        f"{recipe.loss}, augment {recipe.augment}, photometric {recipe.photometric}, "
        f"pos_weight {recipe.pos_weight}, calibrate {recipe.calibrate}, select on "
        f"{'loss' if recipe.select_on_loss else settings.select_metric}, "
        f"oversample {recipe.oversample}, {recipe.optimizer} lr {recipe.lr:g} wd "
        f"{recipe.weight_decay:g} ({recipe.schedule}), {settings.epochs} epochs, batch "
        f"{settings.batch_size}, device {settings.device}."
    )


def write_model(
    options: TrainMappingParams,
    request: ChipRequest,
    data: MappingData,
    settings: TrainSettings,
    outcome: TrainOutcome,
) -> None:
    """Save the selected model with its bands, normalisation, provenance and metrics."""
    save_mapping_model(
        options.output,
        outcome.model,
        settings.model,
        data.band_names,
        data.normalisation,
        pixel_size=data.pixel_size,
        tile_size=data.chip_size,
        provenance={
            "job": "trainmapping",
            "dataset_type": request.train.kind,
            "train_images": options.train_images,
            "train_masks": options.train_masks or "",
            "label_polygons": request.train.polygons or "",
            "split": data.split.detail,
            "recipe": asdict(settings.recipe),
            "epochs": settings.epochs,
            "batch_size": settings.batch_size,
            "select_metric": settings.select_metric,
            "seed": settings.seed,
            "device": settings.device,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        metrics={"validation": outcome.metrics, "history": outcome.history},
        extra={
            "band_indices": data.band_indices,
            "threshold": outcome.threshold,
            "best_epoch": outcome.best_epoch,
            "pos_weight": outcome.pos_weight,
            "label_mapping": asdict(request.train.mapping),
            "calibration": outcome.calibration.as_dict() if outcome.calibration else None,
            **(
                {"predict_window": outcome.predict_window}
                if outcome.predict_window is not None
                else {}
            ),
        },
    )


def job_result(
    options: TrainMappingParams, outcome: TrainOutcome, device: torch.device
) -> JobResult:
    """OUTPUT, the selected epoch's validation figures and the inputs."""
    figures: dict[str, Any] = {
        f"valid_{k}": outcome.metrics.get(k)
        for k in ("precision", "recall", "f1", "iou", "mcc", "threshold")
    }
    figures["best_epoch"] = outcome.best_epoch
    if outcome.calibration is not None:
        figures["calibration"] = outcome.calibration.as_dict()
    return JobResult(
        outputs={"OUTPUT": options.output},
        figures=figures,
        inputs=options.inputs(after=(options.encoder_weights,)),
        device=device.type,
    )
