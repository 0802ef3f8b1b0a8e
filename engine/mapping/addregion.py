"""slidewise:addregion: add a region's decoder to a multi-region model, keeping the others.

This follows TSMU (Nagendra et al. 2022, "Efficient deep learning for landslide
mapping in multiple ecoregions"): a segmentation network whose encoder is
shared by every region (ecoregion, sensor, event) and which has one U-Net
decoder and segmentation head per region. When imagery of a new region
arrives, a decoder is added and trained on a few images of that region, while
the accuracy on the regions already learnt is kept. Two ways of adding a
region (``MODE``):

* ``frozen``: the encoder and the old decoders are frozen; only the new
  decoder (and its head) is trained. Old regions cannot forget: their weights
  stay bit-identical.
* ``distill``: learning without forgetting (Li and Hoiem 2017, LwF). The
  encoder is fine-tuned and the new decoder trained, while the old decoders'
  outputs on the new region's images are kept close to what they were
  *before* training: ``loss = task loss + LAMBDA * T^2 * KL(sigmoid(z_old /
  T) || sigmoid(z / T))`` per pixel and old region, where ``z_old`` are the
  old decoders' logits of a frozen copy of the model taken before training
  and ``T`` the temperature. By default the old decoders stay fixed (the
  distillation constrains the shared encoder) and the encoder learns at a
  tenth of the learning rate; LwF's joint training of the old decoders
  (``TRAIN_OLD_DECODERS``) and its warm-up (``WARMUP_EPOCHS``) are options.
  These defaults come from ``bench/forgetting.py`` (Bijie base, L4S added,
  8 epochs, seed 0; Bijie F1 0.576 before): Bijie F1 fell by 0.490 when the
  encoder was fine-tuned at the full rate without distillation and by 0.165
  with it; at a tenth of the rate by 0.085 without and by 0.034 with it; by
  0.210 when the old decoder was trained too (full rate), and by 0.544 with a
  2-epoch warm-up on top of that. ``frozen`` keeps it exactly (0.000).

In both modes the encoder's batch-norm statistics are kept as they are (its
batch-norm layers run in evaluation mode): only the new region's images are
seen while training, and updating the running statistics on them would shift
every old region's features. Old decoders always run in evaluation mode.

The model container and its file layout (one ``task = "multiregion"`` file with
every decoder and the per-region metadata) are :mod:`slidewise.engine.imagery.regions`; a
region's training is :mod:`slidewise.engine.mapping.regiontraining`, the
forgetting table :mod:`slidewise.engine.mapping.forgetting`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any

import torch

from slidewise.contract.specs.addregion import DEFAULT_LOSS
from slidewise.contract.specs.addregion import SPEC as ADDREGION_SPEC
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.imagery.chips import ChipDataset
from slidewise.engine.imagery.datasets import MappingData
from slidewise.engine.imagery.regions import (
    ARCHITECTURE,
    DEFAULT_BASE_REGION,
    DEFAULT_DECODER_CHANNELS,
    MultiRegionModel,
    check_region_name,
    load_or_convert,
    save_multiregion,
)
from slidewise.engine.imagery.segmodels import SegModelConfig
from slidewise.engine.mapping.chips import (
    MappingDataParams,
    chip_request,
    job_runtime,
    read_chips,
)
from slidewise.engine.mapping.forgetting import (
    data_record,
    forgetting_table,
    format_table,
    parse_old_region_data,
    region_eval_data,
)
from slidewise.engine.mapping.recipes import RECIPES, TrainSettings, threshold_setting
from slidewise.engine.mapping.regiontraining import (
    RegionOutcome,
    RegionSettings,
    create_multiregion,
    region_metrics,
    train_region,
    utc_now,
)

#: The loss that LOSS ``default`` means (TSMU's soft Dice).
TSMU_LOSS = "dice"


@dataclass(frozen=True)
class AddRegionParams(MappingDataParams):
    """Parameters of the ``addregion`` job (declared in ``contract/specs/addregion.py``).

    The dataset and chip fields are those of :class:`MappingDataParams`.

    Attributes:
        model: Multi-region or mapping model file (``None``: train a new model).
        region: The new region's name.
        mode: ``frozen`` or ``distill`` (``None``: frozen).
        base_region: Region name of a converted mapping model (``None``: base).
        replace: Allow the region to exist already.
        init_from: Region the new decoder starts from, or ``random``.
        old_region_data: Validation data of old regions (JSON).
        encoder: Encoder of a new model.
        encoder_depth: Encoder depth of a new model.
        encoder_weights: Encoder weights of a new model.
        epochs: Training epochs.
        lr: Adam learning rate.
        batch_size: Chips per batch.
        chips_per_epoch: Chips drawn per epoch (0 = all).
        loss: Task loss (``default``: soft Dice).
        augment: Random D4 flips and rotations.
        oversample: Share of chips with landslides drawn per epoch.
        lambda_: Weight of the distillation term (parameter LAMBDA).
        temperature: Distillation temperature.
        encoder_lr_scale: Encoder learning rate relative to LR (distill).
        warmup_epochs: First epochs that train the new decoder alone (distill).
        train_old_decoders: Optimise the old decoders too (distill).
        select_metric: ``f1``, ``iou`` or ``mcc``.
        threshold: ``auto`` or a probability.
        patience: Early-stopping patience (0 = off).
        output: The multi-region model file.
    """

    SPEC = ADDREGION_SPEC

    model: str | None = None
    region: str = ""
    mode: str | None = None
    base_region: str | None = None
    replace: bool = False
    init_from: str | None = None
    old_region_data: str | None = None
    encoder: str = "resnet18"
    encoder_depth: int = 5
    encoder_weights: str | None = None
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 2
    chips_per_epoch: int = 0
    loss: str = DEFAULT_LOSS
    augment: bool = True
    oversample: float = 0.5
    lambda_: float = 1.0
    temperature: float = 2.0
    encoder_lr_scale: float = 0.1
    warmup_epochs: int = 0
    train_old_decoders: bool = False
    select_metric: str = "f1"
    threshold: str = "auto"
    patience: int = 0
    output: str = ""

    @property
    def task_loss(self) -> str:
        """The loss name (``default``: soft Dice)."""
        return TSMU_LOSS if self.loss == DEFAULT_LOSS else self.loss


@dataclass
class StartingModel:
    """The model a region is added to, and the old regions' evaluation data.

    Attributes:
        model: The multi-region model (converted from a mapping model if need be).
        old_data: Old region -> its labelled chips and where they come from.
        init_from: Region the new decoder starts from (``None``: random).
    """

    model: MultiRegionModel
    old_data: dict[str, tuple[ChipDataset, str]] = field(default_factory=dict)
    init_from: str | None = None


@dataclass
class NewRegion:
    """The region being added.

    Attributes:
        name: Its name.
        data: Its chips.
        record: Its record in the model (bands, normalisation, data; then threshold,
            metrics and training).
        training: How it is trained (stored in its record).
    """

    name: str
    data: MappingData
    record: dict[str, Any]
    training: dict[str, Any]


def run_add_region(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Add a region's decoder to a multi-region model (or start one) and write it to OUTPUT.

    The old regions are measured before and after (the forgetting table: F1
    and IoU of the landslide class per region, at each region's stored
    threshold), in the log, the figures and the model metadata.

    The parameters are declared in ``contract/specs/addregion.py``. Without
    MODEL a new model is trained (encoder and decoder) on the given data, which
    becomes its first region (MODE does not apply). The dataset and chip
    parameters are exactly those of trainmapping; the number of bands must be
    the encoder's, and the normalisation is the region's own. OLD_REGION_DATA
    names validation data of old regions, e.g.
    ``{"bijie": {"images": "...", "masks": "...", "dataset_type": "pairs"}}`` (or
    a list of such objects with a "region" key; optional keys dataset_type,
    label_polygons, landslide_values, ignore_values, mask_color). Regions not
    named are measured on their stored validation data, or on the validation
    split of their stored training data when it can be rebuilt exactly;
    otherwise they are left out of the table with a warning. OUTPUT may be
    MODEL itself (it is replaced atomically).

    Returns:
        OUTPUT = the model path; figures: the new region's validation metrics,
        the forgetting table (``forgetting``: one row per region) and per old
        region ``<region>_f1_before``/``_after``/``_delta``.
    """
    options = AddRegionParams.from_params(params)
    check_writable(options.output)
    region = check_region_name(options.region)
    seed, device = job_runtime(options.seed, ctx)
    threshold_setting(options.threshold)
    request = chip_request(options, seed)
    start = open_model(options, region, ctx)
    data = read_chips(request, ctx, f"the data of region '{region}'")
    record: dict[str, Any] = {
        "bands": data.band_names,
        "band_indices": data.band_indices,
        "normalisation": data.normalisation,
        "tile_size": data.chip_size,
        "pixel_size": data.pixel_size,
        "data": data_record(request, data),
    }
    new = NewRegion(region, data, record, training_record(options, seed, device))
    if start is None:
        model, figures = first_region(options, new, device, ctx)
    else:
        model, figures = add_to_model(options, start, new, device, ctx)
    save_multiregion(options.output, model.cpu())
    ctx.log(f"Model with regions {', '.join(model.regions)} written to {options.output}.")
    return JobResult(
        outputs={"OUTPUT": options.output},
        figures=figures,
        inputs=options.inputs(before=(options.model,)),
        device=device.type,
    )


def open_model(options: AddRegionParams, region: str, ctx: JobContext) -> StartingModel | None:
    """The model (``None`` without MODEL) and its old regions' data, before any training.

    Raises:
        InputError: an unusable model, an existing region without REPLACE, bad
            OLD_REGION_DATA or INIT_FROM.
    """
    model_path = (options.model or "").strip()
    if not model_path:
        if options.old_region_data:
            raise InputError("OLD_REGION_DATA needs MODEL: a new model has no old regions.")
        return None
    base_region = check_region_name(options.base_region or DEFAULT_BASE_REGION)
    model, kind = load_or_convert(model_path, base_region)
    if kind == "mapping":
        ctx.log(
            f"Converted the mapping model '{Path(model_path).name}' into a multi-region "
            f"model with region '{base_region}'."
        )
    model.check_new(region, options.replace)
    given = parse_old_region_data(options.old_region_data, model.regions)
    start = StartingModel(model)
    for r in model.regions:
        if r == region:
            continue
        try:
            start.old_data[r] = region_eval_data(r, model.record(r), given.get(r))
        except InputError as exc:
            if r in given:
                raise
            ctx.warn(f"Region '{r}' is left out of the forgetting table: {exc}")
    init = (options.init_from or "").strip()
    if init.lower() == "random":
        start.init_from = None
    elif init:
        start.init_from = model.require(init)
    else:
        start.init_from = region if region in model.regions else model.regions[0]
    return start


def training_record(options: AddRegionParams, seed: int, device: torch.device) -> dict[str, Any]:
    """How the region is trained, as stored in its record."""
    return {
        "job": "addregion",
        "epochs": options.epochs,
        "lr": options.lr,
        "batch_size": options.batch_size,
        "chips_per_epoch": options.chips_per_epoch,
        "loss": options.task_loss,
        "augment": options.augment,
        "oversample": options.oversample,
        "select_metric": options.select_metric,
        "seed": seed,
        "device": str(device),
        "created_utc": utc_now(),
    }


def first_region(
    options: AddRegionParams, new: NewRegion, device: torch.device, ctx: JobContext
) -> tuple[MultiRegionModel, dict[str, Any]]:
    """A new model whose first region is ``new``, and the job's figures."""
    ctx.log(f"No MODEL: training a new model with region '{new.name}' (encoder and decoder).")
    if options.mode is not None:
        ctx.log("MODE does not apply to the first region: encoder and decoder are trained.")
    model = create_first_region(options, new, device, ctx)
    validation = model.records[new.name]["metrics"]["validation"]
    figures: dict[str, Any] = {"region": new.name}
    figures.update({f"valid_{k}": validation.get(k) for k in ("precision", "recall", "f1", "iou")})
    figures["threshold"] = model.records[new.name]["threshold"]
    figures["regions"] = model.regions
    return model, figures


def create_first_region(
    options: AddRegionParams, new: NewRegion, device: torch.device, ctx: JobContext
) -> MultiRegionModel:
    """Train a new model (first region) with trainmapping's default recipe and our overrides.

    Raises:
        InputError: ENCODER_WEIGHTS does not exist.
    """
    encoder, depth, weights = options.encoder, options.encoder_depth, options.encoder_weights
    if weights and not Path(weights).is_file():
        raise InputError(f"The encoder weights file '{weights}' does not exist: check the path.")
    training = new.training
    recipe = dc_replace(
        RECIPES["default"],
        architecture=ARCHITECTURE,
        encoder=encoder,
        encoder_depth=depth,
        loss=training["loss"],
        augment=training["augment"],
        oversample=training["oversample"],
        lr=training["lr"],
    )
    config = SegModelConfig(
        architecture=ARCHITECTURE,
        encoder=encoder,
        in_channels=len(new.data.band_indices),
        encoder_depth=depth,
        extra={"decoder_channels": DEFAULT_DECODER_CHANNELS[:depth]},
    )
    settings = TrainSettings(
        recipe=recipe,
        model=config,
        encoder_weights=weights,
        epochs=options.epochs,
        batch_size=options.batch_size,
        chips_per_epoch=options.chips_per_epoch,
        patience=options.patience,
        select_metric=options.select_metric,
        threshold=threshold_setting(options.threshold),
        seed=training["seed"],
        device=str(device),
    )
    ctx.log(
        f"New U-Net / {encoder} (depth {depth}): {recipe.loss} loss, {recipe.optimizer} lr "
        f"{recipe.lr:g} ({recipe.schedule}), {settings.epochs} epochs, batch "
        f"{settings.batch_size}."
    )
    model, outcome = create_multiregion(
        new.name,
        new.data,
        settings,
        new.record,
        log=ctx.log,
        progress=ctx.stage(3, 95),
        warn=ctx.warn,
    )
    model.records[new.name]["training"] = {
        **training,
        "mode": "first region (encoder and decoder trained)",
        "encoder": encoder,
        "encoder_weights": weights or "",
        "recipe": asdict(recipe),
        "best_epoch": outcome.best_epoch,
    }
    return model


def add_to_model(
    options: AddRegionParams,
    start: StartingModel,
    new: NewRegion,
    device: torch.device,
    ctx: JobContext,
) -> tuple[MultiRegionModel, dict[str, Any]]:
    """Train ``new``'s decoder in ``start.model``, measuring the old regions before and after.

    Raises:
        InputError: the region's data have another band count than the encoder takes.
    """
    model, data, region = start.model, new.data, new.name
    n_in = int(model.config.in_channels)
    if len(data.band_indices) != n_in:
        raise InputError(
            f"The data of region '{region}' have {len(data.band_indices)} band(s) "
            f"({', '.join(data.band_names)}) but the model's shared encoder takes {n_in}: "
            f"set BANDS to {n_in} bands of the images."
        )
    before = measure_regions(model, start.old_data, options.batch_size, device)
    for r, (ds, source) in start.old_data.items():
        ctx.log(f"Region '{r}' is measured on {len(ds)} chips: {source}.")
    settings = region_settings(options, start.init_from, new.training["seed"], device)
    ctx.log(adding_line(settings, region))
    outcome = train_region(
        model,
        region,
        data,
        settings,
        replace=options.replace,
        log=ctx.log,
        progress=ctx.stage(3, 95),
    )
    after = measure_regions(model, start.old_data, options.batch_size, device)
    rows = forgetting_rows(start, region, before, after, outcome)
    ctx.log("Forgetting table (landslide class, each region at its stored threshold):")
    for line in format_table(rows).splitlines():
        ctx.log(line)
    record_addition(options, start, new, settings, outcome, rows)
    return model, addition_figures(region, settings.mode, model, outcome, rows)


def measure_regions(
    model: MultiRegionModel,
    old_data: dict[str, tuple[ChipDataset, str]],
    batch_size: int,
    device: torch.device,
) -> dict[str, dict[str, Any]]:
    """Each old region's metrics on its chips, at its stored threshold."""
    return {
        r: region_metrics(
            model, r, ds, float(model.record(r).get("threshold", 0.5)), batch_size, device
        )
        for r, (ds, _) in old_data.items()
    }


def forgetting_rows(
    start: StartingModel,
    region: str,
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    outcome: RegionOutcome,
) -> list[dict[str, Any]]:
    """The forgetting table: every region (unmeasured ones empty), the new one last."""
    before_all: dict[str, dict[str, Any] | None] = dict(before)
    after_all: dict[str, dict[str, Any] | None] = dict(after)
    for r in start.model.regions:
        if r != region and r not in start.old_data:
            before_all[r] = after_all[r] = None
    before_all[region] = outcome.start_metrics
    after_all[region] = outcome.metrics
    return forgetting_table(before_all, after_all, new_region=region)


def region_settings(
    options: AddRegionParams, init_from: str | None, seed: int, device: torch.device
) -> RegionSettings:
    """How the new decoder is trained, from the parameters."""
    return RegionSettings(
        mode=options.mode or "frozen",
        epochs=options.epochs,
        batch_size=options.batch_size,
        chips_per_epoch=options.chips_per_epoch,
        lr=options.lr,
        loss=options.task_loss,
        augment=options.augment,
        oversample=options.oversample,
        distill_lambda=options.lambda_,
        temperature=options.temperature,
        warmup_epochs=options.warmup_epochs,
        encoder_lr_scale=options.encoder_lr_scale,
        train_old_decoders=options.train_old_decoders,
        select_metric=options.select_metric,
        threshold=threshold_setting(options.threshold),
        patience=options.patience,
        init_from=init_from,
        seed=seed,
        device=str(device),
    )


def adding_line(settings: RegionSettings, region: str) -> str:
    """One log line: how the region is added."""
    distill = ""
    if settings.mode == "distill":
        distill = (
            f", lambda {settings.distill_lambda:g}, temperature {settings.temperature:g}, "
            f"encoder lr x{settings.encoder_lr_scale:g}, warm-up {settings.warmup_epochs}, "
            f"old decoders {'trained' if settings.train_old_decoders else 'fixed'}"
        )
    return (
        f"Adding region '{region}' in {settings.mode} mode (decoder from "
        f"{settings.init_from or 'a random start'}): {settings.loss} loss, Adam lr "
        f"{settings.lr:g}, {settings.epochs} epochs, batch {settings.batch_size}"
        f"{distill}, device {settings.device}."
    )


def record_addition(
    options: AddRegionParams,
    start: StartingModel,
    new: NewRegion,
    settings: RegionSettings,
    outcome: RegionOutcome,
    rows: list[dict[str, Any]],
) -> None:
    """Store the new region's record and the addition event (with its forgetting table)."""
    mode = settings.mode
    distill = mode == "distill"
    new.record.update(
        threshold=outcome.threshold,
        metrics={"validation": outcome.metrics, "history": outcome.history},
        training={
            **new.training,
            "mode": mode,
            "init_from": settings.init_from,
            "lambda": settings.distill_lambda if distill else None,
            "temperature": settings.temperature if distill else None,
            "encoder_lr_scale": settings.encoder_lr_scale if distill else None,
            "warmup_epochs": settings.warmup_epochs if distill else None,
            "train_old_decoders": settings.train_old_decoders if distill else None,
            "best_epoch": outcome.best_epoch,
            "model": (options.model or "").strip(),
        },
    )
    start.model.records[new.name] = new.record
    start.model.events.append(
        {
            "region": new.name,
            "mode": mode,
            "replace": options.replace,
            "utc": utc_now(),
            "forgetting": rows,
            "measured_on": {r: source for r, (_, source) in start.old_data.items()},
        }
    )


def addition_figures(
    region: str,
    mode: str,
    model: MultiRegionModel,
    outcome: RegionOutcome,
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """The new region's validation figures, the forgetting table and per-region deltas."""
    figures: dict[str, Any] = {"region": region}
    figures.update(
        {f"valid_{k}": outcome.metrics.get(k) for k in ("precision", "recall", "f1", "iou")}
    )
    figures["threshold"] = outcome.threshold
    figures["best_epoch"] = outcome.best_epoch
    figures["mode"] = mode
    figures["regions"] = model.regions
    figures["forgetting"] = rows
    for row in rows:
        if not row["new"] and row["f1_after"] is not None:
            for k in ("f1_before", "f1_after", "f1_delta", "iou_before", "iou_after"):
                figures[f"{row['region']}_{k}"] = row[k]
    return figures
