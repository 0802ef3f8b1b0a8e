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

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult, check_known, choice, require
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.core.params import integer_param, is_set, number_param, to_bool
from slidewise.engine.detection.data import (
    BOX_FRAMES,
    FORMATS,
    DetectionDataset,
    DetectionSample,
    DetectionSet,
    fit_band_stats,
    read_detection_set,
)
from slidewise.engine.detection.metrics import detection_map
from slidewise.engine.detection.models import (
    DetectorConfig,
    build_detector,
    load_backbone_state,
    load_backbone_weights,
    save_detector,
)

Log = Callable[[str], None]
Progress = Callable[[float], None]

#: Smallest automatic resize target (shorter side) of the detector.
AUTO_MIN_SIZE = 448
WARMUP_STEPS = 100
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
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run a detector on images; returns per image ``(boxes (M, 4), scores (M,))``."""
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
    return out


def evaluate_detector(
    model: nn.Module,
    samples: Sequence[DetectionSample],
    bands: Sequence[int],
    fill: Sequence[float],
    device: torch.device | str = "cpu",
    batch_size: int = 4,
) -> dict[str, Any]:
    """COCO mAP and mAP@0.5 of a detector on labelled images."""
    preds = predict_samples(model, samples, bands, fill, device, batch_size)
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


def train_detector(
    train: DetectionSet,
    valid: DetectionSet,
    config: DetectorConfig,
    settings: DetTrainSettings,
    encoder_weights: str | None = None,
    encoder_state: dict[str, torch.Tensor] | None = None,
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
        encoder_weights: Safetensors file loaded strictly into the backbone body.
        encoder_state: The same as tensors (e.g. straight from pre-training).
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
    device = torch.device(settings.device)
    model = build_detector(config)
    if encoder_weights:
        info = load_backbone_weights(model, encoder_weights)
        log(f"Loaded {info['tensors']} backbone tensors from {Path(encoder_weights).name}.")
    elif encoder_state is not None:
        info = load_backbone_state(model, encoder_state, "the pre-trained encoder")
        log(f"Loaded {info['tensors']} pre-trained backbone tensors.")
    model.to(device)
    cuda = device.type == "cuda"
    use_amp = cuda and settings.amp
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    fill = config.image_mean
    data = DetectionDataset(train.samples, settings.bands, fill, settings.augment, generator)
    steps_per_epoch = math.ceil(len(data) / settings.batch_size)
    total = max(1, settings.epochs * steps_per_epoch)
    warmup = min(WARMUP_STEPS, total // 4)
    valid_has_boxes = valid.n_boxes > 0
    if not valid_has_boxes:
        warn(
            "The validation images hold no boxes: mAP cannot be measured, so the last epoch is "
            "kept. Give VALID images with landslides for a meaningful selection."
        )
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": 0, "score": -math.inf, "metrics": {}}
    best_state: dict[str, torch.Tensor] | None = None
    step = 0
    for epoch in range(settings.epochs):
        t0 = time.time()
        model.train()
        order = torch.randperm(len(data), generator=generator).tolist()
        running: dict[str, float] = {}
        seen = 0
        for start in range(0, len(order), settings.batch_size):
            idx = order[start : start + settings.batch_size]
            images, targets = _collate([data[i] for i in idx])
            images = [im.to(device, non_blocking=True) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * _lr_factor(step, total, warmup)
            with torch.autocast(device_type="cuda", enabled=use_amp):
                losses = model(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise InputError(
                    f"Training diverged (loss {float(loss)} in epoch {epoch + 1}): lower LR."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            scaler.step(optimizer)
            scaler.update()
            for k, v in losses.items():
                running[k] = running.get(k, 0.0) + float(v.detach()) * len(idx)
            seen += len(idx)
            step += 1
            if progress is not None:
                progress(step / total)
        metrics = (
            evaluate_detector(model, valid.samples, settings.bands, fill, device)
            if valid_has_boxes
            else {"map": math.nan, "map50": math.nan}
        )
        record = {
            "epoch": epoch + 1,
            "train_loss": sum(running.values()) / max(seen, 1),
            **{k: v / max(seen, 1) for k, v in running.items()},
            "map50": metrics["map50"],
            "map": metrics["map"],
            "seconds": round(time.time() - t0, 1),
        }
        history.append(record)
        score = metrics["map50"] if valid_has_boxes else float(epoch)
        improved = score > best["score"] + 1e-9
        if improved:
            best = {"epoch": epoch + 1, "score": score, "metrics": dict(metrics)}
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        log(
            f"epoch {epoch + 1}/{settings.epochs}: train loss {record['train_loss']:.4f}, "
            f"valid mAP@0.5 {metrics['map50']:.4f}, mAP {metrics['map']:.4f}"
            f"{' *' if improved else ''} [{record['seconds']:.1f} s]"
        )
    final = build_detector(config)
    final.load_state_dict(best_state if best_state is not None else model.state_dict())
    final.eval()
    log(f"Selected epoch {best['epoch']} (validation mAP@0.5 {best['score']:.4f}).")
    return DetTrainOutcome(
        model=final,
        metrics=dict(best["metrics"]),
        history=history,
        best_epoch=int(best["epoch"]),
        seconds=time.time() - started,
    )


# --------------------------------------------------------------------------- the job

KNOWN_PARAMS = {
    "TRAIN",
    "VALID",
    "VALID_FRACTION",
    "FORMAT",
    "BOX_COORDINATES",
    "MIN_AREA",
    "LABEL_POLYGONS",
    "BANDS",
    "BACKBONE",
    "TRAINABLE_LAYERS",
    "ENCODER_WEIGHTS",
    "EPOCHS",
    "BATCH_SIZE",
    "LR",
    "IMAGE_SIZE",
    "MAX_TRAIN_IMAGES",
    "MAX_VALID_IMAGES",
    "AUGMENT",
    "SEED",
    "OUTPUT",
}


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


def run_train(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Train a Faster R-CNN landslide detector and write it to OUTPUT.

    Parameters (an empty value means the default):

    * TRAIN (folder or file, required): training images with boxes: a Pascal
      VOC folder (FORMAT voc: image + .xml with the same name), a COCO .json
      (FORMAT coco; images next to it or in an "images" folder), or a folder
      with "images" and "masks" subfolders (FORMAT masks).
    * VALID (folder or file, optional): validation images of the same format,
      used to select the epoch. Without it, VALID_FRACTION of the training
      images (whole images, seeded) is split off.
    * VALID_FRACTION (float, 0.2): share of TRAIN split off when VALID is empty.
    * FORMAT (str, "voc"): "voc", "coco" or "masks".
    * BOX_COORDINATES (str, "auto"): when an annotation states another image
      size than the image file: "auto" (decide from the boxes, see
      slidewise.engine.detection.data), "image" (boxes are in image pixels) or
      "annotation" (boxes are in the stated size and are scaled).
    * MIN_AREA (int, 100): FORMAT masks: smallest connected landslide
      component (pixels, 8-connected) that becomes a box.
    * LABEL_POLYGONS (vector file, optional): landslide polygons; TRAIN (and
      VALID) are then georeferenced images and every polygon gives a box.
    * BANDS (str, all): image bands fed to the model (1-based numbers or names).
    * BACKBONE (str, "resnet18"): "resnet18", "resnet34", "resnet50",
      "resnet101", "resnet152" (torchvision) or "timm:<name>" (e.g.
      "timm:efficientnet_b0"); always with a feature pyramid; no download.
    * TRAINABLE_LAYERS (int, 5): trainable backbone stages from the top (0-5).
    * ENCODER_WEIGHTS (safetensors file, optional): backbone weights (e.g. from
      the pretrainencoder job), loaded strictly into the backbone body; keys
      are the body's names, a prefix "backbone.body.", "encoder.", "body." or
      "backbone." is removed; missing or unexpected keys are an error that
      lists them.
    * EPOCHS (int, 10): training epochs.
    * BATCH_SIZE (int, 4): images per step.
    * LR (float, 2e-4): peak AdamW learning rate (warm-up, cosine decay).
    * IMAGE_SIZE (int, 0 = auto): shorter image side after the detector's
      resize; auto = the median shorter side of the training images, at least 448.
    * MAX_TRAIN_IMAGES (int, 0 = all): train on at most this many images
      (seeded random subset).
    * MAX_VALID_IMAGES (int, 0 = all): validate on at most this many images.
    * AUGMENT (bool, true): random flips and quarter turns of images and boxes.
    * SEED (int, runtime seed): seed of splits, subsets, augmentation, weights.
    * OUTPUT (file, required): the model file (.safetensors, task "detection").

    Returns:
        OUTPUT = the model path; figures = validation mAP@0.5 and mAP of the
        selected epoch, images and boxes used.
    """
    from slidewise.engine.core.runtime import apply, select_device

    check_known(params, KNOWN_PARAMS)
    require(params, "TRAIN", "OUTPUT")
    check_writable(params["OUTPUT"])
    fmt = choice(params, "FORMAT", FORMATS, "voc")
    frame = choice(params, "BOX_COORDINATES", BOX_FRAMES, "auto")
    seed = integer_param(params, "SEED", ctx.options.seed, 0, 2**31 - 1)
    epochs = integer_param(params, "EPOCHS", 10, 1, 100000)
    batch_size = integer_param(params, "BATCH_SIZE", 4, 1, 1024)
    lr = number_param(params, "LR", 2e-4, 1e-7, 1.0)
    image_size = integer_param(params, "IMAGE_SIZE", 0, 0, 4096)
    if 0 < image_size < 32:
        raise InputError(f"IMAGE_SIZE must be 0 (auto) or at least 32, got {image_size}.")
    max_train = integer_param(params, "MAX_TRAIN_IMAGES", 0, 0, 10**9)
    max_valid = integer_param(params, "MAX_VALID_IMAGES", 0, 0, 10**9)
    trainable = integer_param(params, "TRAINABLE_LAYERS", 5, 0, 5)
    min_area = integer_param(params, "MIN_AREA", 100, 1, 10**9)
    fraction = number_param(params, "VALID_FRACTION", 0.2, 0.01, 0.9)
    augment = to_bool(params.get("AUGMENT", True), "AUGMENT")
    backbone = str(params.get("BACKBONE") or "resnet18").strip()
    polygons = str(params["LABEL_POLYGONS"]) if is_set(params, "LABEL_POLYGONS") else None
    encoder_weights = str(params["ENCODER_WEIGHTS"]) if is_set(params, "ENCODER_WEIGHTS") else None
    if encoder_weights and not Path(encoder_weights).is_file():
        raise InputError(
            f"The encoder weights file '{encoder_weights}' does not exist: check ENCODER_WEIGHTS."
        )
    apply(replace(ctx.options, seed=seed))
    device = select_device(ctx.options.device)

    ctx.log(f"Reading the {fmt} training data ...")
    ctx.progress(1)
    read = {"box_frame": frame, "min_area": min_area, "polygons": polygons, "warn": ctx.warn}
    train = read_detection_set(str(params["TRAIN"]), fmt, **read)  # type: ignore[arg-type]
    if is_set(params, "VALID"):
        valid = read_detection_set(str(params["VALID"]), fmt, **read)  # type: ignore[arg-type]
        valid = subsample(valid, max_valid, seed + 1)
        split = f"validation = {len(valid)} given image(s)"
    else:
        train, valid = split_validation(train, fraction, seed)
        valid = subsample(valid, max_valid, seed + 1)
        split = f"validation = {len(valid)} random training image(s) (seed {seed})"
    for note in train.notes:
        if "negatives" in note or "ignored" in note or note.startswith("Boxes are"):
            ctx.log(f"Training data: {note}")
    train = subsample(train, max_train, seed)
    if train.n_boxes == 0:
        raise InputError(
            "The training images hold no boxes: check the annotations (or MIN_AREA for masks)."
        )
    bands = resolve_detection_bands(params.get("BANDS"), train.band_names)
    if len(valid.band_names) != len(train.band_names):
        raise InputError(
            f"The validation images have {len(valid.band_names)} bands but the training images "
            f"have {len(train.band_names)}: use images with the same bands."
        )
    config, norm = make_config(train, backbone, bands, image_size, trainable, seed)
    build_detector(config)  # fail early on a bad backbone
    ctx.log(
        f"{len(train)} training image(s) with {train.n_boxes} boxes ({train.n_negatives} "
        f"negatives), {len(valid)} validation image(s) with {valid.n_boxes} boxes; {split}. "
        f"Backbone {backbone}-FPN, resize to {config.min_size} px, {epochs} epochs, batch "
        f"{batch_size}, lr {lr:g}, augment {augment}, device {device}."
    )
    settings = DetTrainSettings(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        augment=augment,
        seed=seed,
        device=str(device),
        bands=bands,
    )
    outcome = train_detector(
        train,
        valid,
        config,
        settings,
        encoder_weights=encoder_weights,
        log=ctx.log,
        progress=ctx.stage(3, 98),
        warn=ctx.warn,
    )
    save_detector(
        params["OUTPUT"],
        outcome.model,
        config,
        [train.band_names[b] for b in bands],
        tile_size=native_size(train.samples),
        provenance={
            "job": "traindetection",
            "format": fmt,
            "train": str(params["TRAIN"]),
            "valid": str(params.get("VALID") or ""),
            "split": split,
            "train_images": len(train),
            "train_boxes": train.n_boxes,
            "data_notes": train.notes,
            "encoder_weights": encoder_weights or "",
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
    ctx.log(f"Model written to {params['OUTPUT']}.")
    inputs = [str(params["TRAIN"])]
    for name in ("VALID", "LABEL_POLYGONS", "ENCODER_WEIGHTS"):
        if is_set(params, name):
            inputs.append(str(params[name]))
    return JobResult(
        outputs={"OUTPUT": str(params["OUTPUT"])},
        figures={
            "valid_map50": outcome.metrics.get("map50"),
            "valid_map": outcome.metrics.get("map"),
            "best_epoch": outcome.best_epoch,
            "train_images": len(train),
            "train_boxes": train.n_boxes,
            "valid_images": len(valid),
        },
        inputs=inputs,
        device=device.type,
    )
