"""Encoder pre-training on landslide imagery: the ``pretrainencoder`` job.

Two ways to give an encoder (an smp encoder, e.g. ``resnet18``) a better
start than random weights, without downloaded weights:

* ``mae``: self-supervised masked-autoencoder pre-training on unlabelled
  images of any band count (:mod:`slidewise.engine.detection.mae`): a share
  ``MASK_RATIO`` (0.75) of the ``PATCH_SIZE`` patches of each chip is hidden
  and reconstructed; the loss counts hidden patches only. ``NORM_PIX``
  switches to MAE's ``norm_pix_loss`` targets (each patch normalised to zero
  mean and unit variance), which in our short runs learnt far more slowly: on
  20 Bijie images at 128 px, 8 epochs, the fixed-mask loss went from 1.007 to
  0.999 with ``NORM_PIX`` (predicting zeros: 1.000) but from 1.016 to 0.830
  without (predicting zeros: 1.010). Predicting zeros (the band means, or the
  patch means with ``NORM_PIX``) is the baseline: a loss below it means masked
  pixels are predicted from context.
* ``distill``: knowledge distillation from a trained teacher (a mapping model
  or one region of a multiregion model, :mod:`slidewise.engine.detection.distill`):
  a student U-Net with the chosen encoder learns the teacher's soft per-pixel
  outputs at temperature ``T`` (5), plus a hard Dice+BCE term on labelled
  pixels when MASKS are given. The teacher's bands and normalisation are used.

The result is an encoder file (:mod:`slidewise.engine.detection.encoders`,
task ``encoder``) that initialises mapping models (``ENCODER_WEIGHTS`` of
``trainmapping`` and ``addregion``) and detection backbones
(:func:`~slidewise.engine.detection.encoders.encoder_state_dict` with
``target="torchvision_resnet"``). :func:`pretrain_encoder` runs the same MAE
pre-training on in-memory images (benchmarks).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from slidewise.contract.specs.pretrainencoder import SPEC as PRETRAIN_SPEC
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult, Log, Progress
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.core.params import JobParams
from slidewise.engine.detection.distill import load_teacher, train_distill
from slidewise.engine.detection.encoders import EncoderRecord, build_encoder, save_encoder
from slidewise.engine.detection.mae import train_mae
from slidewise.engine.detection.pretrain_data import (
    UnlabelledScene,
    choose_chip_size,
    image_scenes,
    resolve_normalisation,
    scenes_from_images,
)
from slidewise.engine.detection.pretraining import PretrainResult, PretrainSettings
from slidewise.engine.imagery.datasets import (
    Chip,
    ChipDataset,
    LabelMapping,
    Scene,
    make_chips,
    resolve_bands,
)
from slidewise.engine.imagery.labels import parse_color, parse_values

MODES = ("mae", "distill")


@dataclass(frozen=True)
class PretrainParams(JobParams):
    """Parameters of the ``pretrainencoder`` job (``contract/specs/pretrainencoder.py``).

    ``LAMBDA`` is the field ``lambda_`` (``lambda`` is a Python keyword);
    ``seed`` is ``None`` when unset (the runtime seed applies).
    """

    SPEC = PRETRAIN_SPEC

    images: str = ""
    mode: str = "mae"
    backbone: str = "resnet18"
    teacher: str | None = None
    teacher_region: str | None = None
    masks: str | None = None
    dataset_type: str = "auto"
    landslide_values: str | None = None
    ignore_values: str | None = None
    mask_color: str | None = None
    bands: str | None = None
    normalisation: str = "fit"
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    mask_ratio: float = 0.75
    patch_size: int = 16
    norm_pix: bool = False
    chip_size: int = 128
    chips_per_epoch: int = 0
    temperature: float = 5.0
    lambda_: float = 0.9
    augment: bool = True
    seed: int | None = None
    output: str = ""


@dataclass(frozen=True)
class Teacher:
    """A distillation teacher with the bands and normalisation it expects."""

    model: nn.Module
    bands: list[str]
    normalisation: dict[str, Any]


@dataclass(frozen=True)
class PretrainData:
    """The chips a job pre-trains on.

    Attributes:
        scenes: The images.
        bands: 0-based bands used.
        size: Chip side in pixels.
        chips: The chips.
        normalisation: Per-band normalisation (stored in the encoder file).
        dataset: Normalised chips (labels: hard targets, or only padding/nodata ignored).
    """

    scenes: list[Scene]
    bands: list[int]
    size: int
    chips: list[Chip]
    normalisation: dict[str, Any]
    dataset: ChipDataset

    @property
    def band_names(self) -> list[str]:
        """Names of the bands used."""
        names = self.scenes[0].band_names
        return [names[b] for b in self.bands]


# --------------------------------------------------------------------------- the job


def run_pretrain(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Pre-train an encoder on landslide imagery and write an encoder file to OUTPUT.

    The parameters are declared in ``contract/specs/pretrainencoder.py``:
    IMAGES (required) and, MODE distill, TEACHER (TEACHER_REGION for a
    multiregion teacher) and optional MASKS whose labelled pixels add the hard
    loss; DATASET_TYPE and the label reading (LANDSLIDE_VALUES, IGNORE_VALUES,
    MASK_COLOR, BANDS); NORMALISATION (MODE mae; distill uses the teacher's);
    the training settings (EPOCHS, BATCH_SIZE, LR, WEIGHT_DECAY, MASK_RATIO,
    PATCH_SIZE, NORM_PIX, CHIP_SIZE, CHIPS_PER_EPOCH, TEMPERATURE, LAMBDA,
    AUGMENT, SEED) and OUTPUT (the encoder file, task ``encoder``).

    Returns:
        OUTPUT = the encoder file; figures: MAE loss with fixed masks before and
        after training and the zeros baseline (mae), or the student-teacher
        agreement (distill), and the last epoch's losses.
    """
    from slidewise.engine.core.runtime import apply, select_device

    options = PretrainParams.from_params(params)
    check_writable(options.output)
    seed = ctx.options.seed if options.seed is None else options.seed
    apply(replace(ctx.options, seed=seed))
    device = select_device(ctx.options.device)
    settings = pretrain_settings(options, seed, str(device))
    build_encoder(options.backbone)  # fail early on a bad backbone
    teacher = _teacher(options, ctx)
    data = _pretrain_data(options, teacher, seed, ctx)
    ctx.log(_summary(options, settings, data, device))
    if teacher is None:
        result = train_mae(data.dataset, settings, ctx.log, ctx.stage(2, 97))
    else:
        result = train_distill(data.dataset, teacher.model, settings, ctx.log, ctx.stage(2, 97))
    _save(options, settings, data, result)
    ctx.log(f"Encoder written to {options.output}.")
    inputs = [options.images] + [p for p in (options.masks, options.teacher) if p]
    return JobResult(
        outputs={"OUTPUT": options.output},
        figures=_figures(result),
        inputs=inputs,
        device=device.type,
    )


def pretrain_settings(options: PretrainParams, seed: int, device: str) -> PretrainSettings:
    """The training settings of a job."""
    return PretrainSettings(
        backbone=options.backbone,
        mode=options.mode,
        epochs=options.epochs,
        batch_size=options.batch_size,
        lr=options.lr,
        weight_decay=options.weight_decay,
        mask_ratio=options.mask_ratio,
        patch=options.patch_size,
        norm_pix=options.norm_pix,
        temperature=options.temperature,
        distill_lambda=options.lambda_,
        augment=options.augment,
        chips_per_epoch=options.chips_per_epoch,
        seed=seed,
        device=device,
    )


def _teacher(options: PretrainParams, ctx: JobContext) -> Teacher | None:
    """The teacher of MODE distill (``None`` for mae); checks TEACHER and MASKS against MODE.

    Raises:
        InputError: TEACHER missing for distill, or given for mae.
    """
    if options.masks and options.mode != "distill":
        ctx.warn("MASKS are only used by MODE distill: they are ignored.")
    if options.mode != "distill":
        if options.teacher:
            raise InputError("TEACHER is only used by MODE distill: set MODE to distill.")
        return None
    if not options.teacher:
        raise InputError("Missing required parameter(s): TEACHER.")
    model, bands, norm = load_teacher(options.teacher, options.teacher_region or None)
    return Teacher(model, bands, norm)


def _pretrain_data(
    options: PretrainParams, teacher: Teacher | None, seed: int, ctx: JobContext
) -> PretrainData:
    """Read the images (and masks), cut chips and normalise them.

    Raises:
        InputError: unreadable images, a bad chip size, or bands that do not fit the teacher.
    """
    mapping = LabelMapping(
        landslide=parse_values(options.landslide_values, "LANDSLIDE_VALUES"),
        ignore=parse_values(options.ignore_values, "IGNORE_VALUES") or (),
        mask_color=parse_color(options.mask_color),
    )
    masks = options.masks if teacher is not None else None
    ctx.log(f"Reading the images in '{options.images}' ...")
    scenes = image_scenes(options.images, masks, options.dataset_type, mapping)
    bands = resolve_bands(options.bands, scenes[0].band_names)
    size = _job_chip_size(scenes, options.chip_size, options.patch_size)
    chips = make_chips(scenes, size, size)
    if teacher is None:
        norm = resolve_normalisation(options.normalisation, scenes, chips, bands, seed)
        unlabelled: list[Scene] = [UnlabelledScene(s) for s in scenes]
        dataset = ChipDataset(unlabelled, chips, bands, norm, size)
        return PretrainData(scenes, bands, size, chips, norm, dataset)
    if len(bands) != len(teacher.bands):
        raise InputError(
            f"The teacher takes {len(teacher.bands)} band(s) ({', '.join(teacher.bands)}) "
            f"but {len(bands)} are selected: set BANDS to {len(teacher.bands)} bands."
        )
    norm = teacher.normalisation
    dataset = ChipDataset(scenes, chips, bands, norm, size)
    return PretrainData(scenes, bands, size, chips, norm, dataset)


def _job_chip_size(scenes: Sequence[Scene], chip_size: int, patch: int) -> int:
    """CHIP_SIZE checked, and lowered to the largest image side (rounded up to 32).

    Raises:
        InputError: CHIP_SIZE is not a multiple of 32 and of PATCH_SIZE, or the lowered
            size is not a multiple of PATCH_SIZE.
    """
    size = choose_chip_size(scenes, chip_size, patch)
    largest = max(max(s.height, s.width) for s in scenes)
    size = min(size, -(-largest // 32) * 32)
    if size % patch:
        raise InputError(f"The images are small: PATCH_SIZE must divide {size}.")
    return size


def _summary(
    options: PretrainParams, settings: PretrainSettings, data: PretrainData, device: torch.device
) -> str:
    """The log line that says what is about to be trained."""
    detail = (
        f", mask ratio {settings.mask_ratio:g}, patch {settings.patch} px."
        if options.mode == "mae"
        else f", T {settings.temperature:g}, lambda {settings.distill_lambda:g}."
    )
    return (
        f"{len(data.scenes)} images, {len(data.chips)} chips of {data.size} px, bands "
        f"{', '.join(data.band_names)}; {options.mode} pre-training of {options.backbone} on "
        f"{device}: {settings.epochs} epochs, batch {settings.batch_size}, AdamW lr "
        f"{settings.lr:g}" + detail
    )


def _save(
    options: PretrainParams,
    settings: PretrainSettings,
    data: PretrainData,
    result: PretrainResult,
) -> None:
    """Write the encoder file with its provenance and metrics."""
    provenance = {
        "job": "pretrainencoder",
        "mode": options.mode,
        "images": options.images,
        "masks": (options.masks or "") if options.mode == "distill" else "",
        "teacher": options.teacher or "",
        "teacher_region": options.teacher_region or "",
        "chips": len(data.chips),
        "chip_size": data.size,
        "band_indices": [b + 1 for b in data.bands],
        "settings": asdict(settings),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    record = EncoderRecord(
        normalisation=data.normalisation,
        provenance=provenance,
        metrics={**result.metrics, "history": result.history},
        tile_size=data.size,
    )
    save_encoder(
        options.output, result.encoder, options.backbone, len(data.bands), data.band_names, record
    )


def _figures(result: PretrainResult) -> dict[str, Any]:
    """The job's figures: float metrics, the last epoch's losses and the epoch count."""
    figures: dict[str, Any] = {k: v for k, v in result.metrics.items() if isinstance(v, float)}
    if result.history:
        last = result.history[-1]
        figures.update({f"last_{k}": v for k, v in last.items() if k not in ("epoch", "seconds")})
    figures["epochs"] = len(result.history)
    return figures


# --------------------------------------------------------------------------- in memory


@dataclass(frozen=True)
class InMemoryImages:
    """How in-memory images are cut and normalised for pre-training.

    Attributes:
        in_channels: Bands of the images.
        chip_size: Chip side (multiple of 32); ``None``: the smallest image side
            rounded down to a multiple of 32, at most 256.
        normalisation: ``{"mean": [...], "std": [...]}`` applied to the images
            (pass the detector's input normalisation so that the features
            match), ``"fit"`` (``None``: per-band statistics of the images) or ``"none"``.
    """

    in_channels: int = 3
    chip_size: int | None = None
    normalisation: dict[str, Any] | str | None = None


def pretrain_encoder(
    images: Sequence[np.ndarray] | Dataset[Any],
    settings: PretrainSettings | None = None,
    layout: InMemoryImages | None = None,
    progress: Progress | None = None,
    log: Log | None = None,
) -> dict[str, torch.Tensor]:
    """MAE pre-training of an encoder on in-memory images (for benchmarks).

    Args:
        images: Arrays or tensors (C, H, W) (or (H, W, C)), or a map-style torch
            Dataset of images or ``(image, target)`` items (e.g. a detection dataset).
        settings: Backbone and training settings (``mode`` is ``mae``); default:
            :class:`PretrainSettings` on the automatic device (CUDA when available).
        layout: Bands, chip size and normalisation of the images.
        progress: Receives the fraction done.
        log: Receives per-epoch lines (silent when ``None``).

    Returns:
        The encoder's state dict: keys ``conv1.weight``, ``bn1.*``, ``layer1.*``
        ... (a torchvision ResNet body without ``fc``; the same keys as the smp
        encoder), CPU tensors.
    """
    from slidewise.engine.core.runtime import select_device

    if settings is None:
        settings = PretrainSettings(device=str(select_device("auto")))
    result = pretrain_in_memory(
        images,
        replace(settings, mode="mae"),
        layout or InMemoryImages(),
        log or (lambda _: None),
        progress,
    )
    return result.encoder


def pretrain_in_memory(
    images: Any,
    settings: PretrainSettings,
    layout: InMemoryImages,
    log: Log,
    progress: Progress | None,
) -> PretrainResult:
    """MAE pre-training on in-memory images; the result also records the chip size and
    normalisation used.

    Raises:
        InputError: no images, or a bad chip size or normalisation.
    """
    scenes = scenes_from_images(images, layout.in_channels)
    if not scenes:
        raise InputError("No images were given to pre-train on.")
    bands = list(range(layout.in_channels))
    size = choose_chip_size(scenes, layout.chip_size, settings.patch)
    chips = make_chips(scenes, size, size)
    norm = resolve_normalisation(layout.normalisation, scenes, chips, bands, settings.seed)
    unlabelled: list[Scene] = [UnlabelledScene(s) for s in scenes]
    dataset = ChipDataset(unlabelled, chips, bands, norm, size)
    result = train_mae(dataset, settings, log, progress)
    result.metrics["normalisation"] = norm
    result.metrics["chip_size"] = size
    return result
