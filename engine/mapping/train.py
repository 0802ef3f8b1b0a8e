"""The ``trainmapping`` job: train a landslide segmentation model.

Reads one of three dataset layouts (:mod:`slidewise.engine.imagery.datasets`), splits a
spatial validation set off the training data (or takes a given one), trains an
smp model or the residual U-Net (:mod:`slidewise.engine.imagery.resunet`), selects the
epoch (and the probability threshold) on the validation split, and writes a
model file with the architecture, the bands, the normalisation, the threshold
and the validation metrics (:func:`slidewise.engine.imagery.segmodels.save_mapping_model`).

Training recipes (:data:`RECIPES`) bundle defaults; every parameter given
overrides its recipe value:

* ``l4s_baseline``: the Landslide4Sense baseline recipe: plain U-Net (the
  classic double-convolution U-Net, ``resunet`` without residual blocks or deep
  supervision, widths 16-256 instead of the classic 64-1024 to suit CPUs),
  cross-entropy (BCE on one logit), no augmentation, no imbalance handling,
  Adam with learning rate 1e-3 and weight decay 5e-4, threshold 0.5. Unlike
  the baseline script, which picks checkpoints on its training list, the epoch
  is selected on the validation split.
* ``default``: the engine's recipe: U-Net with a ResNet-18 encoder and a light
  decoder (128-64-32-16-8 channels), Dice + BCE with a positive-class weight
  from the training-set landslide frequency, landslide-oversampling chip
  sampler, D4 augmentation, AdamW with a cosine learning-rate schedule, epoch
  and probability threshold selected on the validation split, early stopping.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult, check_known, choice, require
from slidewise.engine.core.outputs import atomic_output, check_writable
from slidewise.engine.core.params import integer_param, is_set, number_param, to_bool
from slidewise.engine.imagery.augment import random_d4
from slidewise.engine.imagery.datasets import (
    DATASET_TYPES,
    IGNORE,
    DatasetSpec,
    LabelMapping,
    MappingData,
    Scene,
    parse_color,
    parse_values,
    prepare_mapping_data,
)
from slidewise.engine.imagery.losses import LOSSES, make_loss
from slidewise.engine.imagery.segmetrics import Confusion
from slidewise.engine.imagery.segmodels import (
    SegModelConfig,
    build_model,
    load_encoder_weights,
    main_logits,
    normalise,
    save_mapping_model,
)
from slidewise.engine.imagery.training import chip_batches

SELECT_METRICS = ("f1", "iou", "mcc")
SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "adamw")
CHECKPOINT_KEY = "slidewise_checkpoint"
CHECKPOINT_FORMAT = "slidewise-mapping-checkpoint"
#: Candidate thresholds when THRESHOLD is "auto".
THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))
_BINS = 100

Log = Callable[[str], None]


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


RECIPES: dict[str, Recipe] = {
    "l4s_baseline": Recipe(
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
    ),
    "default": Recipe(
        name="default",
        model_extra={"decoder_channels": [128, 64, 32, 16, 8]},
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
    """

    model: nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    threshold: float
    best_epoch: int
    pos_weight: float | None


# --------------------------------------------------------------------------- helpers


def _parse_streams(value: Any, n_bands: int) -> list[list[int]] | None:
    """``"1,2,3;4,5,6"`` (1-based positions among the selected bands) -> 0-based lists."""
    if value is None or value == "" or value == []:
        return None
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


def _model_options(value: Any) -> dict[str, Any]:
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


def _lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Learning-rate factor of 0-based ``epoch``."""
    if schedule == "cosine" and epochs > 1:
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * epoch / (epochs - 1)))
    return 1.0


# --------------------------------------------------------------------------- validation


@dataclass
class _ValidationPass:
    loss: float
    pos_hist: np.ndarray
    neg_hist: np.ndarray

    def confusion(self, threshold: float) -> Confusion:
        k = min(_BINS, max(0, round(threshold * _BINS)))
        tp = int(self.pos_hist[k:].sum())
        fp = int(self.neg_hist[k:].sum())
        return Confusion(
            tp=tp, fp=fp, fn=int(self.pos_hist.sum()) - tp, tn=int(self.neg_hist.sum()) - fp
        )


def validate(
    model: nn.Module,
    data: Any,
    batch_size: int,
    device: torch.device,
    loss_fn: Callable[..., torch.Tensor] | None = None,
) -> _ValidationPass:
    """Run the model over validation chips; keep probability histograms per class."""
    model.eval()
    pos = torch.zeros(_BINS, dtype=torch.float64)
    neg = torch.zeros(_BINS, dtype=torch.float64)
    total, count = 0.0, 0
    order = torch.arange(len(data))
    with torch.no_grad():
        for images, masks in chip_batches(data, order, batch_size):
            x = images.to(device)
            logits = main_logits(model(x)).float()[:, 0].cpu()
            valid = masks != IGNORE
            target = (masks == 1).float()
            if loss_fn is not None:
                total += float(loss_fn(logits, target, valid)) * len(images)
                count += len(images)
            prob = torch.sigmoid(logits)
            bins = (prob * _BINS).long().clamp_(0, _BINS - 1)
            t = target.bool()
            pos += torch.bincount(bins[valid & t], minlength=_BINS).double()
            neg += torch.bincount(bins[valid & ~t], minlength=_BINS).double()
    return _ValidationPass(total / max(count, 1), pos.numpy(), neg.numpy())


def metrics_at(vp: _ValidationPass, threshold: float) -> dict[str, Any]:
    c = vp.confusion(threshold)
    out = {k: v for k, v in c.as_dict().items() if k in ("precision", "recall", "f1", "iou", "mcc")}
    out.update(tp=c.tp, fp=c.fp, fn=c.fn, tn=c.tn, threshold=threshold, valid_loss=vp.loss)
    return out


@dataclass
class EpochSelection:
    """Model selection on the validation split: the best epoch so far, its weights, patience.

    Attributes:
        metric: Landslide-class metric that ranks epochs (``f1``, ``iou`` or ``mcc``).
        best: ``epoch`` (0 = none yet), ``score``, ``threshold`` and ``metrics`` (the
            epoch's record) of the best epoch.
        state: The best epoch's weights (on the CPU); ``None`` before the first epoch.
        stale: Epochs since the last improvement.
    """

    metric: str
    best: dict[str, Any] = field(
        default_factory=lambda: {"epoch": 0, "score": -math.inf, "threshold": 0.5, "metrics": {}}
    )
    state: dict[str, torch.Tensor] | None = None
    stale: int = 0

    def offer(
        self, record: dict[str, Any], vp: _ValidationPass, has_slides: bool, model: nn.Module
    ) -> bool:
        """Keep the epoch of ``record`` (keys ``epoch``, ``threshold``, the metric) if best.

        Without landslides in the validation split the validation loss ranks epochs.

        Returns:
            Whether the epoch is the best so far.
        """
        score = record[self.metric] if has_slides else -vp.loss
        if score <= self.best["score"] + 1e-9:
            self.stale += 1
            return False
        self.best = {
            "epoch": record["epoch"],
            "score": score,
            "threshold": record["threshold"],
            "metrics": record,
        }
        self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self.stale = 0
        return True

    def exhausted(self, patience: int) -> bool:
        """True when ``patience`` (> 0) epochs in a row brought no improvement."""
        return bool(patience) and self.stale >= patience


#: Thresholds within this much of the best validation score count as equally good.
THRESHOLD_TOLERANCE = 0.01


def choose_threshold(vp: _ValidationPass, setting: str, metric: str) -> float:
    """The threshold for ``setting`` ("auto" = tuned on the validation pass).

    Tuning takes, among the thresholds of :data:`THRESHOLD_GRID` whose score is
    within :data:`THRESHOLD_TOLERANCE` of the best, the one closest to 0.5: a
    few validation images should not pull the threshold far for a tiny gain.
    """
    if str(setting).strip().lower() != "auto":
        return float(setting)
    scores = [getattr(vp.confusion(t), metric) for t in THRESHOLD_GRID]
    best = max(scores)
    near = [
        t
        for t, s in zip(THRESHOLD_GRID, scores, strict=True)
        if s >= best - THRESHOLD_TOLERANCE - 1e-12
    ]
    return min(near, key=lambda t: abs(t - 0.5))


# --------------------------------------------------------------------------- checkpoints


def _fingerprint(settings: TrainSettings, data: MappingData) -> dict[str, Any]:
    return {
        "model": asdict(settings.model),
        "bands": data.band_indices,
        "normalisation": {k: data.normalisation.get(k) for k in ("kind", "mean", "std")},
        "chip_size": data.chip_size,
    }


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    best_state: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: dict[str, Any],
) -> None:
    """Write a resumable checkpoint: weights, best weights, optimizer state, RNG.

    Everything is a tensor in one safetensors file (no pickle); scalars and
    the optimizer's hyper-parameters go into its JSON metadata.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous().clone()
    for k, v in (best_state or {}).items():
        tensors[f"best.{k}"] = v.detach().cpu().contiguous().clone()
    opt = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for pid, pstate in opt["state"].items():
        for name, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars[f"{pid}.{name}"] = value
    tensors["rng.generator"] = generator.get_state().clone()
    tensors["rng.torch"] = torch.get_rng_state().clone()
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "param_groups": opt["param_groups"],
        "optim_scalars": scalars,
        **state,
    }
    from slidewise.engine.core.protocol import json_safe

    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata={CHECKPOINT_KEY: json.dumps(json_safe(meta))})


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        InputError: missing, unreadable, or not a Slidewise mapping checkpoint.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"RESUME is set but the checkpoint '{p}' does not exist: set RESUME to false "
            "to start a new training, or check CHECKPOINT."
        )
    try:
        with safe_open(str(p), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get(CHECKPOINT_KEY, "{}"))
        tensors = load_file(str(p))
    except Exception as exc:
        raise InputError(
            f"The checkpoint '{p.name}' cannot be read ({exc}): delete it and train again."
        ) from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise InputError(
            f"'{p.name}' is not a Slidewise mapping checkpoint: choose another CHECKPOINT path."
        )
    return tensors, meta


def _restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta.get("optim_scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


# --------------------------------------------------------------------------- training


def train_model(
    data: MappingData,
    settings: TrainSettings,
    log: Log = print,
    progress: Callable[[float], None] | None = None,
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
    from slidewise.engine.core.runtime import seed_everything

    recipe = settings.recipe
    warn = warn or log
    device = torch.device(settings.device)
    seed_everything(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = build_model(settings.model)
    if settings.encoder_weights:
        n = load_encoder_weights(model, settings.encoder_weights)
        log(f"Loaded {n} encoder tensors from {Path(settings.encoder_weights).name}.")
    cuda = device.type == "cuda"
    use_amp = cuda and settings.amp
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    pos_weight = pos_weight_from(recipe.pos_weight, data.landslide_fraction)
    loss_fn = make_loss(recipe.loss, pos_weight)
    val_has_slides = bool(data.valid_stats[:, 0].sum() > 0)
    metric = settings.select_metric

    fingerprint = _fingerprint(settings, data)
    start_epoch = 0
    history: list[dict[str, Any]] = []
    selection = EpochSelection(metric)
    if settings.resume and settings.checkpoint:
        tensors, meta = load_checkpoint(settings.checkpoint)
        if meta.get("fingerprint") != json.loads(json.dumps(fingerprint)):
            raise InputError(
                f"The checkpoint '{Path(settings.checkpoint).name}' was made with another "
                "model, bands, normalisation or chip size: resume with the same settings, or "
                "set RESUME to false to start again."
            )
        model.load_state_dict(_prefixed(tensors, "model."))
        selection.state = _prefixed(tensors, "best.") or None
        _restore_optimizer(optimizer, tensors, meta)
        generator.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])
        if use_amp and meta.get("scaler"):
            scaler.load_state_dict(meta["scaler"])
        start_epoch = int(meta["epoch"])
        history = list(meta.get("history", []))
        selection.best = dict(meta.get("best", selection.best))
        if selection.best.get("score") is None:  # -inf is stored as null
            selection.best["score"] = -math.inf
        selection.stale = int(meta.get("stale", 0))
        log(f"Resumed from '{Path(settings.checkpoint).name}' after epoch {start_epoch}.")
    elif settings.checkpoint and Path(settings.checkpoint).exists():
        log(
            f"The checkpoint '{Path(settings.checkpoint).name}' will be overwritten "
            "(RESUME is off)."
        )

    n_draw = settings.chips_per_epoch or len(data.train)
    steps_per_epoch = math.ceil(n_draw / settings.batch_size)
    total_steps = max(1, (settings.epochs - start_epoch) * steps_per_epoch)
    done_steps = 0
    stopped_early = False
    for epoch in range(start_epoch, settings.epochs):
        if selection.exhausted(settings.patience):
            stopped_early = True
            break
        t0 = time.time()
        lr = recipe.lr * _lr_factor(recipe.schedule, epoch, settings.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        order = epoch_order(data.train_stats, recipe.oversample, n_draw, generator)
        running, seen = 0.0, 0
        for images, masks in chip_batches(data.train, order, settings.batch_size, drop_single=True):
            if recipe.augment:
                images, masks = random_d4(images, masks, generator)
            x = images.to(device, non_blocking=True)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            m = masks.to(device, non_blocking=True)
            valid = m != IGNORE
            target = (m == 1).float()
            with torch.autocast(device_type="cuda", enabled=use_amp):
                out = model(x)
            if isinstance(out, (tuple, list)):
                main, aux = out
                loss = loss_fn(main.float(), target, valid)
                weights = getattr(model, "aux_weights", [0.5] * len(aux))
                for w, a in zip(weights, aux, strict=False):
                    loss = loss + w * loss_fn(a.float(), target, valid)
            else:
                loss = loss_fn(out.float(), target, valid)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            running += float(loss.detach()) * len(images)
            seen += len(images)
            done_steps += 1
            if progress is not None:
                progress(done_steps / total_steps)
        vp = validate(model, data.valid, settings.batch_size, device, loss_fn)
        threshold = choose_threshold(vp, settings.threshold, metric) if val_has_slides else 0.5
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": running / max(seen, 1),
            **metrics_at(vp, threshold),
            "seconds": round(time.time() - t0, 2),
        }
        history.append(record)
        improved = selection.offer(record, vp, val_has_slides, model)
        log(
            f"epoch {epoch + 1}/{settings.epochs}: train loss {record['train_loss']:.4f}, "
            f"valid loss {vp.loss:.4f}, landslide P {record['precision']:.3f} "
            f"R {record['recall']:.3f} F1 {record['f1']:.3f} IoU {record['iou']:.3f} "
            f"MCC {record['mcc']:.3f} (threshold {threshold:.2f}){' *' if improved else ''} "
            f"[{record['seconds']:.1f} s]"
        )
        if settings.checkpoint:
            save_checkpoint(
                settings.checkpoint,
                model,
                selection.state,
                optimizer,
                generator,
                {
                    "epoch": epoch + 1,
                    "history": history,
                    "best": selection.best,
                    "stale": selection.stale,
                    "fingerprint": fingerprint,
                    "scaler": scaler.state_dict() if use_amp else {},
                },
            )
    if stopped_early:
        log(f"Stopped early: no better validation {metric} for {settings.patience} epochs.")
    final = build_model(settings.model)
    final.load_state_dict(selection.state if selection.state is not None else model.state_dict())
    final.eval()
    best = selection.best
    if best["epoch"]:
        log(
            f"Selected epoch {best['epoch']} on the validation split "
            f"({metric} {best['metrics'].get(metric, float('nan')):.3f}, "
            f"threshold {best['threshold']:.2f})."
        )
    return TrainOutcome(
        model=final,
        metrics=dict(best["metrics"]),
        history=history,
        threshold=float(best["threshold"]),
        best_epoch=int(best["epoch"]),
        pos_weight=pos_weight,
    )


# --------------------------------------------------------------------------- prediction


def predict_scene(
    model: nn.Module,
    scene: Scene,
    bands: list[int],
    normalisation: dict[str, Any],
    device: str | torch.device = "cpu",
    window: int = 1024,
    overlap: int = 0,
) -> np.ndarray:
    """Landslide probability of a whole (small) scene, window by window.

    For evaluating small images (the seam-free mapping of large rasters lives
    in the mapping job). Use the training chip size as ``window`` (the model
    file's ``tile_size``): a network trained on small chips can behave
    differently on much larger inputs. Overlapping windows are averaged; each
    window is padded to a multiple of 32 by reflection.

    Args:
        model: Trained model.
        scene: The scene.
        bands: 0-based band indices.
        normalisation: Stored normalisation.
        device: Torch device.
        window: Window side in pixels.
        overlap: Overlap of neighbouring windows in pixels (``< window``).

    Returns:
        Probabilities (H, W) float32; NaN where the image has nodata.
    """
    from slidewise.engine.imagery.datasets import Chip, chip_grid

    if not 0 <= overlap < window:
        raise ValueError("overlap must be in [0, window)")
    model.eval()
    total = np.zeros((scene.height, scene.width), np.float32)
    count = np.zeros((scene.height, scene.width), np.float32)
    nodata = np.zeros((scene.height, scene.width), bool)
    with torch.no_grad():
        for r, c, h, w in chip_grid(scene.height, scene.width, window, window - overlap):
            a = scene.read_image(Chip(0, r, c, h, w), bands)
            bad = ~np.all(np.isfinite(a), axis=0)
            x = normalise(torch.from_numpy(a)[None], normalisation)
            x = torch.nan_to_num(x, nan=0.0)
            ph, pw = (-h) % 32, (-w) % 32
            if ph or pw:
                mode = "reflect" if h > ph and w > pw else "replicate"
                x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
            logits = main_logits(model(x.to(device))).float()[0, 0, :h, :w].cpu()
            total[r : r + h, c : c + w] += torch.sigmoid(logits).numpy()
            count[r : r + h, c : c + w] += 1
            nodata[r : r + h, c : c + w] |= bad
    out = total / np.maximum(count, 1)
    out[nodata] = np.nan
    return out


# --------------------------------------------------------------------------- the job

#: The data and chip parameters read by :func:`chip_request` (trainmapping, addregion).
DATA_PARAMS = frozenset(
    {
        "DATASET_TYPE",
        "TRAIN_IMAGES",
        "TRAIN_MASKS",
        "VALID_IMAGES",
        "VALID_MASKS",
        "VALID_FRACTION",
        "LABEL_POLYGONS",
        "LANDSLIDE_VALUES",
        "IGNORE_VALUES",
        "MASK_COLOR",
        "BANDS",
        "NORMALISATION",
        "CHIP_SIZE",
        "STRIDE",
    }
)
KNOWN_PARAMS = DATA_PARAMS | {
    "RECIPE",
    "ARCHITECTURE",
    "ENCODER",
    "ENCODER_DEPTH",
    "ENCODER_WEIGHTS",
    "STREAMS",
    "MODEL_OPTIONS",
    "LOSS",
    "AUGMENT",
    "POS_WEIGHT",
    "OVERSAMPLE",
    "EPOCHS",
    "BATCH_SIZE",
    "CHIPS_PER_EPOCH",
    "LR",
    "WEIGHT_DECAY",
    "PATIENCE",
    "SELECT_METRIC",
    "THRESHOLD",
    "CHECKPOINT",
    "RESUME",
    "SEED",
    "OUTPUT",
}


def dataset_specs(params: dict[str, Any]) -> tuple[DatasetSpec, DatasetSpec | None]:
    """The training and (optional) validation datasets named by trainmapping's parameters.

    Reads DATASET_TYPE, TRAIN_IMAGES, TRAIN_MASKS, VALID_IMAGES, VALID_MASKS,
    LABEL_POLYGONS, LANDSLIDE_VALUES, IGNORE_VALUES and MASK_COLOR (shared by
    the trainmapping and addregion jobs).

    Raises:
        InputError: polygons without geotiff data, validation masks without images.
    """
    kind = choice(params, "DATASET_TYPE", DATASET_TYPES, "geotiff")
    mapping = LabelMapping(
        landslide=parse_values(params.get("LANDSLIDE_VALUES"), "LANDSLIDE_VALUES"),
        ignore=parse_values(params.get("IGNORE_VALUES"), "IGNORE_VALUES") or (),
        mask_color=parse_color(params.get("MASK_COLOR")),
    )
    polygons = str(params["LABEL_POLYGONS"]) if is_set(params, "LABEL_POLYGONS") else None
    if polygons and kind != "geotiff":
        raise InputError("LABEL_POLYGONS needs DATASET_TYPE geotiff (georeferenced images).")
    train = DatasetSpec(
        kind, str(params["TRAIN_IMAGES"]), params.get("TRAIN_MASKS") or None, polygons, mapping
    )
    valid = None
    if is_set(params, "VALID_IMAGES"):
        valid = DatasetSpec(
            kind, str(params["VALID_IMAGES"]), params.get("VALID_MASKS") or None, polygons, mapping
        )
    elif is_set(params, "VALID_MASKS"):
        raise InputError("VALID_MASKS was given without VALID_IMAGES: give both or neither.")
    return train, valid


@dataclass(frozen=True)
class ChipRequest:
    """The training data a mapping job asked for, checked before anything is read.

    Attributes:
        train: Training dataset.
        valid: Separate validation dataset (``None``: split off ``train``).
        chip_size: Chip side in pixels.
        stride: Step between chips (``None``: the chip size).
        valid_fraction: Share split off for validation when ``valid`` is ``None``.
        bands: The BANDS parameter as given.
        normalisation: ``fit``, ``l4s`` or ``none``.
    """

    train: DatasetSpec
    valid: DatasetSpec | None
    chip_size: int
    stride: int | None
    valid_fraction: float
    bands: Any
    normalisation: str


def chip_request(params: dict[str, Any]) -> ChipRequest:
    """Read the dataset and chip parameters shared by the trainmapping and addregion jobs.

    Raises:
        InputError: a bad value (see :func:`dataset_specs`), naming the parameter.
    """
    chip_size = integer_param(params, "CHIP_SIZE", 256, 16, 8192)
    stride = (
        integer_param(params, "STRIDE", chip_size, 1, 8192) if is_set(params, "STRIDE") else None
    )
    train, valid = dataset_specs(params)
    return ChipRequest(
        train=train,
        valid=valid,
        chip_size=chip_size,
        stride=stride,
        valid_fraction=number_param(params, "VALID_FRACTION", 0.2, 0.01, 0.9),
        bands=params.get("BANDS"),
        normalisation=choice(params, "NORMALISATION", ("fit", "l4s", "none"), "fit"),
    )


def read_chips(request: ChipRequest, seed: int, ctx: JobContext, what: str) -> MappingData:
    """Read, split and normalise the chips of ``request`` and log what was read.

    Args:
        request: From :func:`chip_request`.
        seed: Seed of the spatial split.
        ctx: The job's context (log and warnings).
        what: What is being read, for the log (e.g. "the training data").
    """
    ctx.log(f"Reading {what} ({request.train.kind}) ...")
    ctx.progress(1)
    data = prepare_mapping_data(
        request.train,
        request.valid,
        chip_size=request.chip_size,
        stride=request.stride,
        valid_fraction=request.valid_fraction,
        bands=request.bands,
        normalisation=request.normalisation,
        seed=seed,
        warn=ctx.warn,
    )
    ctx.log(
        f"{len(data.train)} training and {len(data.valid)} validation chips of "
        f"{data.chip_size} px; bands {', '.join(data.band_names)}; landslide pixels "
        f"{data.landslide_fraction:.2%} of labelled training pixels; split: "
        f"{data.split.detail}."
    )
    return data


def run_train(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Train a landslide segmentation model and write it to OUTPUT.

    Parameters (an empty value means the default; recipe-dependent defaults
    are those of RECIPE):

    * DATASET_TYPE (str, "geotiff"): "pairs" (image/mask files with the same
      name), "l4s_h5" (Landslide4Sense image_N.h5 / mask_N.h5) or "geotiff"
      (georeferenced images with label rasters or LABEL_POLYGONS).
    * TRAIN_IMAGES (folder or file, required): training images.
    * TRAIN_MASKS (folder or file): masks/label rasters with the images' file
      names (L4S: mask_N.h5 for image_N.h5; optional when a sibling "mask"
      folder exists; geotiff: optional with LABEL_POLYGONS).
    * VALID_IMAGES, VALID_MASKS (folder or file, optional): a separate
      validation set. Without them, VALID_FRACTION of the training data is split
      off by space (whole images, or a stripe of one extent; see
      slidewise.engine.imagery.datasets).
    * VALID_FRACTION (float, 0.2): share split off for validation.
    * LABEL_POLYGONS (vector file, optional, geotiff only): landslide polygons,
      rasterised on each image grid (everything else is 0 = not landslide).
    * LANDSLIDE_VALUES (str, auto): mask/label values meaning landslide, e.g. "2".
      Auto: 1 in 0/1 masks, 255 in 0/255 masks.
    * IGNORE_VALUES (str, none): values not counted, e.g. "0" for unlabelled.
    * MASK_COLOR (str, auto): RGB colour of landslide pixels in colour masks,
      e.g. "255,255,0" (Bijie yellow). Auto: every bright pixel on black.
    * BANDS (str, all): bands to use, 1-based numbers or names ("4,3,2",
      "B4,B3,B2"); stored in the model file.
    * NORMALISATION (str, "fit"): "fit" (per-band mean/std fitted on the
      training split only), "l4s" (the Landslide4Sense constants; 14-band data)
      or "none"; stored in the model file and re-applied at inference.
    * RECIPE (str, "default"): "default" or "l4s_baseline" (see module doc).
    * ARCHITECTURE (str, recipe): "resunet" or an smp architecture (unet,
      unetplusplus, deeplabv3plus, fpn, pspnet, linknet, manet, pan, segformer,
      upernet).
    * ENCODER (str, recipe: resnet18): smp encoder (no download; random start).
    * ENCODER_DEPTH (int, 5): smp encoder depth (3-5).
    * ENCODER_WEIGHTS (safetensors file, optional): local encoder weights,
      loaded with strict key checking.
    * STREAMS (str, optional, resunet only): input streams as groups of 1-based
      positions among the selected bands, e.g. "1,2,3;4,5,6;7,8".
    * MODEL_OPTIONS (JSON object, optional): extra model options merged over the
      recipe's: smp keyword arguments (e.g. {"decoder_channels": [256, 128, 64, 32, 16]})
      or resunet options (widths, residual, deep_supervision, aux_weights).
    * LOSS (str, recipe): "dice_bce", "bce" ("ce"), "dice", "focal", "lovasz",
      "lovasz_bce".
    * AUGMENT (bool, recipe): random D4 (rotations and mirrors) of each chip.
    * POS_WEIGHT (str, recipe): "auto" (sqrt of background/landslide pixel
      ratio, clipped to 1..10), "none", or a number: landslide weight in BCE.
    * OVERSAMPLE (float, recipe): share of chips with landslides drawn per
      epoch (0 = plain shuffling).
    * EPOCHS (int, recipe: 30): training epochs.
    * BATCH_SIZE (int, recipe: 8): chips per batch.
    * CHIPS_PER_EPOCH (int, 0): chips drawn per epoch (0 = as many as there are).
    * LR (float, recipe: 1e-3): learning rate.
    * WEIGHT_DECAY (float, recipe): weight decay.
    * CHIP_SIZE (int, 256): chip side in pixels (capped at the largest image side).
    * STRIDE (int, CHIP_SIZE): step between training chips.
    * PATIENCE (int, recipe: 10): stop after this many epochs without a better
      validation score (0 = never).
    * SELECT_METRIC (str, "f1"): "f1", "iou" or "mcc" of the landslide class,
      used for epoch selection and threshold tuning.
    * THRESHOLD (str, recipe): "auto" (tuned on validation) or a probability.
    * CHECKPOINT (file, optional): .safetensors checkpoint written every epoch
      (weights, best weights, optimizer state, random state; no pickle).
    * RESUME (bool, false): continue from CHECKPOINT up to EPOCHS.
    * SEED (int, runtime seed): seed of splits, sampling, augmentation, weights.
    * OUTPUT (file, required): the model file (.safetensors).

    Returns:
        OUTPUT = the model path; figures = validation metrics of the selected epoch.
    """
    check_known(params, KNOWN_PARAMS)
    require(params, "TRAIN_IMAGES", "OUTPUT")
    check_writable(params["OUTPUT"])
    from slidewise.engine.core.runtime import apply, select_device

    recipe_name = choice(params, "RECIPE", tuple(RECIPES), "default")
    recipe = RECIPES[recipe_name]
    seed = integer_param(params, "SEED", ctx.options.seed, 0, 2**31 - 1)
    apply(replace(ctx.options, seed=seed))
    device = select_device(ctx.options.device)

    overrides: dict[str, Any] = {}
    if is_set(params, "ARCHITECTURE"):
        overrides["architecture"] = str(params["ARCHITECTURE"]).strip().lower()
        if overrides["architecture"] != recipe.architecture:
            overrides["model_extra"] = {}
    if is_set(params, "ENCODER"):
        overrides["encoder"] = str(params["ENCODER"]).strip()
    if is_set(params, "ENCODER_DEPTH"):
        overrides["encoder_depth"] = integer_param(params, "ENCODER_DEPTH", 5, 3, 5)
    if is_set(params, "LOSS"):
        overrides["loss"] = choice(params, "LOSS", LOSSES, recipe.loss)
    if is_set(params, "AUGMENT"):
        overrides["augment"] = to_bool(params["AUGMENT"], "AUGMENT")
    if is_set(params, "POS_WEIGHT"):
        pos_weight_from(str(params["POS_WEIGHT"]), 0.1)  # validate early
        overrides["pos_weight"] = str(params["POS_WEIGHT"])
    if is_set(params, "OVERSAMPLE"):
        overrides["oversample"] = number_param(params, "OVERSAMPLE", 0.0, 0.0, 0.95)
    if is_set(params, "LR"):
        overrides["lr"] = number_param(params, "LR", recipe.lr, 1e-7, 1.0)
    if is_set(params, "WEIGHT_DECAY"):
        overrides["weight_decay"] = number_param(
            params, "WEIGHT_DECAY", recipe.weight_decay, 0.0, 1.0
        )
    recipe = replace(recipe, **overrides)
    if not recipe.encoder:
        recipe = replace(recipe, encoder="resnet18")
    threshold = str(params.get("THRESHOLD") or recipe.threshold).strip().lower()
    if threshold != "auto":
        number_param({"THRESHOLD": threshold}, "THRESHOLD", 0.5, 0.0, 1.0)
    request = chip_request(params)
    select_metric = choice(params, "SELECT_METRIC", SELECT_METRICS, "f1")
    epochs = integer_param(params, "EPOCHS", recipe.epochs, 1, 100000)
    batch_size = integer_param(params, "BATCH_SIZE", recipe.batch_size, 1, 4096)
    patience = integer_param(params, "PATIENCE", recipe.patience, 0, 100000)
    chips_per_epoch = integer_param(params, "CHIPS_PER_EPOCH", 0, 0, 10**9)
    resume = to_bool(params.get("RESUME", False), "RESUME")
    checkpoint = str(params["CHECKPOINT"]) if is_set(params, "CHECKPOINT") else None
    if resume and not checkpoint:
        raise InputError("RESUME is set but no CHECKPOINT was given: give the checkpoint file.")
    if checkpoint:
        check_writable(checkpoint)
        if Path(checkpoint).resolve() == Path(str(params["OUTPUT"])).resolve():
            raise InputError("CHECKPOINT and OUTPUT are the same file: give them different names.")
    encoder_weights = str(params["ENCODER_WEIGHTS"]) if is_set(params, "ENCODER_WEIGHTS") else None
    if encoder_weights and not Path(encoder_weights).is_file():
        raise InputError(
            f"The encoder weights file '{encoder_weights}' does not exist: check the path."
        )

    data = read_chips(request, seed, ctx, "the training data")
    if recipe.architecture != "resunet" and data.chip_size % 32:
        raise InputError(
            f"CHIP_SIZE {data.chip_size} does not suit {recipe.architecture}: use a multiple "
            "of 32 (for example 128 or 256)."
        )
    streams = _parse_streams(params.get("STREAMS"), len(data.band_indices))
    extra = dict(recipe.model_extra)
    extra.update(_model_options(params.get("MODEL_OPTIONS")))
    channels = extra.get("decoder_channels")
    if isinstance(channels, list) and len(channels) > recipe.encoder_depth:
        extra["decoder_channels"] = channels[: recipe.encoder_depth]  # one per encoder stage
    if streams is not None:
        if recipe.architecture != "resunet":
            raise InputError("STREAMS needs ARCHITECTURE resunet.")
        extra["streams"] = streams
    model_config = SegModelConfig(
        architecture=recipe.architecture,
        encoder=recipe.encoder,
        in_channels=len(data.band_indices),
        encoder_depth=recipe.encoder_depth,
        extra=extra,
    )
    build_model(model_config)  # fail early on a bad architecture or encoder
    settings = TrainSettings(
        recipe=recipe,
        model=model_config,
        encoder_weights=encoder_weights,
        epochs=epochs,
        batch_size=batch_size,
        chips_per_epoch=chips_per_epoch,
        patience=patience,
        select_metric=select_metric,
        threshold=threshold,
        checkpoint=checkpoint,
        resume=resume,
        seed=seed,
        device=str(device),
    )
    ctx.log(
        f"Recipe {recipe.name}: {recipe.architecture}"
        f"{'' if recipe.architecture == 'resunet' else ' / ' + recipe.encoder}, loss "
        f"{recipe.loss}, augment {recipe.augment}, pos_weight {recipe.pos_weight}, "
        f"oversample {recipe.oversample}, {recipe.optimizer} lr {recipe.lr:g} wd "
        f"{recipe.weight_decay:g} ({recipe.schedule}), {epochs} epochs, batch {batch_size}, "
        f"device {device}."
    )
    outcome = train_model(data, settings, log=ctx.log, progress=ctx.stage(3, 97), warn=ctx.warn)
    save_mapping_model(
        params["OUTPUT"],
        outcome.model,
        model_config,
        data.band_names,
        data.normalisation,
        pixel_size=data.pixel_size,
        tile_size=data.chip_size,
        provenance={
            "job": "trainmapping",
            "dataset_type": request.train.kind,
            "train_images": str(params["TRAIN_IMAGES"]),
            "train_masks": str(params.get("TRAIN_MASKS") or ""),
            "label_polygons": request.train.polygons or "",
            "split": data.split.detail,
            "recipe": asdict(recipe),
            "epochs": epochs,
            "batch_size": batch_size,
            "select_metric": select_metric,
            "seed": seed,
            "device": str(device),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        metrics={"validation": outcome.metrics, "history": outcome.history},
        extra={
            "band_indices": data.band_indices,
            "threshold": outcome.threshold,
            "best_epoch": outcome.best_epoch,
            "pos_weight": outcome.pos_weight,
            "label_mapping": asdict(request.train.mapping),
        },
    )
    ctx.log(f"Model written to {params['OUTPUT']}.")
    figures = {
        f"valid_{k}": outcome.metrics.get(k)
        for k in ("precision", "recall", "f1", "iou", "mcc", "threshold")
    }
    figures["best_epoch"] = outcome.best_epoch
    inputs = [str(params["TRAIN_IMAGES"])]
    for name in ("TRAIN_MASKS", "VALID_IMAGES", "VALID_MASKS", "LABEL_POLYGONS", "ENCODER_WEIGHTS"):
        if is_set(params, name):
            inputs.append(str(params[name]))
    return JobResult(
        outputs={"OUTPUT": str(params["OUTPUT"])},
        figures=figures,
        inputs=inputs,
        device=device.type,
    )


def checkpoint_epoch(path: str | os.PathLike[str]) -> int:
    """The last completed epoch stored in a checkpoint."""
    return int(load_checkpoint(path)[1]["epoch"])
