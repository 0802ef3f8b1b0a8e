"""The ``traindetection`` job: train a Faster R-CNN landslide detector.

Reads a training and a validation set of images with boxes
(:mod:`slidewise.engine.detection.data`: Pascal VOC folders, a COCO JSON, or
image/mask pairs whose connected components become boxes), builds a Faster
R-CNN with a feature pyramid over a ResNet or timm backbone
(:mod:`slidewise.engine.detection.models`), optionally starts the backbone
from encoder weights (strictly loaded), trains with AdamW (linear warm-up,
cosine decay, gradient clipping), D4 augmentation of images and boxes, AMP on
CUDA only, evaluates COCO mAP on the validation set after every epoch
(:mod:`slidewise.engine.detection.metrics`) and keeps the epoch with the best
mAP@0.5. The model file (task ``detection``) holds the configuration to
rebuild the detector, the bands, the per-band normalisation fitted on the
training images, the class names and the validation metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slidewise.contract.specs.traindetection import SPEC as TRAIN_SPEC
from slidewise.engine.core.distributed import (
    batch_share,
    check_in_step,
    check_share,
    share_gradients,
)
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult, Log, Progress
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.core.params import JobParams
from slidewise.engine.detection.annotations import read_detection_set
from slidewise.engine.detection.data import (
    DetectionDataset,
    DetectionSample,
    DetectionSet,
    fit_band_stats,
)
from slidewise.engine.detection.metrics import detection_map
from slidewise.engine.detection.models import (
    DetectorConfig,
    build_detector,
    load_backbone_state,
    load_backbone_weights,
    save_detector,
)
from slidewise.engine.imagery.training import OnBatch, StepCounter, validation_work

#: Smallest automatic resize target (shorter side) of the detector.
AUTO_MIN_SIZE = 448
WARMUP_STEPS = 100
#: Images per batch of the validation passes.
VALID_BATCH = 4
GRAD_CLIP = 10.0


@dataclass
class DetTrainSettings:
    """Training settings.

    Attributes:
        epochs: Epochs.
        batch_size: Images per step.
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        augment: Random D4 (flips, quarter turns) of images and boxes.
        seed: Seed of subsampling, augmentation and weights.
        device: Torch device name.
        amp: Mixed precision (used on CUDA only).
        bands: 0-based bands of the images fed to the model.
        checkpoint_every: Optimiser steps between calls of ``on_checkpoint``
            (0: never). Benchmarks use it for learning curves.
        on_checkpoint: Called with the step count and the model being trained
            before the first step, every ``checkpoint_every`` steps and after
            the last step; the model is put back in training mode afterwards.
    """

    epochs: int = 10
    batch_size: int = 4
    lr: float = 2e-4
    weight_decay: float = 1e-4
    augment: bool = True
    seed: int = 0
    device: str = "cpu"
    amp: bool = True
    bands: list[int] = field(default_factory=lambda: [0, 1, 2])
    checkpoint_every: int = 0
    on_checkpoint: Callable[[int, nn.Module], None] | None = field(
        default=None, repr=False, compare=False
    )


@dataclass
class DetTrainOutcome:
    """What :func:`train_detector` returns.

    Attributes:
        model: The selected model (CPU, eval mode).
        metrics: Validation metrics of the selected epoch.
        history: Per-epoch records.
        best_epoch: Selected epoch (1-based).
        seconds: Training wall time.
    """

    model: nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    best_epoch: int
    seconds: float


# --------------------------------------------------------------------------- helpers


def _collate(
    items: list[tuple[torch.Tensor, dict[str, torch.Tensor]]],
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    return [i for i, _ in items], [t for _, t in items]


def auto_min_size(samples: Sequence[DetectionSample]) -> int:
    """Automatic resize target: the median shorter image side, at least :data:`AUTO_MIN_SIZE`."""
    sides = [min(s.width, s.height) for s in samples]
    return int(max(AUTO_MIN_SIZE, float(np.median(sides)) if sides else AUTO_MIN_SIZE))


def native_size(samples: Sequence[DetectionSample]) -> int:
    """Median shorter side of the training images (their native scale)."""
    return int(np.median([min(s.width, s.height) for s in samples])) if samples else 0


def make_config(
    train: DetectionSet,
    backbone: str,
    bands: Sequence[int],
    image_size: int = 0,
    trainable_layers: int = 5,
    seed: int = 0,
) -> tuple[DetectorConfig, dict[str, Any]]:
    """Detector configuration with band statistics fitted on the training images.

    Returns:
        ``(config, normalisation)``.
    """
    norm = fit_band_stats(train.samples, bands, seed=seed)
    size = int(image_size) or auto_min_size(train.samples)
    config = DetectorConfig(
        backbone=backbone,
        in_channels=len(bands),
        trainable_layers=trainable_layers,
        min_size=size,
        max_size=max(1333, size),
        image_mean=[float(v) for v in norm["mean"]],
        image_std=[float(v) for v in norm["std"]],
    )
    return config, norm


def predict_samples(
    model: nn.Module,
    samples: Sequence[DetectionSample],
    bands: Sequence[int],
    fill: Sequence[float],
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    on_batch: OnBatch | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run a detector on images; returns per image ``(boxes (M, 4), scores (M,))``.

    ``on_batch`` is called after every batch (progress).
    """
    device = torch.device(device)
    data = DetectionDataset(samples, bands, fill, augment=False)
    model.eval().to(device)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            images = [
                data[i][0].to(device) for i in range(start, min(start + batch_size, len(data)))
            ]
            for r in model(images):
                keep = r["labels"] == 1
                out.append(
                    (
                        r["boxes"][keep].float().cpu().numpy(),
                        r["scores"][keep].float().cpu().numpy(),
                    )
                )
            if on_batch is not None:
                on_batch()
    return out


def evaluate_detector(
    model: nn.Module,
    samples: Sequence[DetectionSample],
    bands: Sequence[int],
    fill: Sequence[float],
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    on_batch: OnBatch | None = None,
) -> dict[str, Any]:
    """COCO mAP and mAP@0.5 of a detector on labelled images (``on_batch``: progress)."""
    preds = predict_samples(model, samples, bands, fill, device, batch_size, on_batch)
    return detection_map(
        [s.boxes for s in samples],
        [b for b, _ in preds],
        [s for _, s in preds],
        [(s.width, s.height) for s in samples],
    )


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return 0.001 + 0.999 * step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class BackboneStart:
    """Weights the detector's backbone body starts from (random when both are unset).

    Attributes:
        weights: Safetensors file loaded strictly into the backbone body.
        state: The same as tensors (e.g. straight from pre-training).
    """

    weights: str | None = None
    state: dict[str, torch.Tensor] | None = None


@dataclass
class _Loop:
    """What the training steps share: the model, its optimiser and the schedule."""

    model: nn.Module
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    data: DetectionDataset
    device: torch.device
    use_amp: bool
    total: int
    warmup: int
    step: int = 0


@dataclass
class _Best:
    """The best epoch so far and its weights."""

    epoch: int = 0
    score: float = -math.inf
    metrics: dict[str, Any] = field(default_factory=dict)
    state: dict[str, torch.Tensor] | None = None


def train_detector(
    train: DetectionSet,
    valid: DetectionSet,
    config: DetectorConfig,
    settings: DetTrainSettings,
    start: BackboneStart | None = None,
    log: Log = print,
    progress: Progress | None = None,
    warn: Log | None = None,
) -> DetTrainOutcome:
    """Train a detector and keep the epoch with the best validation mAP@0.5.

    Args:
        train: Training images.
        valid: Validation images (selection only).
        config: Detector configuration (see :func:`make_config`).
        settings: Training settings.
        start: Backbone weights to start from (random start when ``None``).
        log: Receives per-epoch lines.
        progress: Receives the fraction done after every batch.
        warn: Receives warnings.

    Returns:
        The selected model and its validation metrics.
    """
    from slidewise.engine.core.runtime import seed_everything

    warn = warn or log
    started = time.time()
    seed_everything(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = _start_model(config, start or BackboneStart(), log)
    data = DetectionDataset(
        train.samples, settings.bands, config.image_mean, settings.augment, generator
    )
    check_share(settings.batch_size)
    loop = _make_loop(model, data, settings)
    if valid.n_boxes == 0:
        warn(
            "The validation images hold no boxes: mAP cannot be measured, so the last epoch is "
            "kept. Give VALID images with landslides for a meaningful selection."
        )
    history: list[dict[str, Any]] = []
    best = _Best()
    measured = len(valid.samples) if valid.n_boxes > 0 else 0
    per_epoch = validation_work(measured, VALID_BATCH)
    counter = StepCounter(loop.total + settings.epochs * per_epoch, progress)
    _checkpoint(loop, settings)
    for epoch in range(settings.epochs):
        t0 = time.time()
        running, seen = _train_epoch(loop, settings, generator, epoch, counter)
        metrics = _validate(loop, valid, settings, config.image_mean, counter)
        record = _epoch_record(epoch, running, seen, metrics, t0)
        history.append(record)
        improved = _keep_if_best(best, loop.model, epoch, metrics, valid.n_boxes > 0)
        log(
            f"epoch {epoch + 1}/{settings.epochs}: train loss {record['train_loss']:.4f}, "
            f"valid mAP@0.5 {metrics['map50']:.4f}, mAP {metrics['map']:.4f}"
            f"{' *' if improved else ''} [{record['seconds']:.1f} s]"
        )
    check_in_step(loop.model)
    final = build_detector(config)
    final.load_state_dict(best.state if best.state is not None else loop.model.state_dict())
    final.eval()
    log(f"Selected epoch {best.epoch} (validation mAP@0.5 {best.score:.4f}).")
    return DetTrainOutcome(
        model=final,
        metrics=dict(best.metrics),
        history=history,
        best_epoch=int(best.epoch),
        seconds=time.time() - started,
    )


def _start_model(config: DetectorConfig, start: BackboneStart, log: Log) -> nn.Module:
    """A new detector, its backbone body loaded from ``start`` when given."""
    model = build_detector(config)
    if start.weights:
        info = load_backbone_weights(model, start.weights)
        log(f"Loaded {info['tensors']} backbone tensors from {Path(start.weights).name}.")
    elif start.state is not None:
        info = load_backbone_state(model, start.state, "the pre-trained encoder")
        log(f"Loaded {info['tensors']} pre-trained backbone tensors.")
    return model


def _make_loop(model: nn.Module, data: DetectionDataset, settings: DetTrainSettings) -> _Loop:
    """AdamW, the gradient scaler (AMP on CUDA only) and the warm-up/cosine schedule length."""
    device = torch.device(settings.device)
    model.to(device)
    use_amp = device.type == "cuda" and settings.amp
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    steps_per_epoch = math.ceil(len(data) / settings.batch_size)
    total = max(1, settings.epochs * steps_per_epoch)
    warmup = min(WARMUP_STEPS, total // 4)
    return _Loop(model, params, optimizer, scaler, data, device, use_amp, total, warmup)


def _train_epoch(
    loop: _Loop,
    settings: DetTrainSettings,
    generator: torch.Generator,
    epoch: int,
    counter: StepCounter,
) -> tuple[dict[str, float], int]:
    """One pass over the training images; returns the summed losses and the images seen.

    Raises:
        InputError: the loss is not finite (training diverged).
    """
    loop.model.train()
    order = torch.randperm(len(loop.data), generator=generator).tolist()
    running: dict[str, float] = {}
    seen = 0
    for start in range(0, len(order), settings.batch_size):
        idx = order[start : start + settings.batch_size]
        mine = idx[batch_share(len(idx))]
        losses = _train_step(loop, settings, [loop.data[i] for i in mine], epoch)
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + float(v.detach()) * len(idx)
        seen += len(idx)
        loop.step += 1
        counter.step()
        _checkpoint(loop, settings)
    return running, seen


def _checkpoint(loop: _Loop, settings: DetTrainSettings) -> None:
    """Call ``settings.on_checkpoint`` at step 0, every ``checkpoint_every`` steps and the last."""
    every = settings.checkpoint_every
    if settings.on_checkpoint is None or every <= 0:
        return
    if loop.step % every == 0 or loop.step == loop.total:
        settings.on_checkpoint(loop.step, loop.model)
        loop.model.train()


def _train_step(
    loop: _Loop,
    settings: DetTrainSettings,
    items: list[tuple[torch.Tensor, dict[str, torch.Tensor]]],
    epoch: int,
) -> dict[str, torch.Tensor]:
    """One optimiser step on a batch (scheduled lr, AMP, gradient clipping)."""
    images, targets = _collate(items)
    images = [im.to(loop.device, non_blocking=True) for im in images]
    targets = [{k: v.to(loop.device) for k, v in t.items()} for t in targets]
    for group in loop.optimizer.param_groups:
        group["lr"] = settings.lr * _lr_factor(loop.step, loop.total, loop.warmup)
    with torch.autocast(device_type="cuda", enabled=loop.use_amp):
        losses = loop.model(images, targets)
    loss = sum(losses.values())
    if not torch.isfinite(loss):
        raise InputError(f"Training diverged (loss {float(loss)} in epoch {epoch + 1}): lower LR.")
    loop.optimizer.zero_grad(set_to_none=True)
    loop.scaler.scale(loss).backward()
    share_gradients(loop.params)
    loop.scaler.unscale_(loop.optimizer)
    torch.nn.utils.clip_grad_norm_(loop.params, GRAD_CLIP)
    loop.scaler.step(loop.optimizer)
    loop.scaler.update()
    return losses


def _validate(
    loop: _Loop,
    valid: DetectionSet,
    settings: DetTrainSettings,
    fill: Sequence[float],
    counter: StepCounter,
) -> dict[str, Any]:
    """Validation mAP of the current weights (NaN when the validation images have no box)."""
    if valid.n_boxes == 0:
        return {"map": math.nan, "map50": math.nan}
    return evaluate_detector(
        loop.model,
        valid.samples,
        settings.bands,
        fill,
        loop.device,
        VALID_BATCH,
        counter.valid_step,
    )


def _epoch_record(
    epoch: int, running: dict[str, float], seen: int, metrics: dict[str, Any], t0: float
) -> dict[str, Any]:
    """The history entry of an epoch: mean losses, validation mAP and seconds."""
    return {
        "epoch": epoch + 1,
        "train_loss": sum(running.values()) / max(seen, 1),
        **{k: v / max(seen, 1) for k, v in running.items()},
        "map50": metrics["map50"],
        "map": metrics["map"],
        "seconds": round(time.time() - t0, 1),
    }


def _keep_if_best(
    best: _Best, model: nn.Module, epoch: int, metrics: dict[str, Any], measured: bool
) -> bool:
    """Keep the weights when mAP@0.5 improved (the latest epoch when mAP is not measured)."""
    score = metrics["map50"] if measured else float(epoch)
    if not score > best.score + 1e-9:
        return False
    best.epoch, best.score, best.metrics = epoch + 1, score, dict(metrics)
    best.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return True


# --------------------------------------------------------------------------- the job


def subsample(data: DetectionSet, n: int, seed: int) -> DetectionSet:
    """At most ``n`` images drawn without replacement (seeded); all when ``n`` is 0."""
    if n <= 0 or n >= len(data):
        return data
    rng = np.random.default_rng(seed)
    return data.subset(sorted(rng.choice(len(data), n, replace=False).tolist()))


def split_validation(
    data: DetectionSet, fraction: float, seed: int
) -> tuple[DetectionSet, DetectionSet]:
    """Split whole images off for validation (seeded), preferring a share with boxes."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    n_valid = max(1, round(fraction * len(data)))
    if n_valid >= len(data):
        raise InputError(
            f"The training set has only {len(data)} image(s): give VALID images or more data."
        )
    valid_idx = sorted(order[:n_valid].tolist())
    train_idx = sorted(order[n_valid:].tolist())
    return data.subset(train_idx), data.subset(valid_idx)


def resolve_detection_bands(value: Any, band_names: Sequence[str]) -> list[int]:
    """``BANDS`` (1-based numbers or names) as 0-based indices; all bands when empty."""
    from slidewise.engine.imagery.datasets import resolve_bands

    return resolve_bands(value, list(band_names))


@dataclass(frozen=True)
class TrainDetectionParams(JobParams):
    """Parameters of the ``traindetection`` job (``contract/specs/traindetection.py``).

    ``seed`` is ``None`` when unset (the runtime seed applies).
    """

    SPEC = TRAIN_SPEC

    format: str = "voc"
    train: str = ""
    valid: str | None = None
    backbone: str = "resnet18"
    encoder_weights: str | None = None
    label_polygons: str | None = None
    valid_fraction: float = 0.2
    box_coordinates: str = "auto"
    min_area: int = 100
    bands: str | None = None
    trainable_layers: int = 5
    epochs: int = 10
    batch_size: int = 4
    lr: float = 2e-4
    image_size: int = 0
    max_train_images: int = 0
    max_valid_images: int = 0
    augment: bool = True
    seed: int | None = None
    output: str = ""
    output_report: str | None = None


@dataclass(frozen=True)
class TrainingData:
    """The images a job trains and selects on.

    Attributes:
        train: Training images.
        valid: Validation images.
        split: How the validation images were chosen (for the log and provenance).
    """

    train: DetectionSet
    valid: DetectionSet
    split: str


def run_train(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Train a Faster R-CNN landslide detector and write it to OUTPUT.

    The parameters are declared in ``contract/specs/traindetection.py``: TRAIN
    (required) and VALID folders of FORMAT voc, coco or masks (or georeferenced
    images with LABEL_POLYGONS); without VALID, VALID_FRACTION of the training
    images (whole images, seeded) is split off. BOX_COORDINATES decides the
    frame of boxes whose annotation states another image size (see
    :mod:`slidewise.engine.detection.annotations`); MIN_AREA is the smallest
    mask component that becomes a box. BANDS, BACKBONE (torchvision ResNets or
    ``timm:<name>``, always with a feature pyramid), TRAINABLE_LAYERS and
    ENCODER_WEIGHTS (loaded strictly into the backbone body; a prefix
    ``backbone.body.``, ``encoder.``, ``body.`` or ``backbone.`` is removed)
    make the model; EPOCHS, BATCH_SIZE, LR, IMAGE_SIZE (0: the median shorter
    training image side, at least 448), MAX_TRAIN_IMAGES, MAX_VALID_IMAGES,
    AUGMENT and SEED the training. OUTPUT is the model file (task ``detection``).

    Returns:
        OUTPUT = the model path; figures = validation mAP@0.5 and mAP of the
        selected epoch, images and boxes used.
    """
    from slidewise.engine.core.runtime import apply, select_device

    options = TrainDetectionParams.from_params(params)
    check_writable(options.output)
    if options.output_report:
        check_writable(options.output_report)
    _check_options(options)
    seed = ctx.options.seed if options.seed is None else options.seed
    apply(replace(ctx.options, seed=seed))
    device = select_device(ctx.options.device)
    data = _read_training_data(options, seed, ctx)
    train, valid = data.train, data.valid
    bands = resolve_detection_bands(options.bands, train.band_names)
    config, norm = make_config(
        train, options.backbone, bands, options.image_size, options.trainable_layers, seed
    )
    build_detector(config)  # fail early on a bad backbone
    ctx.log(_summary(options, data, config, device))
    settings = DetTrainSettings(
        epochs=options.epochs,
        batch_size=options.batch_size,
        lr=options.lr,
        augment=options.augment,
        seed=seed,
        device=str(device),
        bands=bands,
    )
    start = BackboneStart(weights=options.encoder_weights)
    outcome = train_detector(
        train, valid, config, settings, start, ctx.log, ctx.stage(3, 98), ctx.warn
    )
    _save(options, data, config, settings, outcome, norm)
    ctx.log(f"Model written to {options.output}.")
    if options.output_report:
        write_validation_report(options, data.valid, config, settings, outcome)
        ctx.log(f"Validation report written to {options.output_report}.")
    inputs = [options.train]
    inputs += [p for p in (options.valid, options.label_polygons, options.encoder_weights) if p]
    figures = {
        "valid_map50": outcome.metrics.get("map50"),
        "valid_map": outcome.metrics.get("map"),
        "best_epoch": outcome.best_epoch,
        "train_images": len(train),
        "train_boxes": train.n_boxes,
        "valid_images": len(valid),
    }
    return JobResult(
        outputs={"OUTPUT": options.output}, figures=figures, inputs=inputs, device=device.type
    )


def write_validation_report(
    options: TrainDetectionParams,
    valid: DetectionSet,
    config: DetectorConfig,
    settings: DetTrainSettings,
    outcome: DetTrainOutcome,
) -> None:
    """Run the selected model on the validation images and write OUTPUT_REPORT (+ JSON)."""
    from slidewise.engine.core.modelsummary import model_summary
    from slidewise.engine.core.report import provenance
    from slidewise.engine.detection.report import detection_report, write_detection_report

    assert options.output_report
    predictions = predict_samples(
        outcome.model, valid.samples, settings.bands, config.image_mean, settings.device
    )
    inputs = {
        "TRAIN": options.train,
        "VALID": options.valid,
        "LABEL_POLYGONS": options.label_polygons,
        "ENCODER_WEIGHTS": options.encoder_weights,
        "OUTPUT (model)": options.output,
    }
    training = {
        "metrics": outcome.metrics,
        "history": outcome.history,
        "method": model_summary(options.output),
        "provenance": provenance(inputs),
    }
    report = detection_report(valid.samples, predictions, settings.bands, training)
    write_detection_report(options.output_report, report)


def _summary(
    options: TrainDetectionParams, data: TrainingData, config: DetectorConfig, device: torch.device
) -> str:
    """The log line that says what is about to be trained."""
    train, valid = data.train, data.valid
    return (
        f"{len(train)} training image(s) with {train.n_boxes} boxes ({train.n_negatives} "
        f"negatives), {len(valid)} validation image(s) with {valid.n_boxes} boxes; {data.split}. "
        f"Backbone {options.backbone}-FPN, resize to {config.min_size} px, {options.epochs} "
        f"epochs, batch {options.batch_size}, lr {options.lr:g}, augment {options.augment}, "
        f"device {device}."
    )


def _check_options(options: TrainDetectionParams) -> None:
    """Checks the contract cannot make: IMAGE_SIZE 0 or >= 32, the encoder file exists.

    Raises:
        InputError: either check fails.
    """
    if 0 < options.image_size < 32:
        raise InputError(f"IMAGE_SIZE must be 0 (auto) or at least 32, got {options.image_size}.")
    weights = options.encoder_weights
    if weights and not Path(weights).is_file():
        raise InputError(
            f"The encoder weights file '{weights}' does not exist: check ENCODER_WEIGHTS."
        )


def _read_training_data(options: TrainDetectionParams, seed: int, ctx: JobContext) -> TrainingData:
    """Read the training and validation images (split and subsampled, seeded).

    Raises:
        InputError: unreadable data, no boxes in the training images, or validation
            images with another band count.
    """
    ctx.log(f"Reading the {options.format} training data ...")
    ctx.progress(1)

    def read(source: str) -> DetectionSet:
        return read_detection_set(
            source,
            options.format,
            box_frame=options.box_coordinates,
            min_area=options.min_area,
            polygons=options.label_polygons,
            warn=ctx.warn,
        )

    train = read(options.train)
    if options.valid:
        valid = subsample(read(options.valid), options.max_valid_images, seed + 1)
        split = f"validation = {len(valid)} given image(s)"
    else:
        train, valid = split_validation(train, options.valid_fraction, seed)
        valid = subsample(valid, options.max_valid_images, seed + 1)
        split = f"validation = {len(valid)} random training image(s) (seed {seed})"
    for note in train.notes:
        if "negatives" in note or "ignored" in note or note.startswith("Boxes are"):
            ctx.log(f"Training data: {note}")
    train = subsample(train, options.max_train_images, seed)
    if train.n_boxes == 0:
        raise InputError(
            "The training images hold no boxes: check the annotations (or MIN_AREA for masks)."
        )
    if len(valid.band_names) != len(train.band_names):
        raise InputError(
            f"The validation images have {len(valid.band_names)} bands but the training images "
            f"have {len(train.band_names)}: use images with the same bands."
        )
    return TrainingData(train, valid, split)


def _save(
    options: TrainDetectionParams,
    data: TrainingData,
    config: DetectorConfig,
    settings: DetTrainSettings,
    outcome: DetTrainOutcome,
    norm: dict[str, Any],
) -> None:
    """Write the model file with its provenance, metrics and band indices."""
    train, bands = data.train, settings.bands
    save_detector(
        options.output,
        outcome.model,
        config,
        [train.band_names[b] for b in bands],
        tile_size=native_size(train.samples),
        provenance={
            "job": "traindetection",
            "format": options.format,
            "train": options.train,
            "valid": options.valid or "",
            "split": data.split,
            "train_images": len(train),
            "train_boxes": train.n_boxes,
            "data_notes": train.notes,
            "encoder_weights": options.encoder_weights or "",
            "settings": asdict(settings),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        metrics={"validation": outcome.metrics, "history": outcome.history},
        extra={
            "band_indices": [b + 1 for b in bands],
            "best_epoch": outcome.best_epoch,
            "normalisation_images": norm.get("images"),
            "box_format": "x1,y1,x2,y2 image pixels",
        },
    )
