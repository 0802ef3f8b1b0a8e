"""Training of one region's decoder in a multi-region model (frozen or distill mode).

:func:`train_region` adds (or replaces) a region's decoder and trains it on
the region's chips, the encoder frozen or fine-tuned with distillation (see
:mod:`slidewise.engine.mapping.addregion`); :func:`create_multiregion` trains a
new model's encoder and first decoder with trainmapping's loop.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from slidewise.engine.core.distributed import (
    batch_share,
    check_in_step,
    check_share,
    mean_over_processes,
    share_gradients,
)
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import Log, Progress
from slidewise.engine.imagery.augment import random_d4
from slidewise.engine.imagery.chips import ChipDataset
from slidewise.engine.imagery.datasets import MappingData
from slidewise.engine.imagery.labels import IGNORE
from slidewise.engine.imagery.losses import make_loss
from slidewise.engine.imagery.regions import (
    ARCHITECTURE,
    MultiRegionModel,
    check_region_name,
    distillation_loss,
    from_unet,
)
from slidewise.engine.imagery.training import StepCounter, chip_batches, validation_work
from slidewise.engine.mapping.recipes import TrainSettings, pos_weight_from
from slidewise.engine.mapping.trainloop import (
    TrainOutcome,
    epoch_order,
    train_model,
)
from slidewise.engine.mapping.validation import (
    EpochSelection,
    choose_threshold,
    metrics_at,
    validate,
)

MODES = ("frozen", "distill")


@dataclass
class RegionSettings:
    """How a region's decoder is trained (defaults: TSMU's soft Dice, Adam 1e-3, batch 2).

    Attributes:
        mode: ``frozen`` or ``distill`` (see the module doc).
        epochs: Epochs.
        batch_size: Chips per batch.
        chips_per_epoch: Chips drawn per epoch (0 = all training chips).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        loss: Task loss (:data:`slidewise.engine.imagery.losses.LOSSES`).
        pos_weight: Landslide weight of BCE losses (``auto``, ``none`` or a number).
        augment: Random D4 flips and rotations.
        oversample: Share of chips with landslides drawn per epoch (0 = shuffle).
        distill_lambda: Weight of the distillation term (``distill`` mode).
        temperature: Distillation temperature.
        warmup_epochs: ``distill``: first epochs that train the new decoder only
            (encoder and old decoders frozen), as LwF's warm-up step.
        encoder_lr_scale: ``distill``: the encoder's learning rate is ``lr`` times this.
        train_old_decoders: ``distill``: also optimise the old decoders (LwF's
            joint training of the old task heads) instead of keeping them fixed.
        select_metric: ``f1``, ``iou`` or ``mcc`` on the new region's validation
            chips, for epoch selection and threshold tuning.
        threshold: ``auto`` (tuned) or a probability.
        patience: Early stopping after this many epochs without improvement (0 = off).
        init_from: Region whose decoder the new decoder starts from (``None`` = random).
        seed: Seed of sampling, augmentation and the new decoder's weights.
        device: Torch device.
    """

    mode: str = "frozen"
    epochs: int = 20
    batch_size: int = 2
    chips_per_epoch: int = 0
    lr: float = 1e-3
    weight_decay: float = 0.0
    loss: str = "dice"
    pos_weight: str = "none"
    augment: bool = True
    oversample: float = 0.5
    distill_lambda: float = 1.0
    temperature: float = 2.0
    warmup_epochs: int = 0
    encoder_lr_scale: float = 0.1
    train_old_decoders: bool = False
    select_metric: str = "f1"
    threshold: str = "auto"
    patience: int = 0
    init_from: str | None = None
    seed: int = 0
    device: str = "cpu"


@dataclass
class RegionOutcome:
    """What :func:`train_region` returns.

    Attributes:
        metrics: New region's validation metrics at the selected epoch.
        history: Per-epoch records.
        threshold: Selected probability threshold of the new region.
        best_epoch: Selected epoch (1-based; 0 when none ran).
        start_metrics: The starting decoder on the new region's validation chips
            (at its own threshold; ``None`` for a random start).
    """

    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    threshold: float
    best_epoch: int
    start_metrics: dict[str, Any] | None = None


def region_metrics(
    model: MultiRegionModel,
    region: str,
    data: ChipDataset,
    threshold: float,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Landslide-class metrics of ``region``'s decoder on labelled chips at ``threshold``."""
    vp = validate(model.view(region), data, batch_size, torch.device(device))
    return metrics_at(vp, threshold)


def set_train_modes(
    model: MultiRegionModel, region: str, mode: str, train_old: bool = False
) -> None:
    """Which parameters learn, and which batch-norm layers update statistics.

    Only the new decoder and head run in training mode (batch-norm statistics
    updated); ``frozen`` trains only their parameters, ``distill`` also the
    encoder's, and with ``train_old`` the old decoders' (see the module doc).
    """
    model.eval()
    model.decoders[region].train()
    model.heads[region].train()
    frozen = mode == "frozen"
    for p in model.encoder.parameters():
        p.requires_grad_(not frozen)
    for r in model.regions:
        for module in (model.decoders[r], model.heads[r]):
            for p in module.parameters():
                p.requires_grad_(r == region or (train_old and not frozen))


@dataclass
class RegionRun:
    """The state of one region's training.

    Attributes:
        model: The model (on ``device``), with the new decoder.
        region: The new region's name.
        device: Where the model runs.
        generator: Random generator of sampling and augmentation.
        optimizer: Adam over the decoders (and the encoder in ``distill`` mode).
        loss_fn: Task loss ``loss_fn(logits, target, valid)``.
        teacher: Frozen copy of the model before training (``distill`` mode with old
            regions and a positive LAMBDA), else ``None``.
        old: The old regions.
        eval_batch: Batch size of validation.
        selection: The best epoch so far.
        start_metrics: The starting decoder on the new region's validation chips.
        history: Per-epoch records.
    """

    model: MultiRegionModel
    region: str
    device: torch.device
    generator: torch.Generator
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[..., torch.Tensor]
    teacher: MultiRegionModel | None
    old: list[str]
    eval_batch: int
    selection: EpochSelection
    start_metrics: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def train_region(
    model: MultiRegionModel,
    region: str,
    data: MappingData,
    settings: RegionSettings,
    *,
    replace: bool = False,
    log: Log = print,
    progress: Progress | None = None,
) -> RegionOutcome:
    """Add (or replace) ``region``'s decoder and train it on ``data`` (in place).

    The epoch (and the threshold) are selected on the new region's validation
    chips; the model ends with the selected epoch's weights, in eval mode.

    Args:
        model: The model; gets the new decoder.
        region: The new region's name.
        data: The new region's chips (see ``prepare_mapping_data``).
        settings: Training settings.
        replace: Retrain an existing region.
        log: Receives per-epoch log lines.
        progress: Receives the fraction done.

    Raises:
        InputError: bad mode, existing region without ``replace``, unknown ``init_from``.
    """
    if settings.mode not in MODES:
        raise InputError(f"Unknown MODE '{settings.mode}': use one of {', '.join(MODES)}.")
    check_share(settings.batch_size)
    run = start_region(model, region, data, settings, replace)
    n_draw = settings.chips_per_epoch or len(data.train)
    steps_per_epoch = math.ceil(n_draw / settings.batch_size)
    per_epoch = steps_per_epoch + validation_work(len(data.valid), run.eval_batch)
    counter = StepCounter(max(1, settings.epochs * per_epoch), progress)
    for epoch in range(settings.epochs):
        if run.selection.exhausted(settings.patience):
            log(
                f"Stopped early: no better validation {settings.select_metric} for "
                f"{settings.patience} epochs."
            )
            break
        t0 = time.time()
        # LwF's warm-up: the first epochs train the new decoder alone.
        mode = "frozen" if epoch < settings.warmup_epochs else settings.mode
        set_train_modes(run.model, run.region, mode, settings.train_old_decoders)
        losses = train_region_epoch(run, data, settings, mode, n_draw, counter)
        record = {
            "epoch": epoch + 1,
            "train_loss": losses["task"],
            "distill_loss": losses["distill"] if run.teacher is not None else None,
        }
        validate_region_epoch(run, data, settings, record, mode, t0, log, counter)
    counter.finish()
    return finish_region(run)


def start_region(
    model: MultiRegionModel,
    region: str,
    data: MappingData,
    settings: RegionSettings,
    replace: bool,
) -> RegionRun:
    """Seed, measure the starting decoder, copy the teacher, add the decoder, build Adam."""
    from slidewise.engine.core.runtime import seed_everything

    device = torch.device(settings.device)
    seed_everything(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model.to(device)
    eval_batch = max(settings.batch_size, 8)
    region = model.check_new(region, replace)
    start_metrics = None
    if settings.init_from is not None:
        start_thr = float(model.record(settings.init_from).get("threshold", 0.5))
        start_metrics = region_metrics(
            model, settings.init_from, data.valid, start_thr, eval_batch, device
        )
        start_metrics["decoder"] = settings.init_from
    old = [r for r in model.regions if r != region]
    teacher = teacher_of(model, region, old, settings)
    model.add_region(region, settings.init_from, replace=replace)
    pos_weight = pos_weight_from(settings.pos_weight, data.landslide_fraction)
    return RegionRun(
        model=model,
        region=region,
        device=device,
        generator=generator,
        optimizer=region_optimizer(model, settings),
        loss_fn=make_loss(settings.loss, pos_weight),
        teacher=teacher,
        old=old,
        eval_batch=eval_batch,
        selection=EpochSelection(settings.select_metric),
        start_metrics=start_metrics,
    )


def teacher_of(
    model: MultiRegionModel, region: str, old: list[str], settings: RegionSettings
) -> MultiRegionModel | None:
    """The old decoders' outputs before training: a frozen copy of the model (distill)."""
    if not (settings.mode == "distill" and old and settings.distill_lambda > 0):
        return None
    teacher = copy.deepcopy(model).eval()
    if region in teacher.regions:
        teacher.remove_region(region)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def region_optimizer(model: MultiRegionModel, settings: RegionSettings) -> torch.optim.Optimizer:
    """Adam over the decoders; in ``distill`` mode also the encoder at a scaled rate."""
    in_encoder = {id(p) for p in model.encoder.parameters()}
    decoder_params = [p for p in model.parameters() if id(p) not in in_encoder]
    groups = [{"params": decoder_params, "lr": settings.lr}]
    if settings.mode == "distill":
        encoder_lr = settings.lr * settings.encoder_lr_scale
        groups.append({"params": list(model.encoder.parameters()), "lr": encoder_lr})
    return torch.optim.Adam(groups, lr=settings.lr, weight_decay=settings.weight_decay)


def train_region_epoch(
    run: RegionRun,
    data: MappingData,
    settings: RegionSettings,
    mode: str,
    n_draw: int,
    counter: StepCounter,
) -> dict[str, float]:
    """One pass over ``n_draw`` chips; the mean task and distillation losses."""
    order = epoch_order(data.train_stats, settings.oversample, n_draw, run.generator).tolist()
    running = {"task": 0.0, "distill": 0.0}
    seen = 0
    for images, masks in chip_batches(data.train, order, settings.batch_size, drop_single=True):
        if settings.augment:
            images, masks = random_d4(images, masks, run.generator)
        share = batch_share(len(images))
        task, kd = region_step(run, images[share], masks[share], mode, settings)
        running["task"] += float(task.detach()) * len(images)
        running["distill"] += float(kd.detach()) * len(images)
        seen += len(images)
        counter.step()
    return {k: mean_over_processes(v / max(seen, 1)) for k, v in running.items()}


def region_step(
    run: RegionRun,
    images: torch.Tensor,
    masks: torch.Tensor,
    mode: str,
    settings: RegionSettings,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step; the task loss and the distillation term (0 when off)."""
    model = run.model
    x = images.to(run.device)
    m = masks.to(run.device)
    valid = m != IGNORE
    target = (m == 1).float()
    if mode == "frozen":
        with torch.no_grad():
            features = model.encoder(x)
    else:
        features = model.encoder(x)
    task = run.loss_fn(model.decode(features, run.region).float(), target, valid)
    loss = task
    kd = torch.zeros((), device=run.device)
    if run.teacher is not None and mode == "distill":
        with torch.no_grad():
            t_features = run.teacher.encoder(x)
            t_logits = {r: run.teacher.decode(t_features, r) for r in run.old}
        kd = torch.stack(
            [
                distillation_loss(model.decode(features, r), t_logits[r], settings.temperature)
                for r in run.old
            ]
        ).mean()
        loss = task + settings.distill_lambda * kd
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    share_gradients([p for group in run.optimizer.param_groups for p in group["params"]])
    run.optimizer.step()
    return task, kd


def validate_region_epoch(
    run: RegionRun,
    data: MappingData,
    settings: RegionSettings,
    record: dict[str, Any],
    mode: str,
    t0: float,
    log: Log,
    counter: StepCounter,
) -> None:
    """Validate the new decoder, complete ``record``, offer it to the selection, log it."""
    has_slides = bool(data.valid_stats[:, 0].sum() > 0)
    view = run.model.view(run.region)
    vp = validate(view, data.valid, run.eval_batch, run.device, run.loss_fn, counter.valid_step)
    threshold = (
        choose_threshold(vp, settings.threshold, settings.select_metric) if has_slides else 0.5
    )
    record.update(metrics_at(vp, threshold))
    record["seconds"] = round(time.time() - t0, 2)
    run.history.append(record)
    improved = run.selection.offer(record, vp, has_slides, run.model)
    kd_text = f", distill {record['distill_loss']:.4f}" if run.teacher is not None else ""
    if mode != settings.mode:
        kd_text += " (warm-up: new decoder only)"
    log(
        f"[{run.region}] epoch {record['epoch']}/{settings.epochs}: loss "
        f"{record['train_loss']:.4f}{kd_text}, valid F1 {record['f1']:.3f} IoU "
        f"{record['iou']:.3f} (threshold {threshold:.2f}){' *' if improved else ''} "
        f"[{record['seconds']:.1f} s]"
    )


def finish_region(run: RegionRun) -> RegionOutcome:
    """Load the selected epoch's weights; every parameter trainable again, eval mode."""
    model = run.model
    check_in_step(model)
    if run.selection.state is not None:
        model.load_state_dict(run.selection.state)
    best = run.selection.best
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return RegionOutcome(
        metrics=dict(best["metrics"]),
        history=run.history,
        threshold=float(best["threshold"]),
        best_epoch=int(best["epoch"]),
        start_metrics=run.start_metrics,
    )


def create_multiregion(
    region: str,
    data: MappingData,
    settings: TrainSettings,
    record: dict[str, Any],
    *,
    log: Log = print,
    progress: Progress | None = None,
    warn: Log | None = None,
) -> tuple[MultiRegionModel, TrainOutcome]:
    """Train the encoder and the first region's decoder (no model yet).

    Trains an smp U-Net with :func:`slidewise.engine.mapping.trainloop.train_model`
    (the ``trainmapping`` training loop: epoch and threshold selection,
    early stopping) and turns it into a one-region :class:`MultiRegionModel`.

    Args:
        region: The first region's name.
        data: Its chips.
        settings: trainmapping settings; ``settings.model`` must be an smp U-Net.
        record: The region's record (bands, normalisation, data); the threshold
            and the metrics are filled in.
        log: Receives log lines.
        progress: Receives the fraction done.
        warn: Receives warnings.
    """
    region = check_region_name(region)
    if settings.model.architecture.lower() != ARCHITECTURE:
        raise InputError("Per-region decoders need ARCHITECTURE unet.")
    outcome = train_model(data, settings, log=log, progress=progress, warn=warn)
    record = dict(record)
    record["threshold"] = outcome.threshold
    record["metrics"] = {"validation": outcome.metrics, "history": outcome.history}
    model = from_unet(outcome.model, settings.model, region, record)
    model.provenance = {"first_region": region, "created_utc": utc_now()}
    return model, outcome


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
