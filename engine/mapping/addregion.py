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

One model file (``task = "multiregion"``) holds the encoder, every decoder and
head (tensor keys ``encoder.*``, ``decoders.<region>.*``, ``heads.<region>.*``),
and per region (``metadata.extra["regions"]``): the bands, the normalisation,
the probability threshold, the training data and the validation metrics; the
history of added regions with their forgetting tables is in
``metadata.extra["events"]``. Regions may use different band names (the same
band count: the encoder is shared) and always use their own normalisation.

The model container itself is :mod:`slidewise.engine.imagery.regions`.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any

import torch

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult, check_known, choice, require
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.core.params import integer_param, is_set, number_param, to_bool
from slidewise.engine.imagery.augment import random_d4
from slidewise.engine.imagery.datasets import (
    DATASET_TYPES,
    IGNORE,
    ChipDataset,
    DatasetSpec,
    LabelMapping,
    MappingData,
    load_scenes,
    make_chips,
    parse_color,
    parse_values,
    prepare_mapping_data,
)
from slidewise.engine.imagery.losses import LOSSES, make_loss
from slidewise.engine.imagery.regions import (
    ARCHITECTURE,
    DEFAULT_BASE_REGION,
    DEFAULT_DECODER_CHANNELS,
    Log,
    MultiRegionModel,
    ProgressFn,
    check_region_name,
    distillation_loss,
    from_unet,
    load_or_convert,
    save_multiregion,
)
from slidewise.engine.imagery.segmodels import SegModelConfig
from slidewise.engine.mapping.train import (
    DATA_PARAMS,
    RECIPES,
    SELECT_METRICS,
    ChipRequest,
    EpochSelection,
    TrainOutcome,
    TrainSettings,
    chip_batches,
    chip_request,
    choose_threshold,
    epoch_order,
    metrics_at,
    pos_weight_from,
    read_chips,
    train_model,
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


def _set_train_modes(
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


def train_region(
    model: MultiRegionModel,
    region: str,
    data: MappingData,
    settings: RegionSettings,
    *,
    replace: bool = False,
    log: Log = print,
    progress: ProgressFn | None = None,
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
    from slidewise.engine.core.runtime import seed_everything

    if settings.mode not in MODES:
        raise InputError(f"Unknown MODE '{settings.mode}': use one of {', '.join(MODES)}.")
    device = torch.device(settings.device)
    seed_everything(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model.to(device)
    metric = settings.select_metric

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
    teacher: MultiRegionModel | None = None
    if settings.mode == "distill" and old and settings.distill_lambda > 0:
        # The old decoders' outputs before training: a frozen copy of the model.
        teacher = copy.deepcopy(model).eval()
        if region in teacher.regions:
            teacher.remove_region(region)
        for p in teacher.parameters():
            p.requires_grad_(False)
    model.add_region(region, settings.init_from, replace=replace)

    in_encoder = {id(p) for p in model.encoder.parameters()}
    decoder_params = [p for p in model.parameters() if id(p) not in in_encoder]
    groups = [{"params": decoder_params, "lr": settings.lr}]
    if settings.mode == "distill":
        encoder_lr = settings.lr * settings.encoder_lr_scale
        groups.append({"params": list(model.encoder.parameters()), "lr": encoder_lr})
    optimizer = torch.optim.Adam(groups, lr=settings.lr, weight_decay=settings.weight_decay)
    pos_weight = pos_weight_from(settings.pos_weight, data.landslide_fraction)
    loss_fn = make_loss(settings.loss, pos_weight)
    val_has_slides = bool(data.valid_stats[:, 0].sum() > 0)

    n_draw = settings.chips_per_epoch or len(data.train)
    steps_per_epoch = math.ceil(n_draw / settings.batch_size)
    total = max(1, settings.epochs * steps_per_epoch)
    done = 0
    history: list[dict[str, Any]] = []
    selection = EpochSelection(metric)
    for epoch in range(settings.epochs):
        if selection.exhausted(settings.patience):
            log(f"Stopped early: no better validation {metric} for {settings.patience} epochs.")
            break
        t0 = time.time()
        # LwF's warm-up: the first epochs train the new decoder alone.
        mode = "frozen" if epoch < settings.warmup_epochs else settings.mode
        _set_train_modes(model, region, mode, settings.train_old_decoders)
        order = epoch_order(data.train_stats, settings.oversample, n_draw, generator).tolist()
        running = {"task": 0.0, "distill": 0.0}
        seen = 0
        for images, masks in chip_batches(data.train, order, settings.batch_size, drop_single=True):
            if settings.augment:
                images, masks = random_d4(images, masks, generator)
            x = images.to(device)
            m = masks.to(device)
            valid = m != IGNORE
            target = (m == 1).float()
            if mode == "frozen":
                with torch.no_grad():
                    features = model.encoder(x)
            else:
                features = model.encoder(x)
            task = loss_fn(model.decode(features, region).float(), target, valid)
            loss = task
            kd = torch.zeros((), device=device)
            if teacher is not None and mode == "distill":
                with torch.no_grad():
                    t_features = teacher.encoder(x)
                    t_logits = {r: teacher.decode(t_features, r) for r in old}
                kd = torch.stack(
                    [
                        distillation_loss(
                            model.decode(features, r), t_logits[r], settings.temperature
                        )
                        for r in old
                    ]
                ).mean()
                loss = task + settings.distill_lambda * kd
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running["task"] += float(task.detach()) * len(images)
            running["distill"] += float(kd.detach()) * len(images)
            seen += len(images)
            done += 1
            if progress is not None:
                progress(min(1.0, done / total))
        vp = validate(model.view(region), data.valid, eval_batch, device, loss_fn)
        threshold = choose_threshold(vp, settings.threshold, metric) if val_has_slides else 0.5
        record = {
            "epoch": epoch + 1,
            "train_loss": running["task"] / max(seen, 1),
            "distill_loss": running["distill"] / max(seen, 1) if teacher is not None else None,
            **metrics_at(vp, threshold),
            "seconds": round(time.time() - t0, 2),
        }
        history.append(record)
        improved = selection.offer(record, vp, val_has_slides, model)
        kd_text = f", distill {record['distill_loss']:.4f}" if teacher is not None else ""
        if mode != settings.mode:
            kd_text += " (warm-up: new decoder only)"
        log(
            f"[{region}] epoch {epoch + 1}/{settings.epochs}: loss {record['train_loss']:.4f}"
            f"{kd_text}, valid F1 {record['f1']:.3f} IoU {record['iou']:.3f} "
            f"(threshold {threshold:.2f}){' *' if improved else ''} [{record['seconds']:.1f} s]"
        )
    if selection.state is not None:
        model.load_state_dict(selection.state)
    best = selection.best
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return RegionOutcome(
        metrics=dict(best["metrics"]),
        history=history,
        threshold=float(best["threshold"]),
        best_epoch=int(best["epoch"]),
        start_metrics=start_metrics,
    )


def data_record(request: ChipRequest, data: MappingData, seed: int) -> dict[str, Any]:
    """Where a region's data came from: enough to rebuild its validation chips."""
    spec, valid = request.train, request.valid
    return {
        "dataset_type": spec.kind,
        "train_images": spec.images,
        "train_masks": spec.masks or "",
        "label_polygons": spec.polygons or "",
        "valid_images": valid.images if valid else "",
        "valid_masks": (valid.masks or "") if valid else "",
        "label_mapping": asdict(spec.mapping),
        "band_indices": list(data.band_indices),
        "chip_size": int(request.chip_size),
        "stride": request.stride,
        "valid_fraction": request.valid_fraction,
        "seed": seed,
        "split": data.split.detail,
    }


def _mapping_from(value: Any) -> LabelMapping:
    if isinstance(value, LabelMapping):
        return value
    value = dict(value or {})
    color = value.get("mask_color")
    return LabelMapping(
        landslide=tuple(value["landslide"]) if value.get("landslide") is not None else None,
        ignore=tuple(value.get("ignore") or ()),
        mask_color=(int(color[0]), int(color[1]), int(color[2])) if color else None,
    )


def _eval_chips(spec: DatasetSpec, record: dict[str, Any], what: str) -> ChipDataset:
    """Every chip of a given validation dataset, with the region's bands and normalisation."""
    scenes = load_scenes(spec, what)
    n_bands = len(scenes[0].band_names)
    indices = [int(b) for b in record.get("band_indices") or range(1, n_bands + 1)]
    bad = [b for b in indices if not 1 <= b <= n_bands]
    if bad:
        raise InputError(
            f"The {what} images have {n_bands} band(s) but the region uses band(s) {indices}: "
            "give images with the region's bands."
        )
    size = int(record.get("tile_size") or (record.get("data") or {}).get("chip_size") or 256)
    largest = max(max(s.height, s.width) for s in scenes)
    size = min(size, -(-largest // 32) * 32)
    chips = make_chips(scenes, size, size, exclusive=True)
    return ChipDataset(
        scenes, chips, [b - 1 for b in indices], dict(record.get("normalisation") or {}), size
    )


def region_eval_data(
    region: str, record: dict[str, Any], given: dict[str, Any] | None = None
) -> tuple[ChipDataset, str]:
    """Labelled chips to measure ``region`` on, and where they come from.

    ``given`` (from OLD_REGION_DATA) names images and masks (every chip is
    used). Without it, the region's stored validation images are used, or its
    training data's validation split is rebuilt from the stored dataset,
    chip size, fraction and seed (and checked against the stored split).

    Raises:
        InputError: no usable data (missing files, split differs, nothing stored).
    """
    data = dict(record.get("data") or {})
    mapping = _mapping_from(data.get("label_mapping"))
    what = f"validation data of region '{region}'"
    if given:
        kind = str(given.get("dataset_type") or data.get("dataset_type") or "").lower()
        if given.get("landslide_values") or given.get("ignore_values") or given.get("mask_color"):
            mapping = LabelMapping(
                landslide=parse_values(given.get("landslide_values"), "landslide_values"),
                ignore=parse_values(given.get("ignore_values"), "ignore_values") or (),
                mask_color=parse_color(given.get("mask_color")),
            )
        spec = DatasetSpec(
            kind,
            str(given.get("images") or ""),
            given.get("masks") or None,
            given.get("label_polygons") or None,
            mapping,
        )
        return _eval_chips(spec, record, what), f"OLD_REGION_DATA ({spec.images})"
    kind = str(data.get("dataset_type") or "")
    if data.get("valid_images"):
        spec = DatasetSpec(
            kind,
            str(data["valid_images"]),
            data.get("valid_masks") or None,
            data.get("label_polygons") or None,
            mapping,
        )
        return _eval_chips(spec, record, what), f"stored validation images ({spec.images})"
    if not data.get("train_images") or kind not in DATASET_TYPES:
        raise InputError(
            f"The model does not record the data of region '{region}': give its validation "
            "data in OLD_REGION_DATA."
        )
    spec = DatasetSpec(
        kind,
        str(data["train_images"]),
        data.get("train_masks") or None,
        data.get("label_polygons") or None,
        mapping,
    )
    rebuilt = prepare_mapping_data(
        spec,
        None,
        chip_size=int(data.get("chip_size") or record.get("tile_size") or 256),
        stride=data.get("stride"),
        valid_fraction=float(data.get("valid_fraction") or 0.2),
        bands=data.get("band_indices") or record.get("band_indices"),
        normalisation="none",
        seed=int(data.get("seed") or 0),
    )
    stored = str(data.get("split") or "")
    if stored and rebuilt.split.detail != stored:
        raise InputError(
            f"The validation split of region '{region}' cannot be rebuilt (the training data "
            f"changed: now '{rebuilt.split.detail}'): give its validation data in "
            "OLD_REGION_DATA."
        )
    chips = ChipDataset(
        rebuilt.valid.scenes,
        rebuilt.valid.chips,
        rebuilt.valid.bands,
        dict(record.get("normalisation") or {}),
        rebuilt.chip_size,
    )
    return chips, f"validation split of its training data ({rebuilt.split.detail})"


def parse_old_region_data(value: Any, regions: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Parse OLD_REGION_DATA: region -> {images, masks, dataset_type, ...}.

    Accepts a JSON object (or dict) ``{"bijie": {"images": ..., "masks": ...}}``
    or a JSON list of objects with a ``region`` key. Keys are case-insensitive.

    Raises:
        InputError: not JSON, wrong structure, unknown region, no images.
    """
    if value in (None, "", {}, []):
        return {}
    parsed = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
    if isinstance(parsed, list):
        items = {}
        for item in parsed:
            if not isinstance(item, dict) or "region" not in {str(k).lower() for k in item}:
                parsed = None
                break
            low = {str(k).lower(): v for k, v in item.items()}
            items[str(low.pop("region"))] = low
        else:
            parsed = items
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise InputError(
            "OLD_REGION_DATA must be a JSON object such as "
            '{"bijie": {"images": "/data/bijie/valid/images", "masks": "/data/bijie/valid/masks"}} '
            f"(optional keys: dataset_type, label_polygons, landslide_values, ignore_values, "
            f"mask_color), got '{value}'."
        )
    out: dict[str, dict[str, Any]] = {}
    known = {"images", "masks", "dataset_type", "label_polygons"} | {
        "landslide_values",
        "ignore_values",
        "mask_color",
    }
    for region, spec in parsed.items():
        if region not in regions:
            raise InputError(
                f"OLD_REGION_DATA names the region '{region}', which the model does not have: "
                f"its regions are {', '.join(regions)}."
            )
        low = {str(k).lower(): v for k, v in spec.items()}
        unknown = sorted(set(low) - known)
        if unknown or not low.get("images"):
            raise InputError(
                f"OLD_REGION_DATA for region '{region}' needs 'images' (and 'masks'); "
                f"unknown key(s): {', '.join(unknown) or 'none'}."
            )
        out[str(region)] = low
    return out


def forgetting_table(
    before: dict[str, dict[str, Any] | None],
    after: dict[str, dict[str, Any] | None],
    new_region: str | None = None,
) -> list[dict[str, Any]]:
    """Rows ``region, f1_before, f1_after, f1_delta, iou_before, iou_after, iou_delta``.

    ``None`` where a value is not available (no data, or a new region without
    a starting decoder).
    """
    rows = []
    for region in after:
        b, a = before.get(region), after.get(region)
        row: dict[str, Any] = {"region": region, "new": region == new_region}
        for key in ("f1", "iou"):
            vb = None if b is None else float(b[key])
            va = None if a is None else float(a[key])
            row[f"{key}_before"] = vb
            row[f"{key}_after"] = va
            row[f"{key}_delta"] = None if vb is None or va is None else va - vb
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The forgetting table as aligned text."""

    def num(v: Any, signed: bool = False) -> str:
        if v is None:
            return "   -  "
        return f"{v:+.3f}" if signed else f"{v:.3f}"

    width = max([len("region")] + [len(str(r["region"])) + (6 if r["new"] else 0) for r in rows])
    lines = [
        f"{'region':<{width}}  F1 before  F1 after  F1 delta  IoU before  IoU after  IoU delta"
    ]
    for r in rows:
        name = f"{r['region']} (new)" if r["new"] else str(r["region"])
        lines.append(
            f"{name:<{width}}  {num(r['f1_before']):>9}  {num(r['f1_after']):>8}  "
            f"{num(r['f1_delta'], True):>8}  {num(r['iou_before']):>10}  "
            f"{num(r['iou_after']):>9}  {num(r['iou_delta'], True):>9}"
        )
    return "\n".join(lines)


def create_multiregion(
    region: str,
    data: MappingData,
    settings: TrainSettings,
    record: dict[str, Any],
    *,
    log: Log = print,
    progress: ProgressFn | None = None,
    warn: Log | None = None,
) -> tuple[MultiRegionModel, TrainOutcome]:
    """Train the encoder and the first region's decoder (no model yet).

    Trains an smp U-Net with :func:`slidewise.engine.mapping.train.train_model`
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
    model.provenance = {"first_region": region, "created_utc": _utc()}
    return model, outcome


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


KNOWN_PARAMS = DATA_PARAMS | {
    "MODEL",
    "REGION",
    "BASE_REGION",
    "REPLACE",
    "MODE",
    "INIT_FROM",
    "ENCODER",
    "ENCODER_DEPTH",
    "ENCODER_WEIGHTS",
    "EPOCHS",
    "LR",
    "BATCH_SIZE",
    "CHIPS_PER_EPOCH",
    "LOSS",
    "AUGMENT",
    "OVERSAMPLE",
    "LAMBDA",
    "TEMPERATURE",
    "ENCODER_LR_SCALE",
    "WARMUP_EPOCHS",
    "TRAIN_OLD_DECODERS",
    "SELECT_METRIC",
    "THRESHOLD",
    "PATIENCE",
    "OLD_REGION_DATA",
    "SEED",
    "OUTPUT",
}


def run_add_region(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Add a region's decoder to a multi-region model (or start one) and write it to OUTPUT.

    The old regions are measured before and after (the forgetting table: F1
    and IoU of the landslide class per region, at each region's stored
    threshold), in the log, the figures and the model metadata.

    Parameters (an empty value means the default):

    * MODEL (model file, optional): a multiregion model, or a mapping model
      (smp U-Net, from trainmapping) that is converted first, its region named
      BASE_REGION. Empty: a new model is trained (encoder and decoder) on the
      given data, which becomes its first region (MODE does not apply).
    * REGION (str, required): the new region's name (letters, digits, _, -,
      spaces; e.g. "bijie").
    * BASE_REGION (str, "base"): region name given to a converted mapping model.
    * REPLACE (bool, false): allow REGION to exist already: its decoder is
      retrained (by default starting from itself).
    * MODE (str, "frozen"): "frozen" (encoder and old decoders frozen, only the
      new decoder trained; old regions stay bit-identical) or "distill"
      (encoder fine-tuned, old decoders kept close to their previous outputs
      on the new images: learning without forgetting).
    * INIT_FROM (str, default region): region whose decoder the new decoder
      starts from, or "random". Default: the model's first region (REPLACE: the
      region itself).
    * DATASET_TYPE, TRAIN_IMAGES (required), TRAIN_MASKS, VALID_IMAGES,
      VALID_MASKS, VALID_FRACTION (0.2), LABEL_POLYGONS, LANDSLIDE_VALUES,
      IGNORE_VALUES, MASK_COLOR, BANDS, NORMALISATION ("fit"), CHIP_SIZE (256),
      STRIDE (CHIP_SIZE): the new region's data, exactly as in trainmapping.
      The number of bands must be the encoder's. The normalisation is the
      region's own (fitted on its training chips by default).
    * ENCODER (str, "resnet18"), ENCODER_DEPTH (int, 5), ENCODER_WEIGHTS
      (safetensors file, e.g. from pretrainencoder): only for a new model.
    * EPOCHS (int, 20): training epochs.
    * LR (float, 1e-3): Adam learning rate (new model: trainmapping's default recipe,
      AdamW with a cosine schedule).
    * BATCH_SIZE (int, 2): chips per batch (TSMU: 2).
    * CHIPS_PER_EPOCH (int, 0): chips drawn per epoch (0 = all training chips).
    * LOSS (str, "dice"): task loss: "dice" (TSMU's soft Dice), "dice_bce",
      "bce", "focal", "lovasz", "lovasz_bce".
    * AUGMENT (bool, true): random D4 flips and rotations.
    * OVERSAMPLE (float, 0.5): share of chips with landslides drawn per epoch.
    * LAMBDA (float, 1.0): weight of the distillation term (MODE distill;
      0 = plain fine-tuning of the encoder, the forgetting baseline).
    * TEMPERATURE (float, 2.0): distillation temperature (MODE distill).
    * ENCODER_LR_SCALE (float, 0.1): MODE distill: the encoder learns at LR
      times this.
    * WARMUP_EPOCHS (int, 0): MODE distill: first epochs that train the new
      decoder alone (LwF's warm-up); counted in EPOCHS.
    * TRAIN_OLD_DECODERS (bool, false): MODE distill: optimise the old
      decoders too (LwF's joint training) instead of keeping them fixed.
    * SELECT_METRIC (str, "f1"): "f1", "iou" or "mcc" of the new region's
      validation chips, for epoch selection and threshold tuning.
    * THRESHOLD (str, "auto"): the new region's threshold: "auto" (tuned on
      validation) or a probability.
    * PATIENCE (int, 0): early stopping patience in epochs (0 = off).
    * OLD_REGION_DATA (JSON, optional): validation data of old regions, e.g.
      {"bijie": {"images": "...", "masks": "...", "dataset_type": "pairs"}}
      (or a list of such objects with a "region" key; optional keys
      dataset_type, label_polygons, landslide_values, ignore_values,
      mask_color; default: the region's stored ones). Regions not named are
      measured on their stored validation data, or on the validation split of
      their stored training data when it can be rebuilt exactly; otherwise
      they are left out of the table with a warning.
    * SEED (int, runtime seed): seed of splits, sampling, augmentation, weights.
    * OUTPUT (file, required): the multiregion model file (.safetensors); may
      be MODEL itself (it is replaced atomically).

    Returns:
        OUTPUT = the model path; figures: the new region's validation metrics,
        the forgetting table (``forgetting``: one row per region) and per old
        region ``<region>_f1_before``/``_after``/``_delta``.
    """
    from slidewise.engine.core.runtime import apply, select_device

    check_known(params, KNOWN_PARAMS)
    require(params, "REGION", "TRAIN_IMAGES", "OUTPUT")
    check_writable(params["OUTPUT"])
    region = check_region_name(params["REGION"])
    seed = integer_param(params, "SEED", ctx.options.seed, 0, 2**31 - 1)
    apply(dc_replace(ctx.options, seed=seed))
    device = select_device(ctx.options.device)
    mode = choice(params, "MODE", MODES, "frozen")
    replace = to_bool(params.get("REPLACE", False), "REPLACE")
    epochs = integer_param(params, "EPOCHS", 20, 1, 100000)
    lr = number_param(params, "LR", 1e-3, 1e-7, 1.0)
    batch_size = integer_param(params, "BATCH_SIZE", 2, 1, 4096)
    chips_per_epoch = integer_param(params, "CHIPS_PER_EPOCH", 0, 0, 10**9)
    loss = choice(params, "LOSS", LOSSES, "dice")
    augment = to_bool(params.get("AUGMENT", True), "AUGMENT")
    oversample = number_param(params, "OVERSAMPLE", 0.5, 0.0, 0.95)
    lam = number_param(params, "LAMBDA", 1.0, 0.0, 1e4)
    temperature = number_param(params, "TEMPERATURE", 2.0, 0.05, 100.0)
    encoder_lr_scale = number_param(params, "ENCODER_LR_SCALE", 0.1, 0.0, 100.0)
    warmup_epochs = integer_param(params, "WARMUP_EPOCHS", 0, 0, 100000)
    train_old = to_bool(params.get("TRAIN_OLD_DECODERS", False), "TRAIN_OLD_DECODERS")
    select_metric = choice(params, "SELECT_METRIC", SELECT_METRICS, "f1")
    patience = integer_param(params, "PATIENCE", 0, 0, 100000)
    threshold = str(params.get("THRESHOLD") or "auto").strip().lower()
    if threshold != "auto":
        number_param({"THRESHOLD": threshold}, "THRESHOLD", 0.5, 0.0, 1.0)
    request = chip_request(params)
    model_path = str(params.get("MODEL") or "").strip()

    # The model (or nothing yet) and the old regions' evaluation data, before any training.
    model: MultiRegionModel | None = None
    old_data: dict[str, tuple[ChipDataset, str]] = {}
    if model_path:
        base_region = check_region_name(params.get("BASE_REGION") or DEFAULT_BASE_REGION)
        model, kind = load_or_convert(model_path, base_region)
        if kind == "mapping":
            ctx.log(
                f"Converted the mapping model '{Path(model_path).name}' into a multi-region "
                f"model with region '{base_region}'."
            )
        model.check_new(region, replace)
        given = parse_old_region_data(params.get("OLD_REGION_DATA"), model.regions)
        for r in model.regions:
            if r == region:
                continue
            try:
                old_data[r] = region_eval_data(r, model.record(r), given.get(r))
            except InputError as exc:
                if r in given:
                    raise
                ctx.warn(f"Region '{r}' is left out of the forgetting table: {exc}")
        init = str(params.get("INIT_FROM") or "").strip()
        if init.lower() == "random":
            init_from: str | None = None
        elif init:
            init_from = model.require(init)
        else:
            init_from = region if region in model.regions else model.regions[0]
    elif is_set(params, "OLD_REGION_DATA"):
        raise InputError("OLD_REGION_DATA needs MODEL: a new model has no old regions.")

    data = read_chips(request, seed, ctx, f"the data of region '{region}'")
    record: dict[str, Any] = {
        "bands": data.band_names,
        "band_indices": data.band_indices,
        "normalisation": data.normalisation,
        "tile_size": data.chip_size,
        "pixel_size": data.pixel_size,
        "data": data_record(request, data, seed),
    }
    training = {
        "job": "addregion",
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "chips_per_epoch": chips_per_epoch,
        "loss": loss,
        "augment": augment,
        "oversample": oversample,
        "select_metric": select_metric,
        "seed": seed,
        "device": str(device),
        "created_utc": _utc(),
    }
    figures: dict[str, Any] = {"region": region}

    if model is None:
        ctx.log(f"No MODEL: training a new model with region '{region}' (encoder and decoder).")
        if is_set(params, "MODE"):
            ctx.log("MODE does not apply to the first region: encoder and decoder are trained.")
        model = _create_from_params(params, region, data, record, training, device, ctx)
        validation = model.records[region]["metrics"]["validation"]
        figures.update(
            {f"valid_{k}": validation.get(k) for k in ("precision", "recall", "f1", "iou")}
        )
        figures["threshold"] = model.records[region]["threshold"]
        figures["regions"] = model.regions
    else:
        n_in = int(model.config.in_channels)
        if len(data.band_indices) != n_in:
            raise InputError(
                f"The data of region '{region}' have {len(data.band_indices)} band(s) "
                f"({', '.join(data.band_names)}) but the model's shared encoder takes {n_in}: "
                f"set BANDS to {n_in} bands of the images."
            )
        before = {
            r: region_metrics(
                model, r, ds, float(model.record(r).get("threshold", 0.5)), batch_size, device
            )
            for r, (ds, _) in old_data.items()
        }
        for r, (ds, source) in old_data.items():
            ctx.log(f"Region '{r}' is measured on {len(ds)} chips: {source}.")
        settings = RegionSettings(
            mode=mode,
            epochs=epochs,
            batch_size=batch_size,
            chips_per_epoch=chips_per_epoch,
            lr=lr,
            loss=loss,
            augment=augment,
            oversample=oversample,
            distill_lambda=lam,
            temperature=temperature,
            warmup_epochs=warmup_epochs,
            encoder_lr_scale=encoder_lr_scale,
            train_old_decoders=train_old,
            select_metric=select_metric,
            threshold=threshold,
            patience=patience,
            init_from=init_from,
            seed=seed,
            device=str(device),
        )
        ctx.log(
            f"Adding region '{region}' in {mode} mode (decoder from "
            f"{init_from or 'a random start'}): {loss} loss, Adam lr {lr:g}, {epochs} epochs, "
            f"batch {batch_size}"
            + (
                f", lambda {lam:g}, temperature {temperature:g}, encoder lr x"
                f"{encoder_lr_scale:g}, warm-up {warmup_epochs}, old decoders "
                f"{'trained' if train_old else 'fixed'}"
                if mode == "distill"
                else ""
            )
            + f", device {device}."
        )
        outcome = train_region(
            model, region, data, settings, replace=replace, log=ctx.log, progress=ctx.stage(3, 95)
        )
        after = {
            r: region_metrics(
                model, r, ds, float(model.record(r).get("threshold", 0.5)), batch_size, device
            )
            for r, (ds, _) in old_data.items()
        }
        before_all: dict[str, dict[str, Any] | None] = dict(before)
        after_all: dict[str, dict[str, Any] | None] = dict(after)
        for r in model.regions:
            if r != region and r not in old_data:
                before_all[r] = after_all[r] = None
        before_all[region] = outcome.start_metrics
        after_all[region] = outcome.metrics
        rows = forgetting_table(before_all, after_all, new_region=region)
        ctx.log("Forgetting table (landslide class, each region at its stored threshold):")
        for line in format_table(rows).splitlines():
            ctx.log(line)
        record.update(
            threshold=outcome.threshold,
            metrics={"validation": outcome.metrics, "history": outcome.history},
            training={
                **training,
                "mode": mode,
                "init_from": init_from,
                "lambda": lam if mode == "distill" else None,
                "temperature": temperature if mode == "distill" else None,
                "encoder_lr_scale": encoder_lr_scale if mode == "distill" else None,
                "warmup_epochs": warmup_epochs if mode == "distill" else None,
                "train_old_decoders": train_old if mode == "distill" else None,
                "best_epoch": outcome.best_epoch,
                "model": model_path,
            },
        )
        model.records[region] = record
        model.events.append(
            {
                "region": region,
                "mode": mode,
                "replace": replace,
                "utc": _utc(),
                "forgetting": rows,
                "measured_on": {r: source for r, (_, source) in old_data.items()},
            }
        )
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
    save_multiregion(params["OUTPUT"], model.cpu())
    ctx.log(f"Model with regions {', '.join(model.regions)} written to {params['OUTPUT']}.")
    inputs = [str(params["TRAIN_IMAGES"])]
    for name in ("MODEL", "TRAIN_MASKS", "VALID_IMAGES", "VALID_MASKS", "LABEL_POLYGONS"):
        if is_set(params, name):
            inputs.append(str(params[name]))
    return JobResult(
        outputs={"OUTPUT": str(params["OUTPUT"])},
        figures=figures,
        inputs=inputs,
        device=device.type,
    )


def _create_from_params(
    params: dict[str, Any],
    region: str,
    data: MappingData,
    record: dict[str, Any],
    training: dict[str, Any],
    device: torch.device,
    ctx: JobContext,
) -> MultiRegionModel:
    """Train a new model (first region) with trainmapping's default recipe and our overrides."""
    encoder = str(params.get("ENCODER") or "resnet18").strip()
    depth = integer_param(params, "ENCODER_DEPTH", 5, 3, 5)
    weights = str(params["ENCODER_WEIGHTS"]) if is_set(params, "ENCODER_WEIGHTS") else None
    if weights and not Path(weights).is_file():
        raise InputError(f"The encoder weights file '{weights}' does not exist: check the path.")
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
        in_channels=len(data.band_indices),
        encoder_depth=depth,
        extra={"decoder_channels": DEFAULT_DECODER_CHANNELS[:depth]},
    )
    settings = TrainSettings(
        recipe=recipe,
        model=config,
        encoder_weights=weights,
        epochs=training["epochs"],
        batch_size=training["batch_size"],
        chips_per_epoch=training["chips_per_epoch"],
        patience=integer_param(params, "PATIENCE", 0, 0, 100000),
        select_metric=training["select_metric"],
        threshold=str(params.get("THRESHOLD") or "auto").strip().lower(),
        seed=training["seed"],
        device=str(device),
    )
    ctx.log(
        f"New U-Net / {encoder} (depth {depth}): {recipe.loss} loss, {recipe.optimizer} lr "
        f"{recipe.lr:g} ({recipe.schedule}), {settings.epochs} epochs, batch "
        f"{settings.batch_size}."
    )
    model, outcome = create_multiregion(
        region,
        data,
        settings,
        record,
        log=ctx.log,
        progress=ctx.stage(3, 95),
        warn=ctx.warn,
    )
    model.records[region]["training"] = {
        **training,
        "mode": "first region (encoder and decoder trained)",
        "encoder": encoder,
        "encoder_weights": weights or "",
        "recipe": asdict(recipe),
        "best_epoch": outcome.best_epoch,
    }
    return model
