"""The training loop of trainmapping: epochs, validation, model selection, checkpoints.

:func:`train_model` trains the model its settings describe, validates every
epoch, keeps the best epoch (and threshold) on the validation split, stops
early, and writes a resumable checkpoint every epoch when asked. The addregion
job reuses it for a new model's first region, and :func:`epoch_order` for its
own loop. Progress is reported after every training and validation batch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slidewise.engine.core.distributed import (
    batch_share,
    check_in_step,
    check_share,
    current_placement,
    mean_over_processes,
    wrap_model,
)
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import Log, Progress
from slidewise.engine.imagery.augment import random_d4, random_photometric
from slidewise.engine.imagery.datasets import MappingData
from slidewise.engine.imagery.labels import IGNORE
from slidewise.engine.imagery.losses import make_loss
from slidewise.engine.imagery.segmodels import build_model, load_encoder_weights
from slidewise.engine.imagery.training import StepCounter, chip_batches, validation_work
from slidewise.engine.mapping.calibration import Calibration, calibrate_model
from slidewise.engine.mapping.checkpoints import (
    fingerprint,
    load_checkpoint,
    prefixed,
    restore_optimizer,
    save_checkpoint,
)
from slidewise.engine.mapping.recipes import Recipe, TrainSettings, pos_weight_from
from slidewise.engine.mapping.validation import (
    EpochSelection,
    choose_threshold,
    metrics_at,
    validate,
    validation_tiling,
)


@dataclass
class TrainOutcome:
    """What :func:`train_model` returns.

    Attributes:
        model: The selected model (CPU, eval mode).
        metrics: Validation metrics of the selected epoch.
        history: Per-epoch records.
        threshold: Probability threshold for landslide.
        best_epoch: Selected epoch (1-based; 0 when no epoch ran).
        pos_weight: Positive-class weight used (``None`` when off).
        calibration: The Platt scaling folded into the model (``None``: not calibrated).
        predict_window: Tile side validation predicted with, which mapping must use
            (models that standardise each tile; ``None``: validated chip by chip).
    """

    model: nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    threshold: float
    best_epoch: int
    pos_weight: float | None
    calibration: Calibration | None = None
    predict_window: int | None = None


@dataclass
class TrainingRun:
    """The state of one training: model, optimiser, random state, selection, history.

    Attributes:
        model: The model being trained (on ``device``).
        optimizer: Its optimiser.
        scaler: Gradient scaler of mixed precision (disabled off CUDA).
        generator: Random generator of sampling and augmentation.
        loss_fn: ``loss_fn(logits, target, valid)``.
        device: Where the model runs.
        use_amp: Mixed precision on.
        pos_weight: Positive-class weight of the loss (``None`` when off).
        fingerprint: What a checkpoint must match (see :func:`fingerprint`).
        selection: The best epoch so far.
        history: Per-epoch records.
        start_epoch: Epochs already done (resumed from a checkpoint).
        step_model: What a training step calls: ``model`` itself, or its
            data-parallel wrapper under ``torchrun`` (same parameters).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    loss_fn: Callable[..., torch.Tensor]
    device: torch.device
    use_amp: bool
    pos_weight: float | None
    fingerprint: dict[str, Any]
    selection: EpochSelection
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    step_model: nn.Module | None = None

    @property
    def cuda(self) -> bool:
        """True on a CUDA device (channels-last memory format)."""
        return self.device.type == "cuda"


def epoch_order(
    stats: np.ndarray, oversample: float, n_draw: int, generator: torch.Generator
) -> torch.Tensor:
    """Chip indices for one epoch.

    Without oversampling: a permutation (or ``n_draw`` of it). With
    ``oversample = s``: chips with landslides are drawn with replacement so that
    they make up about ``max(s, natural share)`` of the epoch.
    """
    n = len(stats)
    n_draw = n_draw or n
    has = torch.as_tensor(stats[:, 0] > 0)
    share = float(has.float().mean())
    if oversample <= 0 or share == 0 or share >= oversample:
        perm = torch.randperm(n, generator=generator)
        if n_draw <= n:
            return perm[:n_draw]
        extra = torch.randint(n, (n_draw - n,), generator=generator)
        return torch.cat([perm, extra])
    weights = torch.where(has, oversample / share, (1 - oversample) / (1 - share)).double()
    return torch.multinomial(weights, n_draw, replacement=True, generator=generator)


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Learning-rate factor of 0-based ``epoch``."""
    if schedule == "cosine" and epochs > 1:
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * epoch / (epochs - 1)))
    return 1.0


def train_model(
    data: MappingData,
    settings: TrainSettings,
    log: Log = print,
    progress: Progress | None = None,
    warn: Log | None = None,
) -> TrainOutcome:
    """Train, validate every epoch, select the best epoch, stop early.

    Args:
        data: Prepared training and validation chips.
        settings: Resolved settings.
        log: Receives log lines (per-epoch metrics).
        progress: Receives the fraction done in [0, 1] after every batch.
        warn: Receives warnings.

    Returns:
        The selected model and its validation metrics.
    """
    check_share(settings.batch_size)
    run = start_training(data, settings, log)
    if settings.resume and settings.checkpoint:
        resume_training(run, settings.checkpoint, log)
    elif settings.checkpoint and Path(settings.checkpoint).exists():
        log(
            f"The checkpoint '{Path(settings.checkpoint).name}' will be overwritten "
            "(RESUME is off)."
        )
    if run_epochs(run, data, settings, log, progress):
        log(
            f"Stopped early: no better validation {settings.select_metric} for "
            f"{settings.patience} epochs."
        )
    outcome = finish_training(run, settings, log)
    if settings.recipe.calibrate:
        calibrate_outcome(outcome, data, settings, log)
    return outcome


def start_training(data: MappingData, settings: TrainSettings, log: Log) -> TrainingRun:
    """Seed, build the model (with encoder weights), the optimiser and the loss."""
    from slidewise.engine.core.runtime import seed_everything

    recipe = settings.recipe
    device = torch.device(settings.device)
    seed_everything(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = build_model(settings.model)
    if settings.encoder_weights:
        n = load_encoder_weights(model, settings.encoder_weights)
        log(f"Loaded {n} encoder tensors from {Path(settings.encoder_weights).name}.")
    use_amp = device.type == "cuda" and settings.amp
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    pos_weight = pos_weight_from(recipe.pos_weight, data.landslide_fraction)
    placement = current_placement()
    if placement.parallel:
        log(f"Data-parallel training: {placement.world_size} processes share each batch.")
    return TrainingRun(
        model=model,
        optimizer=opt_cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay),
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp),
        generator=generator,
        loss_fn=make_loss(recipe.loss, pos_weight),
        device=device,
        use_amp=use_amp,
        pos_weight=pos_weight,
        fingerprint=fingerprint(settings, data),
        selection=EpochSelection(selection_metric(settings)),
        step_model=wrap_model(model, device),
    )


def selection_metric(settings: TrainSettings) -> str:
    """What ranks epochs: ``loss`` for a recipe that selects on the loss, else the metric."""
    return "loss" if settings.recipe.select_on_loss else settings.select_metric


def resume_training(run: TrainingRun, checkpoint: str, log: Log) -> None:
    """Restore weights, optimiser, random state, history and selection from ``checkpoint``.

    Raises:
        InputError: the checkpoint is missing, unreadable or made with other settings.
    """
    tensors, meta = load_checkpoint(checkpoint)
    if meta.get("fingerprint") != json.loads(json.dumps(run.fingerprint)):
        raise InputError(
            f"The checkpoint '{Path(checkpoint).name}' was made with another "
            "model, bands, normalisation or chip size: resume with the same settings, or "
            "set RESUME to false to start again."
        )
    run.model.load_state_dict(prefixed(tensors, "model."))
    run.selection.state = prefixed(tensors, "best.") or None
    restore_optimizer(run.optimizer, tensors, meta)
    run.generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    if run.use_amp and meta.get("scaler"):
        run.scaler.load_state_dict(meta["scaler"])
    run.start_epoch = int(meta["epoch"])
    run.history = list(meta.get("history", []))
    run.selection.best = dict(meta.get("best", run.selection.best))
    if run.selection.best.get("score") is None:  # -inf is stored as null
        run.selection.best["score"] = -math.inf
    run.selection.stale = int(meta.get("stale", 0))
    log(f"Resumed from '{Path(checkpoint).name}' after epoch {run.start_epoch}.")


def run_epochs(
    run: TrainingRun,
    data: MappingData,
    settings: TrainSettings,
    log: Log,
    progress: Progress | None,
) -> bool:
    """Train the remaining epochs; True when early stopping ended them."""
    recipe = settings.recipe
    n_draw = settings.chips_per_epoch or len(data.train)
    steps_per_epoch = math.ceil(n_draw / settings.batch_size)
    per_epoch = steps_per_epoch + validation_work(len(data.valid), settings.batch_size)
    counter = StepCounter(max(1, (settings.epochs - run.start_epoch) * per_epoch), progress)
    for epoch in range(run.start_epoch, settings.epochs):
        if run.selection.exhausted(settings.patience):
            counter.finish()
            return True
        t0 = time.time()
        lr = recipe.lr * lr_factor(recipe.schedule, epoch, settings.epochs)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        train_loss = train_epoch(run, data, recipe, settings.batch_size, n_draw, counter)
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss}
        validate_epoch(run, data, settings, record, t0, log, counter)
        if settings.checkpoint and current_placement().writer:
            save_checkpoint(
                settings.checkpoint,
                run.model,
                run.selection.state,
                run.optimizer,
                run.generator,
                {
                    "epoch": epoch + 1,
                    "history": run.history,
                    "best": run.selection.best,
                    "stale": run.selection.stale,
                    "fingerprint": run.fingerprint,
                    "scaler": run.scaler.state_dict() if run.use_amp else {},
                },
            )
    counter.finish()
    return False


def train_epoch(
    run: TrainingRun,
    data: MappingData,
    recipe: Recipe,
    batch_size: int,
    n_draw: int,
    counter: StepCounter,
) -> float:
    """One pass over ``n_draw`` training chips; the mean training loss.

    Under ``torchrun`` every process draws the same global batch and
    augmentation, and trains on its share of it (:func:`batch_share`).
    """
    run.model.train()
    order = epoch_order(data.train_stats, recipe.oversample, n_draw, run.generator)
    running, seen = 0.0, 0
    for images, masks in chip_batches(data.train, order, batch_size, drop_single=True):
        if recipe.augment:
            images, masks = random_d4(images, masks, run.generator)
        if recipe.photometric:
            images = random_photometric(images, run.generator)
        share = batch_share(len(images))
        loss = train_step(run, images[share], masks[share])
        running += float(loss.detach()) * len(images)
        seen += len(images)
        counter.step()
    return mean_over_processes(running / max(seen, 1))


def train_step(run: TrainingRun, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Forward, loss (with deep-supervision outputs), backward and optimiser step."""
    x = images.to(run.device, non_blocking=True)
    if run.cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    m = masks.to(run.device, non_blocking=True)
    valid = m != IGNORE
    target = (m == 1).float()
    with torch.autocast(device_type="cuda", enabled=run.use_amp):
        out = (run.step_model or run.model)(x)
    if isinstance(out, (tuple, list)):
        main, aux = out
        loss = run.loss_fn(main.float(), target, valid)
        weights = getattr(run.model, "aux_weights", [0.5] * len(aux))
        for w, a in zip(weights, aux, strict=False):
            loss = loss + w * run.loss_fn(a.float(), target, valid)
    else:
        loss = run.loss_fn(out.float(), target, valid)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return loss


def validate_epoch(
    run: TrainingRun,
    data: MappingData,
    settings: TrainSettings,
    record: dict[str, Any],
    t0: float,
    log: Log,
    counter: StepCounter,
) -> None:
    """Validate, complete the epoch's ``record``, offer it to the selection and log it."""
    metric = settings.select_metric
    has_slides = bool(data.valid_stats[:, 0].sum() > 0)
    batch = settings.batch_size
    tiling = validation_tiling(settings.model, run.device)
    vp = validate(run.model, data.valid, batch, run.device, run.loss_fn, counter.valid_step, tiling)
    n_chips = len(data.valid)
    threshold = choose_threshold(vp, settings.threshold, metric, n_chips) if has_slides else 0.5
    record.update(metrics_at(vp, threshold))
    record["seconds"] = round(time.time() - t0, 2)
    run.history.append(record)
    improved = run.selection.offer(record, vp, has_slides, run.model)
    log(
        f"epoch {record['epoch']}/{settings.epochs}: train loss {record['train_loss']:.4f}, "
        f"valid loss {vp.loss:.4f}, landslide P {record['precision']:.3f} "
        f"R {record['recall']:.3f} F1 {record['f1']:.3f} IoU {record['iou']:.3f} "
        f"MCC {record['mcc']:.3f} (threshold {threshold:.2f}){' *' if improved else ''} "
        f"[{record['seconds']:.1f} s]"
    )


def finish_training(run: TrainingRun, settings: TrainSettings, log: Log) -> TrainOutcome:
    """The selected epoch's model (CPU, eval mode) and its validation metrics."""
    check_in_step(run.model)
    metric = settings.select_metric
    final = build_model(settings.model)
    selection = run.selection
    state = selection.state if selection.state is not None else run.model.state_dict()
    final.load_state_dict(state)
    final.eval()
    best = selection.best
    tiling = validation_tiling(settings.model, run.device)
    if best["epoch"]:
        key = "valid_loss" if selection.metric == "loss" else metric
        log(
            f"Selected epoch {best['epoch']} on the validation split "
            f"({key} {best['metrics'].get(key, float('nan')):.3f}, "
            f"threshold {best['threshold']:.2f})."
        )
    return TrainOutcome(
        model=final,
        metrics=dict(best["metrics"]),
        history=run.history,
        threshold=float(best["threshold"]),
        best_epoch=int(best["epoch"]),
        pos_weight=run.pos_weight,
        predict_window=None if tiling is None else tiling.tile,
    )


def calibrate_outcome(
    outcome: TrainOutcome, data: MappingData, settings: TrainSettings, log: Log
) -> None:
    """Fold Platt scaling into the selected model; re-derive threshold and metrics.

    After calibration the model's probabilities change, so the threshold (fixed
    or tuned, shrunk toward its prior) and the validation metrics are taken again on
    the calibrated validation pass. Nothing changes when the validation split
    has too few landslide or other pixels.
    """
    device = torch.device(settings.device)
    model = outcome.model.to(device)
    tiling = validation_tiling(settings.model, device)
    calibration = calibrate_model(
        model, data.valid, settings.batch_size, device, settings.seed, tiling
    )
    outcome.model = model.cpu().eval()
    if calibration is None:
        log(
            "Calibration skipped: the validation split has too few landslide or other "
            "pixels, or the model's scores do not separate them yet (train longer)."
        )
        return
    cpu = torch.device("cpu")
    vp = validate(outcome.model, data.valid, settings.batch_size, cpu, tiling=tiling)
    metric = settings.select_metric
    threshold = choose_threshold(vp, settings.threshold, metric, len(data.valid), calibrated=True)
    metrics = metrics_at(vp, threshold)
    metrics["valid_loss"] = outcome.metrics.get("valid_loss")
    metrics["epoch"] = outcome.best_epoch
    outcome.calibration, outcome.threshold, outcome.metrics = calibration, threshold, metrics
    log(
        f"Calibrated probabilities (Platt, a {calibration.a:.3f}, b {calibration.b:+.3f}, "
        f"{calibration.pixels} validation pixels): ECE {calibration.ece_before:.3f} -> "
        f"{calibration.ece_after:.3f}, Brier {calibration.brier_before:.4f} -> "
        f"{calibration.brier_after:.4f}; threshold {threshold:.2f}, validation F1 "
        f"{metrics['f1']:.3f}."
    )
