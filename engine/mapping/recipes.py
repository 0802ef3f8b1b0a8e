"""Training recipes of the mapping jobs and the settings resolved from them.

Training recipes (:data:`RECIPES`) bundle defaults; every parameter given
overrides its recipe value:

* ``l4s_baseline``: the Landslide4Sense baseline recipe: plain U-Net (the
  classic double-convolution U-Net, ``resunet`` without residual blocks or deep
  supervision, widths 16-256 instead of the classic 64-1024 to suit CPUs),
  cross-entropy (BCE on one logit), no augmentation, no imbalance handling,
  Adam with learning rate 1e-3 and weight decay 5e-4, threshold 0.5. Unlike
  the baseline script, which picks checkpoints on its training list, the epoch
  is selected on the validation split.
* ``default``: the baseline's small plain U-Net and BCE with what makes a
  model carry to new images: D4 and photometric augmentation (brightness,
  contrast, colour balance, blur, noise), the epoch selected on the
  validation loss with early stopping, probabilities calibrated by Platt
  scaling on the validation pixels (folded into the output layer), the
  threshold tuned on them and shrunk toward 0.5 by the number of validation
  chips. The earlier default (U-Net with a ResNet-18 encoder, Dice + BCE with
  a positive-class weight, landslide oversampling, AdamW cosine, F1-selected
  epoch and threshold) did not separate landslides at all on another region
  with a CPU budget (issue 16; ``docs/benchmarks.md``, "Mapping across
  regions"); ``ARCHITECTURE=unet``, ``LOSS=dice_bce`` and friends restore it.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from slidewise.contract.spec import Param, ParameterError
from slidewise.engine.core.errors import InputError
from slidewise.engine.imagery.segmodels import SegModelConfig

SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "adamw")
#: A probability threshold given as a number.
THRESHOLD_PARAM = Param("THRESHOLD", "Threshold", "float", "", minimum=0.0, maximum=1.0)


@dataclass(frozen=True)
class Recipe:
    """A named set of training defaults.

    Attributes:
        name: Recipe name.
        architecture: smp architecture or ``resunet``.
        encoder: smp encoder.
        encoder_depth: smp encoder depth.
        model_extra: Extra model options (smp keyword arguments or resunet options).
        loss: Loss name (:data:`slidewise.engine.imagery.losses.LOSSES`).
        augment: D4 augmentation.
        pos_weight: ``auto`` (sqrt of the background/landslide ratio, 1..10),
            ``none``, or a number.
        oversample: Target share of training chips with landslides drawn per
            epoch (0 = plain shuffling).
        optimizer: ``adam`` (L2 weight decay) or ``adamw`` (decoupled).
        lr: Learning rate.
        weight_decay: Weight decay.
        schedule: ``constant`` or ``cosine`` (per epoch, to 5 % of ``lr``).
        threshold: ``auto`` (tuned on validation) or a probability.
        epochs: Epochs.
        batch_size: Chips per batch.
        patience: Early-stopping patience in epochs (0 = off).
        photometric: Photometric augmentation (brightness, contrast, colour
            balance, blur, noise; :func:`slidewise.engine.imagery.augment.random_photometric`).
        calibrate: Fit Platt scaling on the validation pixels after training and
            fold it into the model (:mod:`slidewise.engine.mapping.calibration`).
        select_on_loss: Rank epochs by the validation loss (smooth, every pixel
            counts) instead of the landslide metric at a tuned threshold.
    """

    name: str
    architecture: str = "unet"
    encoder: str = "resnet18"
    encoder_depth: int = 5
    model_extra: dict[str, Any] = field(default_factory=dict)
    loss: str = "dice_bce"
    augment: bool = True
    pos_weight: str = "auto"
    oversample: float = 0.5
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    threshold: str = "auto"
    epochs: int = 30
    batch_size: int = 8
    patience: int = 10
    photometric: bool = False
    calibrate: bool = False
    select_on_loss: bool = False


#: The Landslide4Sense baseline: a small plain U-Net, BCE, no augmentation, threshold 0.5.
L4S_BASELINE = Recipe(
    name="l4s_baseline",
    architecture="resunet",
    encoder="",
    model_extra={
        "widths": [16, 32, 64, 128, 256],
        "residual": False,
        "deep_supervision": False,
    },
    loss="bce",
    augment=False,
    pos_weight="none",
    oversample=0.0,
    optimizer="adam",
    lr=1e-3,
    weight_decay=5e-4,
    schedule="constant",
    threshold="0.5",
    patience=0,
)

RECIPES: dict[str, Recipe] = {
    "l4s_baseline": L4S_BASELINE,
    # The baseline's network made robust across regions (issue 16): per-tile input
    # standardisation, D4 and photometric augmentation, selection on the validation
    # loss, calibration, a threshold tuned for calibrated probabilities.
    "default": replace(
        L4S_BASELINE,
        name="default",
        # Each tile standardised by its own band statistics: a model trained on one
        # sensor's brightness and contrast maps another's (Sichuan -> Bijie F1 0.07 -> 0.50).
        model_extra={**L4S_BASELINE.model_extra, "input_norm": "tile"},
        augment=True,
        photometric=True,
        calibrate=True,
        select_on_loss=True,
        threshold=Recipe.threshold,
        patience=Recipe.patience,
    ),
}


@dataclass
class TrainSettings:
    """Resolved training settings (recipe values overridden by parameters)."""

    recipe: Recipe
    model: SegModelConfig
    encoder_weights: str | None = None
    epochs: int = 30
    batch_size: int = 8
    chips_per_epoch: int = 0
    patience: int = 10
    select_metric: str = "f1"
    threshold: str = "auto"
    checkpoint: str | None = None
    resume: bool = False
    seed: int = 0
    device: str = "cpu"
    amp: bool = True


def threshold_setting(value: Any) -> str:
    """``auto`` or a probability in [0, 1], as lower-case text.

    Raises:
        InputError: neither ``auto`` nor a number in [0, 1].
    """
    text = str(value).strip().lower()
    if text != "auto":
        try:
            THRESHOLD_PARAM.read(text)
        except ParameterError as exc:
            raise InputError(str(exc)) from None
    return text


def parse_streams(value: Any, n_bands: int) -> list[list[int]] | None:
    """``"1,2,3;4,5,6"`` (1-based positions among the selected bands) -> 0-based lists."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str) and value.strip().startswith("["):
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(value)  # a JSON list of groups, from a job file
    groups = value if isinstance(value, list) else str(value).split(";")
    out = []
    for g in groups:
        items = g if isinstance(g, list) else [v for v in str(g).replace(" ", "").split(",") if v]
        try:
            idx = [int(v) - 1 for v in items]
        except ValueError:
            raise InputError(
                f"STREAMS must be groups of band positions such as 1,2,3;4,5,6, got '{value}'."
            ) from None
        bad = [i + 1 for i in idx if not 0 <= i < n_bands]
        if bad or not idx:
            raise InputError(
                f"STREAMS position(s) {bad or 'none'} are out of range: the model has "
                f"{n_bands} input band(s); use 1..{n_bands}."
            )
        out.append(idx)
    return out


def model_options(value: Any) -> dict[str, Any]:
    """``MODEL_OPTIONS``: a JSON object (or dict) of extra model options."""
    if value is None or value == "" or value == {}:
        return {}
    if isinstance(value, dict):
        return dict(value)
    try:
        parsed = json.loads(str(value))
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise InputError(
            f'MODEL_OPTIONS must be a JSON object such as {{"widths": [16, 32, 64, 128]}}, '
            f"got '{value}'."
        )
    return parsed


def pos_weight_from(setting: str, fraction: float) -> float | None:
    """The BCE positive weight for a landslide pixel share ``fraction``."""
    text = str(setting).strip().lower()
    if text in ("none", "", "0", "off", "false"):
        return None
    if text == "auto":
        if fraction <= 0:
            return None
        return float(min(10.0, max(1.0, math.sqrt((1.0 - fraction) / fraction))))
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"POS_WEIGHT must be auto, none or a number, got '{setting}'.") from None
    if value <= 0:
        raise InputError(f"POS_WEIGHT must be positive, got {value:g}.")
    return value
