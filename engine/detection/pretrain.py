"""Encoder pre-training on landslide imagery: masked autoencoding or distillation.

Two ways to give an encoder (an smp encoder, e.g. ``resnet18``) a better
start than random weights, without downloaded weights:

* ``mae``: self-supervised masked-autoencoder pre-training on unlabelled
  images of any band count, adapted to CNNs in the way of SparK (Tian et al.
  2023, "Designing BERT for convolutional networks"), simplified: each chip
  is cut into square patches (``PATCH_SIZE``, 16 px by default; 32 px is the
  encoder's output stride), a share ``MASK_RATIO`` (0.75) of them is drawn
  at random per chip and set to 0 in the normalised input (the band mean).
  SparK runs sparse convolutions so that masked patches never leak into the
  features; here the zeros pass through ordinary convolutions (the
  simplification). A light decoder (two 3x3 convolutions on the deepest
  features and a per-cell linear projection to the pixels of the
  stride-32 cell, like MAE's per-patch linear head) reconstructs the image;
  the loss is the mean squared error on the masked patches only, against the
  normalised pixels (per-band mean and standard deviation of the images).
  ``NORM_PIX`` switches to MAE's ``norm_pix_loss`` targets (each patch
  normalised to zero mean and unit variance), which in our short runs learnt
  far more slowly: on 20 Bijie images at 128 px, 8 epochs, the fixed-mask
  loss went from 1.007 to 0.999 with ``NORM_PIX`` (predicting zeros: 1.000)
  but from 1.016 to 0.830 without (predicting zeros: 1.010). Predicting
  zeros (the band means, or the patch means with ``NORM_PIX``) is the
  baseline: a loss below it means masked pixels are predicted from context.
* ``distill``: knowledge distillation from a trained teacher (a mapping model
  or one region of a multiregion model): a student U-Net with the chosen
  encoder learns the teacher's soft per-pixel outputs at temperature ``T``
  (5): ``LAMBDA * T^2 * KL(sigmoid(t/T) || sigmoid(s/T)) + (1 - LAMBDA) *
  Dice+BCE`` on labelled pixels (when MASKS are given; the hard term is
  absent on unlabelled images). The teacher's bands and normalisation are used.

The result is an encoder file (:mod:`slidewise.engine.core.modelfile`, task
``encoder``): the encoder's tensors with the key prefix ``encoder.``, and in
the metadata the backbone, the band count and names, the normalisation, and
the pre-training provenance. It initialises:

* mapping models: ``trainmapping`` ``ENCODER_WEIGHTS`` (and ``addregion``),
  through :func:`slidewise.engine.imagery.segmodels.load_encoder_weights` (strict);
* detection backbones: :func:`encoder_state_dict` with
  ``target="torchvision_resnet"`` gives the state dict of a torchvision ResNet
  body (``conv1``, ``bn1``, ``layer1``-``layer4``; no ``fc``), which loads
  strictly into ``torchvision.models.resnet18()`` without ``fc`` /
  ``IntermediateLayerGetter`` and into the body of a torchvision Faster R-CNN
  ResNet-FPN backbone (with ordinary or frozen batch norm).

smp's ResNet encoders are torchvision ResNets without ``avgpool`` and ``fc``,
so the keys are the same; only ResNets (resnet18/34/50/101/152) have a
torchvision target.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.utils.data import Dataset

from slidewise.engine.core.errors import InputError, ModelFileError
from slidewise.engine.core.job import JobContext, JobResult, check_known, choice, require
from slidewise.engine.core.modelfile import ModelMetadata, load_model, read_metadata, save_model
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.core.params import integer_param, is_set, number_param, to_bool
from slidewise.engine.imagery.augment import random_d4
from slidewise.engine.imagery.chips import (
    ChipDataset,
    fit_normalisation,
    l4s_normalisation,
    make_chips,
)
from slidewise.engine.imagery.datasets import (
    DATASET_TYPES,
    PAIR_SUFFIXES,
    DatasetSpec,
    load_scenes,
    resolve_bands,
)
from slidewise.engine.imagery.labels import IGNORE, LabelMapping, parse_color, parse_values
from slidewise.engine.imagery.losses import make_loss
from slidewise.engine.imagery.scenes import Chip, DecodeCache, PairScene, Scene
from slidewise.engine.imagery.training import chip_batches

MODES = ("mae", "distill")
#: Backbones whose encoder file also fits a torchvision ResNet body.
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
#: Key prefix of the encoder tensors in an encoder file.
KEY_PREFIX = "encoder."
TARGETS = ("smp", "torchvision_resnet")
#: Top-level modules of a torchvision ResNet body.
_RESNET_BODY = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
#: Decoder channels of the distillation student (thrown away after training).
STUDENT_DECODER = [128, 64, 32, 16, 8]
#: Chips measured before and after MAE training (fixed masks).
EVAL_CHIPS = 32

Log = Callable[[str], None]
ProgressFn = Callable[[float], None]


def _smp() -> Any:
    from slidewise.engine.imagery.tvcompat import ensure_torchvision_ops

    ensure_torchvision_ops()
    import segmentation_models_pytorch as smp

    return smp


def build_encoder(backbone: str = "resnet18", in_channels: int = 3) -> nn.Module:
    """An smp encoder (depth 5, random weights: nothing is downloaded).

    Raises:
        InputError: unknown backbone.
    """
    smp = _smp()
    try:
        return smp.encoders.get_encoder(backbone, in_channels=in_channels, depth=5, weights=None)
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(
            f"Unknown BACKBONE '{backbone}' ({str(exc).strip(chr(39))[:200]}): use an encoder "
            "of segmentation-models-pytorch, e.g. resnet18, resnet34 or resnet50."
        ) from None


# --------------------------------------------------------------------------- MAE parts


def random_patch_mask(
    batch: int,
    height: int,
    width: int,
    patch: int,
    ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random patch masks (B, 1, H, W), ``True`` = hidden.

    Exactly ``round(ratio * n)`` of the ``n`` patches of each sample are hidden
    (MAE's shuffle-and-keep sampling).

    Raises:
        ValueError: ``height`` or ``width`` not a multiple of ``patch``.
    """
    if height % patch or width % patch:
        raise ValueError(f"{height} x {width} is not a multiple of the patch size {patch}")
    gh, gw = height // patch, width // patch
    n = gh * gw
    k = round(ratio * n)
    noise = torch.rand(batch, n, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    hidden = (ranks < k).view(batch, 1, gh, gw)
    return hidden.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


def mae_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    valid: torch.Tensor,
    patch: int,
    norm_pix: bool = False,
) -> torch.Tensor:
    """Mean squared error on hidden, fully valid patches.

    Args:
        pred: Reconstruction (B, C, H, W).
        target: Normalised input (B, C, H, W).
        mask: Hidden pixels (B, 1, H, W), constant per patch.
        valid: Valid pixels (B, H, W) (not padding, not nodata).
        patch: Patch side.
        norm_pix: Normalise each target patch (all its pixels and bands) to
            zero mean and unit variance first (MAE).
    """
    p = F.unfold(pred.float(), patch, stride=patch).transpose(1, 2)  # (B, N, C*p*p)
    t = F.unfold(target.float(), patch, stride=patch).transpose(1, 2)
    if norm_pix:
        mean = t.mean(dim=-1, keepdim=True)
        var = t.var(dim=-1, keepdim=True, unbiased=False)
        t = (t - mean) / torch.sqrt(var + 1e-6)
    hidden = mask[:, :, ::patch, ::patch].flatten(1)
    whole = F.unfold(valid[:, None].float(), patch, stride=patch).min(dim=1).values > 0
    weight = (hidden & whole).float()
    per_patch = ((p - t) ** 2).mean(dim=-1)
    return (per_patch * weight).sum() / weight.sum().clamp_min(1.0)


class MaskedAutoencoder(nn.Module):
    """An encoder with a light reconstruction decoder (see the module doc).

    Args:
        encoder: smp encoder (returns features, deepest last).
        in_channels: Bands to reconstruct.
        hidden: Channels of the decoder's convolutions.
    """

    def __init__(self, encoder: nn.Module, in_channels: int, hidden: int = 256) -> None:
        super().__init__()
        self.encoder = encoder
        stride = int(getattr(encoder, "output_stride", 32))
        deepest = int(encoder.out_channels[-1])  # type: ignore[index]
        self.decoder = nn.Sequential(
            nn.Conv2d(deepest, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, in_channels * stride * stride, 1),
            nn.PixelShuffle(stride),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``x`` (B, C, H, W) from its visible patches (``mask`` True = hidden)."""
        features = self.encoder(x.masked_fill(mask, 0.0))
        return self.decoder(features[-1])


# --------------------------------------------------------------------------- data


class _AllValid(Scene):
    """A scene read without its labels: every pixel is 0, so that a
    :class:`~slidewise.engine.imagery.datasets.ChipDataset` marks only padding and
    nodata as :data:`~slidewise.engine.imagery.datasets.IGNORE` (the MAE's valid pixels)."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.name, self.height, self.width = scene.name, scene.height, scene.width
        self.band_names, self.group = scene.band_names, scene.group
        self.pixel_size = scene.pixel_size
        self.labelled = False

    def read_image(self, chip: Chip, bands: Sequence[int]) -> np.ndarray:
        return self.scene.read_image(chip, bands)

    def read_label(self, chip: Chip) -> np.ndarray:
        return np.zeros((chip.height, chip.width), np.uint8)


class ArrayScene(Scene):
    """An in-memory image (C, H, W) (or a loader of one) as an unlabelled scene.

    Args:
        image: The array, or a function returning it (read at every chip).
        shape: ``(C, H, W)`` when ``image`` is a function.
        name: Name for messages.
    """

    def __init__(
        self,
        image: np.ndarray | Callable[[], np.ndarray],
        shape: tuple[int, int, int] | None = None,
        name: str = "array",
    ) -> None:
        self.image = image
        if shape is None:
            assert isinstance(image, np.ndarray)
            shape = (int(image.shape[0]), int(image.shape[1]), int(image.shape[2]))
        count, self.height, self.width = shape
        self.name = name
        self.band_names = [f"band_{i + 1}" for i in range(count)]
        self.group = f"array:{name}"
        self.labelled = False

    def read_image(self, chip: Chip, bands: Sequence[int]) -> np.ndarray:
        a = self.image() if callable(self.image) else self.image
        win = a[list(bands), chip.row : chip.row + chip.height, chip.col : chip.col + chip.width]
        return np.asarray(win, dtype=np.float32)

    def read_label(self, chip: Chip) -> np.ndarray:
        return np.full((chip.height, chip.width), IGNORE, np.uint8)


def _chw(a: Any, in_channels: int, name: str) -> np.ndarray:
    """An image as (C, H, W) float32: tensors and arrays, (H, W, C) transposed."""
    if isinstance(a, (tuple, list)):
        a = a[0]  # (image, target) items of detection datasets
    if torch.is_tensor(a):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise InputError(f"The image {name} has shape {a.shape}: images are (C, H, W).")
    if a.shape[0] != in_channels and a.shape[-1] == in_channels:
        a = np.moveaxis(a, -1, 0)
    if a.shape[0] != in_channels:
        raise InputError(
            f"The image {name} has shape {a.shape} but in_channels is {in_channels}: give "
            f"(C, H, W) or (H, W, C) images with {in_channels} bands."
        )
    return a.astype(np.float32, copy=False)


def scenes_from_images(images: Any, in_channels: int) -> list[Scene]:
    """Scenes of a list of arrays/tensors or of a map-style torch ``Dataset``.

    Dataset items may be images or ``(image, target)`` pairs; each item is read
    once here for its size, and again when its chips are read.
    """
    if isinstance(images, Dataset) and not isinstance(images, (list, tuple)):
        n = len(images)  # type: ignore[arg-type]
        scenes: list[Scene] = []
        for i in range(n):
            a = _chw(images[i], in_channels, f"#{i}")
            shape = (int(a.shape[0]), int(a.shape[1]), int(a.shape[2]))

            def load(i: int = i) -> np.ndarray:
                return _chw(images[i], in_channels, f"#{i}")

            scenes.append(ArrayScene(load, shape, name=f"item_{i}"))
        return scenes
    return [
        ArrayScene(_chw(a, in_channels, f"#{i}"), name=f"image_{i}") for i, a in enumerate(images)
    ]


def detect_dataset_type(images: str | os.PathLike[str]) -> str:
    """``l4s_h5`` for .h5 files, ``geotiff`` for rasters, ``pairs`` for pictures.

    Raises:
        InputError: missing path or no image files.
    """
    p = Path(images)
    if not p.exists():
        raise InputError(f"The images '{p}' do not exist: check IMAGES.")
    if p.is_dir() and (p / "img").is_dir():
        return "l4s_h5"
    files = [p] if p.is_file() else [f for f in p.iterdir() if f.is_file()]
    suffixes = {f.suffix.lower() for f in files}
    if ".h5" in suffixes:
        return "l4s_h5"
    if suffixes & {".tif", ".tiff", ".vrt", ".img", ".jp2"}:
        return "geotiff"
    if suffixes & set(PAIR_SUFFIXES):
        return "pairs"
    raise InputError(f"'{p}' holds no images (.tif, .h5, .png, .jpg): choose a folder of images.")


def image_scenes(
    images: str | os.PathLike[str],
    masks: str | os.PathLike[str] | None = None,
    dataset_type: str = "auto",
    mapping: LabelMapping | None = None,
) -> list[Scene]:
    """Scenes of an image folder (or file), labelled when ``masks`` are given.

    Raises:
        InputError: unknown type, unreadable or mismatched files, different band counts.
    """
    kind = detect_dataset_type(images) if dataset_type in ("", "auto") else dataset_type
    mapping = mapping or LabelMapping()
    if masks or kind != "pairs":
        spec = DatasetSpec(kind, str(images), str(masks) if masks else None, None, mapping)
        return load_scenes(spec, "pre-training", require_labels=bool(masks))
    p = Path(images)
    files = (
        [p]
        if p.is_file()
        else sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in PAIR_SUFFIXES)
    )
    cache = DecodeCache(64)
    scenes: list[Scene] = [PairScene(f, None, mapping, cache) for f in files]
    counts = {len(s.band_names) for s in scenes}
    if len(counts) > 1:
        raise InputError(
            f"The images in '{p}' have different band counts ({sorted(counts)}): use images "
            "with the same bands."
        )
    return scenes


def _chip_size(scenes: Sequence[Scene], chip_size: int | None, patch: int) -> int:
    if chip_size is None:
        smallest = min(min(s.height, s.width) for s in scenes)
        chip_size = max(32, min(256, smallest // 32 * 32))
    size = int(chip_size)
    if size % 32 or size % patch:
        raise InputError(
            f"CHIP_SIZE ({size}) must be a multiple of 32 (the encoder's output stride) and "
            f"of PATCH_SIZE ({patch})."
        )
    return size


def _normalisation(
    value: str | dict[str, Any] | None,
    scenes: Sequence[Scene],
    chips: Sequence[Chip],
    bands: Sequence[int],
    seed: int,
) -> dict[str, Any]:
    if isinstance(value, dict):
        if len(value.get("mean", [])) != len(bands) or len(value.get("std", [])) != len(bands):
            raise InputError(
                f"The normalisation needs {len(bands)} mean and std values (one per band)."
            )
        return dict(value)
    kind = (value or "fit").strip().lower()
    if kind == "fit":
        return fit_normalisation(scenes, chips, bands, seed=seed)
    if kind == "l4s":
        return l4s_normalisation(bands, len(scenes[0].band_names))
    if kind == "none":
        return {}
    raise InputError(f"Unknown NORMALISATION '{value}': use fit, l4s or none.")


# --------------------------------------------------------------------------- training


@dataclass
class PretrainSettings:
    """Pre-training settings.

    Attributes:
        backbone: smp encoder name.
        mode: ``mae`` or ``distill``.
        epochs: Epochs.
        batch_size: Chips per batch.
        lr: Peak AdamW learning rate (cosine decay over all steps).
        weight_decay: AdamW weight decay.
        mask_ratio: Share of hidden patches (MAE).
        patch: Patch side in pixels (MAE).
        norm_pix: Per-patch normalised targets (MAE's ``norm_pix_loss``).
        temperature: Distillation temperature.
        distill_lambda: Weight of the distillation term (the rest: the hard loss).
        augment: Random D4 flips and rotations.
        chips_per_epoch: Chips drawn per epoch (0 = all).
        seed: Seed of weights, sampling, masks and augmentation.
        device: Torch device.
    """

    backbone: str = "resnet18"
    mode: str = "mae"
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    mask_ratio: float = 0.75
    patch: int = 16
    norm_pix: bool = False
    temperature: float = 5.0
    distill_lambda: float = 0.9
    augment: bool = True
    chips_per_epoch: int = 0
    seed: int = 0
    device: str = "cpu"


@dataclass
class PretrainResult:
    """What pre-training returns.

    Attributes:
        encoder: The encoder's state dict (CPU tensors, smp/torchvision keys, no prefix).
        history: Per-epoch records (mean losses, seconds).
        metrics: Summary figures (MAE: fixed-mask loss before and after, and the
            loss of predicting zeros).
    """

    encoder: dict[str, torch.Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


BatchLoss = Callable[
    [torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, dict[str, float]]
]


def _fit(
    model: nn.Module,
    dataset: ChipDataset,
    settings: PretrainSettings,
    batch_loss: BatchLoss,
    log: Log,
    progress: ProgressFn | None,
    generator: torch.Generator,
) -> list[dict[str, Any]]:
    """The shared loop: AdamW, cosine decay per step, D4 augmentation."""
    device = torch.device(settings.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    n = len(dataset)
    n_draw = settings.chips_per_epoch or n
    steps = max(1, settings.epochs * math.ceil(n_draw / settings.batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=steps, eta_min=settings.lr * 0.01
    )
    history: list[dict[str, Any]] = []
    done = 0
    for epoch in range(settings.epochs):
        t0 = time.time()
        model.train()
        perm = torch.randperm(n, generator=generator)
        if n_draw > n:
            perm = torch.cat([perm, torch.randint(n, (n_draw - n,), generator=generator)])
        order = perm[:n_draw].tolist()
        sums: dict[str, float] = {}
        seen = 0
        for images, labels in chip_batches(dataset, order, settings.batch_size, drop_single=True):
            if settings.augment:
                images, labels = random_d4(images, labels, generator)
            loss, parts = batch_loss(images.to(device), labels.to(device), generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v * len(images)
            seen += len(images)
            done += 1
            if progress is not None:
                progress(min(1.0, done / steps))
        record = {"epoch": epoch + 1, **{k: v / max(seen, 1) for k, v in sums.items()}}
        record["seconds"] = round(time.time() - t0, 2)
        history.append(record)
        parts_text = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in ("epoch",))
        log(f"epoch {epoch + 1}/{settings.epochs}: {parts_text}")
    model.eval()
    return history


def mae_eval_loss(
    model: MaskedAutoencoder,
    dataset: ChipDataset,
    settings: PretrainSettings,
    count: int = EVAL_CHIPS,
    seed: int = 12345,
    zeros: bool = False,
) -> float:
    """MAE loss on the first ``count`` chips with fixed masks (eval mode, no augmentation).

    With ``zeros`` the loss of predicting 0 everywhere (the per-patch mean
    under ``norm_pix``) is returned: the baseline that learning must beat.
    """
    device = torch.device(settings.device)
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    total, weight = 0.0, 0
    with torch.no_grad():
        limit = min(count, len(dataset))
        for images, labels in chip_batches(dataset, range(limit), settings.batch_size):
            x = images.to(device)
            valid = labels.to(device) != IGNORE
            mask = random_patch_mask(
                len(x), x.shape[2], x.shape[3], settings.patch, settings.mask_ratio, generator
            ).to(device)
            pred = torch.zeros_like(x) if zeros else model(x, mask)
            loss = mae_loss(pred, x, mask, valid, settings.patch, settings.norm_pix)
            total += float(loss) * len(x)
            weight += len(x)
    return total / max(weight, 1)


def train_mae(
    dataset: ChipDataset,
    settings: PretrainSettings,
    log: Log = print,
    progress: ProgressFn | None = None,
) -> PretrainResult:
    """Masked-autoencoder pre-training of ``settings.backbone`` on ``dataset``.

    Args:
        dataset: Normalised chips whose labels mark padding and nodata as
            IGNORE (every other label value counts as a valid pixel).
        settings: Settings.
        log: Receives per-epoch lines.
        progress: Receives the fraction done.
    """
    from slidewise.engine.core.runtime import seed_everything

    if not 0.0 < settings.mask_ratio < 1.0:
        raise InputError(f"MASK_RATIO must be between 0 and 1, got {settings.mask_ratio}.")
    seed_everything(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    device = torch.device(settings.device)
    channels = len(dataset.bands)
    model = MaskedAutoencoder(build_encoder(settings.backbone, channels), channels).to(device)
    before = mae_eval_loss(model, dataset, settings)
    baseline = mae_eval_loss(model, dataset, settings, zeros=True)
    log(
        f"MAE loss on {min(EVAL_CHIPS, len(dataset))} chips with fixed masks before training: "
        f"{before:.4f} (predicting zeros: {baseline:.4f})."
    )

    def batch_loss(
        x: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        mask = random_patch_mask(
            x.shape[0], x.shape[2], x.shape[3], settings.patch, settings.mask_ratio, gen
        ).to(x.device)
        pred = model(x, mask)
        return mae_loss(pred, x, mask, labels != IGNORE, settings.patch, settings.norm_pix), {}

    history = _fit(model, dataset, settings, batch_loss, log, progress, generator)
    after = mae_eval_loss(model, dataset, settings)
    log(f"MAE loss with the same fixed masks after training: {after:.4f} (before {before:.4f}).")
    encoder = {k: v.detach().cpu().clone() for k, v in model.encoder.state_dict().items()}
    return PretrainResult(
        encoder,
        history,
        {"eval_loss_before": before, "eval_loss_after": after, "zeros_loss": baseline},
    )


def train_distill(
    dataset: ChipDataset,
    teacher: nn.Module,
    settings: PretrainSettings,
    log: Log = print,
    progress: ProgressFn | None = None,
) -> PretrainResult:
    """Distil a teacher's per-pixel landslide outputs into a student with ``settings.backbone``.

    Args:
        dataset: Chips normalised as the teacher expects; labels 0/1 add the
            hard loss, IGNORE pixels only get the distillation term.
        teacher: A model returning one logit per pixel (B, 1, H, W).
        settings: Settings (``temperature``, ``distill_lambda``).
        log: Receives per-epoch lines.
        progress: Receives the fraction done.
    """
    from slidewise.engine.core.runtime import seed_everything
    from slidewise.engine.imagery.regions import distillation_loss
    from slidewise.engine.imagery.segmodels import SegModelConfig, build_model, main_logits

    seed_everything(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    device = torch.device(settings.device)
    student = build_model(
        SegModelConfig(
            "unet",
            settings.backbone,
            in_channels=len(dataset.bands),
            extra={"decoder_channels": STUDENT_DECODER},
        )
    ).to(device)
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    hard = make_loss("dice_bce")
    lam, temp = float(settings.distill_lambda), float(settings.temperature)

    def batch_loss(
        x: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            target = main_logits(teacher(x)).float()
        logits = main_logits(student(x)).float()
        kd = distillation_loss(logits, target, temp)
        valid = labels != IGNORE
        if bool(valid.any()):
            h = hard(logits, (labels == 1).float(), valid)
            return lam * kd + (1.0 - lam) * h, {"distill": float(kd), "hard": float(h)}
        return lam * kd, {"distill": float(kd)}

    history = _fit(student, dataset, settings, batch_loss, log, progress, generator)
    agreement = _agreement(student, teacher, dataset, settings)
    log(f"Student-teacher agreement (pixels on the same side of 0.5): {agreement:.3f}.")
    encoder = {k: v.detach().cpu().clone() for k, v in student.encoder.state_dict().items()}
    return PretrainResult(encoder, history, {"agreement": agreement})


def _agreement(
    student: nn.Module, teacher: nn.Module, dataset: ChipDataset, settings: PretrainSettings
) -> float:
    """Share of pixels that student and teacher put on the same side of 0.5."""
    from slidewise.engine.imagery.segmodels import main_logits

    device = torch.device(settings.device)
    same, total = 0, 0
    with torch.no_grad():
        for start in range(0, min(EVAL_CHIPS, len(dataset)), settings.batch_size):
            stop = min(EVAL_CHIPS, len(dataset), start + settings.batch_size)
            x = torch.stack([dataset[i][0] for i in range(start, stop)]).to(device)
            s = main_logits(student(x)) > 0
            t = main_logits(teacher(x)) > 0
            same += int((s == t).sum())
            total += s.numel()
    return same / max(total, 1)


def pretrain_encoder(
    images: Sequence[np.ndarray] | Dataset[Any],
    backbone: str = "resnet18",
    in_channels: int = 3,
    epochs: int = 20,
    mask_ratio: float = 0.75,
    patch: int = 16,
    seed: int = 0,
    progress: ProgressFn | None = None,
    *,
    chip_size: int | None = None,
    batch_size: int = 16,
    lr: float = 1e-3,
    normalisation: dict[str, Any] | str | None = None,
    chips_per_epoch: int = 0,
    device: str | torch.device | None = None,
    log: Log | None = None,
) -> dict[str, torch.Tensor]:
    """MAE pre-training of an encoder on in-memory images (for benchmarks).

    Args:
        images: Arrays or tensors (C, H, W) (or (H, W, C)), or a map-style torch
            Dataset of images or ``(image, target)`` items (e.g. a detection dataset).
        backbone: smp encoder name (``resnet18`` ... also fits torchvision ResNets).
        in_channels: Bands of the images.
        epochs: Epochs.
        mask_ratio: Share of hidden patches.
        patch: Patch side (a divisor of ``chip_size``).
        seed: Seed.
        progress: Receives the fraction done.
        chip_size: Chip side (multiple of 32); default: the smallest image side
            rounded down to a multiple of 32, at most 256.
        batch_size: Chips per batch.
        lr: Peak AdamW learning rate.
        normalisation: ``{"mean": [...], "std": [...]}`` applied to the images
            (pass the detector's input normalisation so that the features
            match), ``"fit"`` (default: per-band statistics of the images) or ``"none"``.
        chips_per_epoch: Chips per epoch (0 = all).
        device: Torch device (default: CUDA when available, else CPU).
        log: Receives per-epoch lines (silent when ``None``).

    Returns:
        The encoder's state dict: keys ``conv1.weight``, ``bn1.*``, ``layer1.*``
        ... (a torchvision ResNet body without ``fc``; the same keys as the smp
        encoder), CPU tensors.
    """
    from slidewise.engine.core.runtime import select_device

    result = _pretrain_in_memory(
        images,
        PretrainSettings(
            backbone=backbone,
            mode="mae",
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            mask_ratio=mask_ratio,
            patch=patch,
            chips_per_epoch=chips_per_epoch,
            seed=seed,
            device=str(device or select_device("auto")),
        ),
        in_channels,
        chip_size,
        normalisation,
        log or (lambda _: None),
        progress,
    )
    return result.encoder


def _pretrain_in_memory(
    images: Any,
    settings: PretrainSettings,
    in_channels: int,
    chip_size: int | None,
    normalisation: dict[str, Any] | str | None,
    log: Log,
    progress: ProgressFn | None,
) -> PretrainResult:
    scenes = scenes_from_images(images, in_channels)
    if not scenes:
        raise InputError("No images were given to pre-train on.")
    bands = list(range(in_channels))
    size = _chip_size(scenes, chip_size, settings.patch)
    chips = make_chips(scenes, size, size)
    norm = _normalisation(normalisation, scenes, chips, bands, settings.seed)
    dataset = ChipDataset([_AllValid(s) for s in scenes], chips, bands, norm, size)
    result = train_mae(dataset, settings, log, progress)
    result.metrics["normalisation"] = norm
    result.metrics["chip_size"] = size
    return result


# --------------------------------------------------------------------------- encoder files


def save_encoder(
    path: str | os.PathLike[str],
    encoder: dict[str, torch.Tensor],
    backbone: str,
    in_channels: int,
    bands: Sequence[str] = (),
    normalisation: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    tile_size: int | None = None,
) -> Path:
    """Write an encoder file (task ``encoder``; tensors ``encoder.<key>``)."""
    meta = ModelMetadata(
        task="encoder",
        architecture=backbone,
        config={
            "backbone": backbone,
            "in_channels": int(in_channels),
            "key_prefix": KEY_PREFIX,
            "layout": "segmentation-models-pytorch encoder",
            "targets": ["smp", "torchvision_resnet"]
            if backbone in TORCHVISION_RESNETS
            else ["smp"],
        },
        bands=list(bands) or [f"band_{i + 1}" for i in range(in_channels)],
        normalisation=dict(normalisation or {}),
        tile_size=tile_size,
        class_names=[],
        provenance=dict(provenance or {}),
        metrics=dict(metrics or {}),
    )
    return save_model(path, {KEY_PREFIX + k: v for k, v in encoder.items()}, meta)


def encoder_state_dict(
    path: str | os.PathLike[str], target: str = "smp"
) -> dict[str, torch.Tensor]:
    """The encoder tensors of a file, keyed for ``target``, to load with ``strict=True``.

    Args:
        path: An encoder file (``pretrainencoder``), or a mapping / multiregion
            model with an smp encoder (its encoder is taken).
        target: ``smp`` (an smp model's ``encoder`` module) or
            ``torchvision_resnet`` (a torchvision ResNet without ``fc``, e.g.
            ``IntermediateLayerGetter`` / the ``body`` of a Faster R-CNN
            ResNet-FPN backbone; frozen batch norm drops ``num_batches_tracked``
            itself).

    Returns:
        Key -> tensor (CPU).

    Raises:
        ModelFileError: not an encoder, mapping or multiregion model file.
        InputError: unknown target, or a backbone that is not a ResNet for
            ``torchvision_resnet``.
    """
    if target not in TARGETS:
        raise InputError(f"Unknown target '{target}': use one of {', '.join(TARGETS)}.")
    tensors, meta = load_model(path, task=("encoder", "mapping", "multiregion"))
    config = meta.config or {}
    if meta.task == "encoder":
        prefix = str(config.get("key_prefix", KEY_PREFIX))
        backbone = str(config.get("backbone", meta.architecture))
    else:
        if str(config.get("architecture", "")).lower() == "resunet":
            raise InputError(
                f"The model '{Path(path).name}' is a resunet model, which has no smp encoder."
            )
        prefix, backbone = KEY_PREFIX, str(config.get("encoder", ""))
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not state:
        raise ModelFileError(f"The file '{Path(path).name}' holds no '{prefix}*' tensors.")
    if target == "torchvision_resnet":
        if backbone not in TORCHVISION_RESNETS:
            raise InputError(
                f"The encoder in '{Path(path).name}' is {backbone}, not a ResNet: only "
                f"{', '.join(TORCHVISION_RESNETS)} encoders fit a torchvision ResNet backbone."
            )
        odd = [k for k in state if not k.startswith(_RESNET_BODY)]
        if odd:
            raise ModelFileError(
                f"The encoder in '{Path(path).name}' has keys a torchvision ResNet body does "
                f"not have ({', '.join(odd[:3])})."
            )
    return state


# --------------------------------------------------------------------------- teachers


def load_teacher(
    path: str | os.PathLike[str], region: str | None = None
) -> tuple[nn.Module, list[str], dict[str, Any]]:
    """A teacher model (mapping, or one region of a multiregion model).

    Returns:
        ``(model, band names, normalisation)``.

    Raises:
        ModelFileError: another task.
        InputError: a multiregion teacher without a valid region.
    """
    meta = read_metadata(path)
    if meta.task == "mapping":
        from slidewise.engine.imagery.segmodels import load_mapping_model

        model, meta = load_mapping_model(path)
        return model, list(meta.bands), dict(meta.normalisation or {})
    if meta.task == "multiregion":
        from slidewise.engine.imagery.regions import load_multiregion

        multi, _ = load_multiregion(path)
        if not region:
            if len(multi.regions) != 1:
                raise InputError(
                    f"The teacher has regions {', '.join(multi.regions)}: set TEACHER_REGION "
                    "to the region whose decoder teaches."
                )
            region = multi.regions[0]
        record = multi.record(region)
        return (
            multi.view(region),
            list(record.get("bands", [])),
            dict(record.get("normalisation") or {}),
        )
    raise ModelFileError(
        f"The teacher '{Path(path).name}' holds a {meta.task} model: the teacher must be a "
        "mapping model or a multiregion model (per-pixel landslide outputs)."
    )


# --------------------------------------------------------------------------- the job

KNOWN_PARAMS = {
    "IMAGES",
    "MASKS",
    "DATASET_TYPE",
    "LANDSLIDE_VALUES",
    "IGNORE_VALUES",
    "MASK_COLOR",
    "BANDS",
    "NORMALISATION",
    "BACKBONE",
    "MODE",
    "TEACHER",
    "TEACHER_REGION",
    "EPOCHS",
    "BATCH_SIZE",
    "LR",
    "WEIGHT_DECAY",
    "MASK_RATIO",
    "PATCH_SIZE",
    "NORM_PIX",
    "CHIP_SIZE",
    "CHIPS_PER_EPOCH",
    "TEMPERATURE",
    "LAMBDA",
    "AUGMENT",
    "SEED",
    "OUTPUT",
}


def run_pretrain(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Pre-train an encoder on landslide imagery and write an encoder file to OUTPUT.

    Parameters (an empty value means the default):

    * IMAGES (folder or file, required): images to pre-train on: PNG/JPEG
      pictures, GeoTIFFs (any band count) or Landslide4Sense image_N.h5 files.
      Labels are not needed.
    * MASKS (folder or file, optional, MODE distill): masks of the same names
      (as in trainmapping); their labelled pixels add the hard loss.
    * DATASET_TYPE (str, "auto"): "auto" (from the file types), "pairs",
      "l4s_h5" or "geotiff".
    * LANDSLIDE_VALUES, IGNORE_VALUES, MASK_COLOR (str, auto): how MASKS read,
      as in trainmapping.
    * BANDS (str, all): bands to use (1-based numbers or names). MODE distill:
      the teacher's band count.
    * NORMALISATION (str, "fit"): "fit" (per-band mean/std of the images),
      "l4s" (the Landslide4Sense constants) or "none"; stored in the file.
      MODE distill always uses the teacher's normalisation.
    * BACKBONE (str, "resnet18"): smp encoder (resnet18/34/50/101/152 also fit
      torchvision ResNet detection backbones).
    * MODE (str, "mae"): "mae" (masked autoencoder) or "distill" (from TEACHER).
    * TEACHER (model file, MODE distill): a mapping model, or a multiregion model.
    * TEACHER_REGION (str): the teaching region of a multiregion TEACHER.
    * EPOCHS (int, 20): epochs.
    * BATCH_SIZE (int, 16): chips per batch.
    * LR (float, 1e-3): peak AdamW learning rate (cosine decay).
    * WEIGHT_DECAY (float, 0.05): AdamW weight decay.
    * MASK_RATIO (float, 0.75): share of hidden patches (MAE).
    * PATCH_SIZE (int, 16): side of the hidden patches in pixels (MAE); a
      divisor of CHIP_SIZE, e.g. 16 or 32.
    * NORM_PIX (bool, false): per-patch normalised reconstruction targets
      (MAE's norm_pix_loss) instead of the normalised pixels.
    * CHIP_SIZE (int, 128): chip side (a multiple of 32 and of PATCH_SIZE);
      smaller images are padded (padding does not count).
    * CHIPS_PER_EPOCH (int, 0): chips drawn per epoch (0 = all).
    * TEMPERATURE (float, 5): distillation temperature.
    * LAMBDA (float, 0.9): weight of the distillation term; 1 - LAMBDA weighs
      the hard Dice+BCE loss on labelled pixels.
    * AUGMENT (bool, true): random D4 flips and rotations.
    * SEED (int, runtime seed): seed of weights, sampling, masks, augmentation.
    * OUTPUT (file, required): the encoder file (.safetensors; task "encoder").

    Returns:
        OUTPUT = the encoder file; figures: MAE loss with fixed masks before and
        after training and the zeros baseline (mae), or the student-teacher
        agreement (distill), and the last epoch's losses.
    """

    from slidewise.engine.core.runtime import apply, select_device

    check_known(params, KNOWN_PARAMS)
    require(params, "IMAGES", "OUTPUT")
    check_writable(params["OUTPUT"])
    mode = choice(params, "MODE", MODES, "mae")
    seed = integer_param(params, "SEED", ctx.options.seed, 0, 2**31 - 1)
    apply(replace(ctx.options, seed=seed))
    device = select_device(ctx.options.device)
    dataset_type = choice(params, "DATASET_TYPE", ("auto", *DATASET_TYPES), "auto")
    backbone = str(params.get("BACKBONE") or "resnet18").strip()
    patch = integer_param(params, "PATCH_SIZE", 16, 4, 512)
    settings = PretrainSettings(
        backbone=backbone,
        mode=mode,
        epochs=integer_param(params, "EPOCHS", 20, 1, 100000),
        batch_size=integer_param(params, "BATCH_SIZE", 16, 1, 4096),
        lr=number_param(params, "LR", 1e-3, 1e-7, 1.0),
        weight_decay=number_param(params, "WEIGHT_DECAY", 0.05, 0.0, 1.0),
        mask_ratio=number_param(params, "MASK_RATIO", 0.75, 0.05, 0.95),
        patch=patch,
        norm_pix=to_bool(params.get("NORM_PIX", False), "NORM_PIX"),
        temperature=number_param(params, "TEMPERATURE", 5.0, 0.05, 100.0),
        distill_lambda=number_param(params, "LAMBDA", 0.9, 0.0, 1.0),
        augment=to_bool(params.get("AUGMENT", True), "AUGMENT"),
        chips_per_epoch=integer_param(params, "CHIPS_PER_EPOCH", 0, 0, 10**9),
        seed=seed,
        device=str(device),
    )
    build_encoder(backbone)  # fail early on a bad backbone
    if is_set(params, "MASKS") and mode != "distill":
        ctx.warn("MASKS are only used by MODE distill: they are ignored.")
    teacher = None
    if mode == "distill":
        require(params, "TEACHER")
        teacher, teacher_bands, teacher_norm = load_teacher(
            str(params["TEACHER"]), str(params.get("TEACHER_REGION") or "").strip() or None
        )
    elif is_set(params, "TEACHER"):
        raise InputError("TEACHER is only used by MODE distill: set MODE to distill.")

    mapping = LabelMapping(
        landslide=parse_values(params.get("LANDSLIDE_VALUES"), "LANDSLIDE_VALUES"),
        ignore=parse_values(params.get("IGNORE_VALUES"), "IGNORE_VALUES") or (),
        mask_color=parse_color(params.get("MASK_COLOR")),
    )
    masks = str(params["MASKS"]) if is_set(params, "MASKS") and mode == "distill" else None
    ctx.log(f"Reading the images in '{params['IMAGES']}' ...")
    scenes = image_scenes(str(params["IMAGES"]), masks, dataset_type, mapping)
    names = scenes[0].band_names
    bands = resolve_bands(params.get("BANDS"), names)
    size = _chip_size(scenes, integer_param(params, "CHIP_SIZE", 128, 32, 8192), patch)
    largest = max(max(s.height, s.width) for s in scenes)
    size = min(size, -(-largest // 32) * 32)
    if size % patch:
        raise InputError(f"The images are small: PATCH_SIZE must divide {size}.")
    chips = make_chips(scenes, size, size)
    if teacher is not None:
        if len(bands) != len(teacher_bands):
            raise InputError(
                f"The teacher takes {len(teacher_bands)} band(s) ({', '.join(teacher_bands)}) "
                f"but {len(bands)} are selected: set BANDS to {len(teacher_bands)} bands."
            )
        norm = teacher_norm
        dataset = ChipDataset(scenes, chips, bands, norm, size)
    else:
        norm_kind = choice(params, "NORMALISATION", ("fit", "l4s", "none"), "fit")
        norm = _normalisation(norm_kind, scenes, chips, bands, seed)
        dataset = ChipDataset([_AllValid(s) for s in scenes], chips, bands, norm, size)
    ctx.log(
        f"{len(scenes)} images, {len(chips)} chips of {size} px, bands "
        f"{', '.join(names[b] for b in bands)}; {mode} pre-training of {backbone} on {device}: "
        f"{settings.epochs} epochs, batch {settings.batch_size}, AdamW lr {settings.lr:g}"
        + (
            f", mask ratio {settings.mask_ratio:g}, patch {patch} px."
            if mode == "mae"
            else f", T {settings.temperature:g}, lambda {settings.distill_lambda:g}."
        )
    )
    if mode == "mae":
        result = train_mae(dataset, settings, ctx.log, ctx.stage(2, 97))
    else:
        assert teacher is not None
        result = train_distill(dataset, teacher, settings, ctx.log, ctx.stage(2, 97))
    provenance = {
        "job": "pretrainencoder",
        "mode": mode,
        "images": str(params["IMAGES"]),
        "masks": masks or "",
        "teacher": str(params.get("TEACHER") or ""),
        "teacher_region": str(params.get("TEACHER_REGION") or ""),
        "chips": len(chips),
        "chip_size": size,
        "band_indices": [b + 1 for b in bands],
        "settings": asdict(settings),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    save_encoder(
        params["OUTPUT"],
        result.encoder,
        backbone,
        len(bands),
        [names[b] for b in bands],
        norm,
        provenance,
        {**result.metrics, "history": result.history},
        tile_size=size,
    )
    ctx.log(f"Encoder written to {params['OUTPUT']}.")
    figures: dict[str, Any] = {k: v for k, v in result.metrics.items() if isinstance(v, float)}
    if result.history:
        last = result.history[-1]
        figures.update({f"last_{k}": v for k, v in last.items() if k not in ("epoch", "seconds")})
    figures["epochs"] = len(result.history)
    inputs = [str(params["IMAGES"])] + [
        str(params[k]) for k in ("MASKS", "TEACHER") if is_set(params, k)
    ]
    return JobResult(
        outputs={"OUTPUT": str(params["OUTPUT"])},
        figures=figures,
        inputs=inputs,
        device=device.type,
    )
