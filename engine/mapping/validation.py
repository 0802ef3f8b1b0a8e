"""Validation of mapping models: probability histograms, metrics, epoch and threshold choice.

One pass of the model over the validation chips keeps per-class histograms of
the landslide probability (:class:`ValidationPass`), from which the metrics at
any threshold follow; :class:`EpochSelection` keeps the best epoch and
:func:`choose_threshold` tunes the threshold. :func:`predict_scene` maps a
whole small scene for evaluation.

A model that standardises each input tile (``input_norm: "tile"``) answers
differently on a 128-px chip and on a mapping tile: the statistics it
standardises with change with the window. Its validation therefore does not run
chip by chip: each validation scene's extent is predicted with the mapping job's
own tiled predictor and tile layout (:func:`validation_tiling`,
:func:`slidewise.engine.imagery.tiling.predict_raster`), so that the epoch, the
calibration and the threshold are chosen on the probabilities *Map landslides*
will produce (issue 16).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from slidewise.engine.imagery.chips import chip_grid
from slidewise.engine.imagery.labels import IGNORE
from slidewise.engine.imagery.scenes import Chip, Scene
from slidewise.engine.imagery.segmetrics import Confusion
from slidewise.engine.imagery.segmodels import main_logits, normalise
from slidewise.engine.imagery.tiling import (
    DEFAULT_OVERLAP,
    STANDARDISED_TILE,
    TilingOptions,
    config_multiple,
    default_batch_size,
    is_tile_standardised,
    predict_raster,
)
from slidewise.engine.imagery.training import chip_batches

#: Candidate thresholds when THRESHOLD is "auto".
THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))
#: Bins of the probability histograms.
BINS = 100


@dataclass
class ValidationPass:
    """Validation loss and per-class histograms of the landslide probability.

    Attributes:
        loss: Mean validation loss (0 without a loss function).
        pos_hist: Landslide pixels per probability bin.
        neg_hist: Other labelled pixels per probability bin.
    """

    loss: float
    pos_hist: np.ndarray
    neg_hist: np.ndarray

    def confusion(self, threshold: float) -> Confusion:
        """The confusion counts at ``threshold`` (to the bin)."""
        k = min(BINS, max(0, round(threshold * BINS)))
        tp = int(self.pos_hist[k:].sum())
        fp = int(self.neg_hist[k:].sum())
        return Confusion(
            tp=tp, fp=fp, fn=int(self.pos_hist.sum()) - tp, tn=int(self.neg_hist.sum()) - fp
        )


def validation_tiling(config: Any, device: str | torch.device) -> TilingOptions | None:
    """How validation predicts a model: ``None`` = chip by chip (the training chips).

    A model that standardises each input tile
    (:func:`slidewise.engine.imagery.tiling.is_tile_standardised`) is validated
    with the tile layout *Map landslides* maps it with: tile
    :data:`~slidewise.engine.imagery.tiling.STANDARDISED_TILE` on every device,
    the job's default overlap and the model's alignment. The trained model file
    stores that tile as ``predict_window``.

    Args:
        config: The model's ``SegModelConfig`` (or its dict).
        device: Torch device validation runs on.
    """
    cfg = asdict(config) if is_dataclass(config) and not isinstance(config, type) else config
    if not is_tile_standardised(cfg):
        return None
    return TilingOptions(
        tile=STANDARDISED_TILE,
        overlap=DEFAULT_OVERLAP,
        batch_size=default_batch_size(device),
        device=device,
        multiple=config_multiple(cfg),
        gdal_cache_mb=None,
    )


def scene_regions(data: Any) -> list[tuple[int, Chip, list[Chip]]]:
    """Validation chips grouped by scene: ``(scene index, bounding window, chips)``.

    With whole validation images the window is the image; with a stripe of one
    raster it is the stripe.
    """
    by_scene: dict[int, list[Chip]] = {}
    for chip in data.chips:
        by_scene.setdefault(chip.scene, []).append(chip)
    out = []
    for index, chips in by_scene.items():
        r0, c0 = min(c.row for c in chips), min(c.col for c in chips)
        r1 = max(c.row + c.height for c in chips)
        c1 = max(c.col + c.width for c in chips)
        out.append((index, Chip(index, r0, c0, r1 - r0, c1 - c0), chips))
    return out


def region_labels(scene: Scene, region: Chip, chips: list[Chip]) -> np.ndarray:
    """Labels of ``region`` where a validation chip counts them, :data:`IGNORE` elsewhere.

    A chip's rows before ``own_row`` and columns before ``own_col`` are counted
    by its neighbour (the chip dataset's rule), so every pixel counts once.
    """
    labels = np.full((region.height, region.width), IGNORE, np.uint8)
    for chip in chips:
        own = scene.read_label(chip)[chip.own_row :, chip.own_col :]
        r = chip.row + chip.own_row - region.row
        c = chip.col + chip.own_col - region.col
        labels[r : r + own.shape[0], c : c + own.shape[1]] = own
    return labels


def predicted_regions(
    model: nn.Module, data: Any, tiling: TilingOptions
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(logits (1, h, w), labels (1, h, w))`` of each validation scene, tiled like mapping.

    Each scene's validation extent is predicted by
    :func:`~slidewise.engine.imagery.tiling.predict_raster` with ``tiling`` (the
    probabilities *Map landslides* would write for a raster of that extent); the
    logits are those of the blended probabilities (exact where one tile covers
    the scene). Nodata pixels are :data:`IGNORE`. The predictor runs a copy of
    ``model``: it prepares the network for inference in place (memory format,
    folded batch norms), which must not leak into the training.
    """
    model = copy.deepcopy(model)
    for index, region, chips in scene_regions(data):
        scene = data.scenes[index]
        image = scene.read_image(region, data.bands)
        labels = region_labels(scene, region, chips)
        prob = predict_raster(model, image, tiling, normalisation=data.normalisation)
        assert prob is not None
        labels[~np.isfinite(prob)] = IGNORE
        logits = torch.logit(torch.from_numpy(np.nan_to_num(prob, nan=0.5)).double(), eps=1e-7)
        yield logits.float()[None], torch.from_numpy(labels)[None]


def validation_outputs(
    model: nn.Module,
    data: Any,
    batch_size: int,
    device: torch.device,
    tiling: TilingOptions | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Landslide logits (CPU) and labels of the validation pixels, batch by batch.

    Without ``tiling``, the validation chips in batches; with it, each
    validation scene predicted with that tile layout on ``device``
    (:func:`predicted_regions`).
    """
    model.eval()
    if tiling is not None:
        yield from predicted_regions(model, data, replace(tiling, device=device))
        return
    with torch.no_grad():
        for images, masks in chip_batches(data, torch.arange(len(data)), batch_size):
            yield main_logits(model(images.to(device))).float()[:, 0].cpu(), masks


def validate(
    model: nn.Module,
    data: Any,
    batch_size: int,
    device: torch.device,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    on_batch: Callable[[], None] | None = None,
    tiling: TilingOptions | None = None,
) -> ValidationPass:
    """Run the model over validation chips; keep probability histograms per class.

    ``on_batch`` is called after every batch (progress). ``tiling``: predict
    each validation scene with that tile layout instead of chip by chip
    (:func:`validation_tiling`).
    """
    pos = torch.zeros(BINS, dtype=torch.float64)
    neg = torch.zeros(BINS, dtype=torch.float64)
    total, count = 0.0, 0
    with torch.no_grad():
        for logits, masks in validation_outputs(model, data, batch_size, device, tiling):
            valid = masks != IGNORE
            target = (masks == 1).float()
            if loss_fn is not None:
                total += float(loss_fn(logits, target, valid)) * len(logits)
                count += len(logits)
            prob = torch.sigmoid(logits)
            bins = (prob * BINS).long().clamp_(0, BINS - 1)
            t = target.bool()
            pos += torch.bincount(bins[valid & t], minlength=BINS).double()
            neg += torch.bincount(bins[valid & ~t], minlength=BINS).double()
            if on_batch is not None:
                on_batch()
    return ValidationPass(total / max(count, 1), pos.numpy(), neg.numpy())


def metrics_at(vp: ValidationPass, threshold: float) -> dict[str, Any]:
    """Landslide-class precision, recall, F1, IoU, MCC and counts at ``threshold``."""
    c = vp.confusion(threshold)
    out = {k: v for k, v in c.as_dict().items() if k in ("precision", "recall", "f1", "iou", "mcc")}
    out.update(tp=c.tp, fp=c.fp, fn=c.fn, tn=c.tn, threshold=threshold, valid_loss=vp.loss)
    return out


@dataclass
class EpochSelection:
    """Model selection on the validation split: the best epoch so far, its weights, patience.

    Attributes:
        metric: Landslide-class metric that ranks epochs (``f1``, ``iou`` or ``mcc``),
            or ``loss`` (the validation loss).
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
        self, record: dict[str, Any], vp: ValidationPass, has_slides: bool, model: nn.Module
    ) -> bool:
        """Keep the epoch of ``record`` (keys ``epoch``, ``threshold``, the metric) if best.

        Without landslides in the validation split, or with metric ``loss``, the
        validation loss ranks epochs.

        Returns:
            Whether the epoch is the best so far.
        """
        use_loss = self.metric == "loss" or not has_slides
        score = -vp.loss if use_loss else record[self.metric]
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
#: Validation chips at which a tuned threshold moves halfway from its prior to the best one.
SHRINK_CHIPS = 40
#: Finer candidate thresholds for calibrated probabilities of a rare class (0.02 steps).
CALIBRATED_GRID = tuple(round(0.02 * k, 2) for k in range(1, 50))


def threshold_prior(vp: ValidationPass, metric: str, calibrated: bool) -> float:
    """The threshold a tuned one is shrunk toward: 0.5, or F1*/2 for calibrated scores.

    For calibrated probabilities the F1-optimal threshold is half the best F1
    reachable (Lipton et al. 2014, "Thresholding classifiers to maximize F1"):
    a landslide class covering a few per cent of the pixels reaches F1 0.5 at a
    threshold near 0.25, and a threshold of 0.5 keeps only the few pixels the
    model is sure of (the demo's recall 0.07). IoU is a monotone function of F1
    and shares its optimum. 0.5 stays the prior of uncalibrated scores and of
    MCC (accuracy-like).
    """
    if not calibrated or metric not in ("f1", "iou"):
        return 0.5
    best_f1 = max(vp.confusion(t).f1 for t in CALIBRATED_GRID)
    return float(min(0.5, max(0.02, best_f1 / 2)))


def choose_threshold(
    vp: ValidationPass,
    setting: str,
    metric: str,
    n_chips: int | None = None,
    calibrated: bool = False,
) -> float:
    """The threshold for ``setting`` ("auto" = tuned on the validation pass).

    Tuning takes, among the candidate thresholds whose score is within
    :data:`THRESHOLD_TOLERANCE` of the best, the one closest to the prior
    (:func:`threshold_prior`: 0.5, or half the best validation F1 when the
    probabilities are ``calibrated``): a few validation images should not pull
    the threshold far from it for a tiny gain. With ``n_chips`` (the validation
    chips it was tuned on) the tuned threshold is shrunk toward the prior by
    ``n / (n + SHRINK_CHIPS)``: the pixels of one image are not independent,
    and a threshold tuned on four images does not carry to new ones (issue 16:
    0.90 on four images, recall 0.13 on new ones). Shrinking calibrated
    probabilities toward 0.5 instead killed the recall of the rare landslide
    class (the demo: F1 0.125, recall 0.07).
    """
    if str(setting).strip().lower() != "auto":
        return float(setting)
    metric = "f1" if metric == "loss" else metric
    prior = threshold_prior(vp, metric, calibrated)
    grid = CALIBRATED_GRID if calibrated else THRESHOLD_GRID
    scores = [getattr(vp.confusion(t), metric) for t in grid]
    best = max(scores)
    near = [t for t, s in zip(grid, scores, strict=True) if s >= best - THRESHOLD_TOLERANCE - 1e-12]
    tuned = min(near, key=lambda t: abs(t - prior))
    if n_chips is None:
        return tuned
    weight = n_chips / (n_chips + SHRINK_CHIPS)
    return round(prior + (tuned - prior) * weight, 2)


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

    For quick checks of small images; it is not the product's path: *Map
    landslides*, validation of tile-standardised models and
    ``bench/mapping_accuracy.py`` use
    :func:`slidewise.engine.imagery.tiling.predict_raster`, whose tile layout a
    tile-standardised model's probabilities depend on. Overlapping windows are
    averaged; each window is padded to a multiple of 32 by reflection.

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
