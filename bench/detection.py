"""Landslide detection: Faster R-CNN from scratch, with MAE pre-training, and boxes
from a segmentation model.

Usage::

    python -m slidewise.bench.detection --train DIR --val DIR --test DIR --json OUT \\
        [--epochs E] [--max-train-images N] [--seed S]

``--train``, ``--val`` and ``--test`` are Pascal VOC folders (image + .xml).
Every model is trained on the training folder (the same seeded subset of at
most N images), selected on the validation folder, and scored on the test
folder with COCO mAP (IoU 0.50:0.95) and mAP@0.5
(:func:`slidewise.engine.detection.metrics.detection_map`). The JSON is::

    {"models": {NAME: {"map50", "map", "train_s"}, ...}, "settings": {...}}

Models:

* ``frcnn_resnet18_fpn_scratch``: Faster R-CNN with a ResNet-18 feature
  pyramid (:mod:`slidewise.engine.detection.models`), random start.
* ``frcnn_resnet18_fpn_mae``: the same, its backbone body initialised by the
  engine's MAE pre-training (:func:`slidewise.engine.detection.pretrain.pretrain_encoder`,
  imported when this entry runs) on the training images, loaded strictly;
  ``train_s`` includes the pre-training. When the pre-training module is not
  available, the entry holds ``null`` figures and an ``error``.
* ``seg_boxes_default``: the engine's default segmentation recipe
  (:data:`slidewise.engine.mapping.train.RECIPES` ``"default"``) trained with
  the ``trainmapping`` job on masks painted from the training boxes; on test
  images, pixels at the model's threshold are grouped into connected
  components whose boxes score their mean probability
  (:func:`slidewise.engine.detection.apply.segmentation_boxes`).

Extra options (not part of the stable interface): ``--image-size`` (detector
resize target, 0 = auto), ``--max-val-images``, ``--batch-size``,
``--pretrain-epochs``, ``--models`` (comma-separated subset).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MODELS = ("frcnn_resnet18_fpn_scratch", "frcnn_resnet18_fpn_mae", "seg_boxes_default")
DEFAULT_EPOCHS = 10
#: Smallest connected component (pixels) that becomes a box on the segmentation route.
SEG_MIN_AREA = 16


class LogStream:
    """Protocol stream that prints log lines with a prefix and drops the rest."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                msg = json.loads(line)
                if msg.get("type") == "log":
                    print(f"[{self.prefix}] {msg['message']}", file=sys.stderr, flush=True)

    def flush(self) -> None:
        pass


def _log(prefix: str) -> Any:
    return lambda message: print(f"[{prefix}] {message}", file=sys.stderr, flush=True)


def _entry(metrics: dict[str, Any], seconds: float, **extra: Any) -> dict[str, Any]:
    def num(v: Any) -> float | None:
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    return {
        "map50": num(metrics.get("map50")),
        "map": num(metrics.get("map")),
        "train_s": round(seconds, 1),
        **extra,
    }


def _train_frcnn(
    name: str,
    train: Any,
    valid: Any,
    test: Any,
    args: argparse.Namespace,
    encoder_state: Any = None,
    extra_seconds: float = 0.0,
) -> dict[str, Any]:
    from slidewise.engine.detection.train import (
        BackboneStart,
        DetTrainSettings,
        evaluate_detector,
        make_config,
        train_detector,
    )

    bands = list(range(len(train.band_names)))
    config, _ = make_config(train, "resnet18", bands, args.image_size, 5, args.seed)
    settings = DetTrainSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        bands=bands,
    )
    outcome = train_detector(
        train, valid, config, settings, BackboneStart(state=encoder_state), log=_log(name)
    )
    metrics = evaluate_detector(outcome.model, test.samples, bands, config.image_mean, args.device)
    return _entry(
        metrics,
        outcome.seconds + extra_seconds,
        valid_map50=outcome.metrics.get("map50"),
        best_epoch=outcome.best_epoch,
    )


def _pretrain(train: Any, args: argparse.Namespace) -> tuple[Any, float]:
    """MAE pre-training of a ResNet-18 encoder on the training images (engine.pretrain).

    The images are normalised with the detector's band statistics (fitted on
    the same training images), so that the encoder sees what the detector feeds it.
    """
    from slidewise.engine.detection.data import DetectionDataset
    from slidewise.engine.detection.pretrain import (  # imported lazily: optional module
        InMemoryImages,
        pretrain_encoder,
    )
    from slidewise.engine.detection.pretraining import PretrainSettings
    from slidewise.engine.detection.train import make_config

    bands = list(range(len(train.band_names)))
    config, _ = make_config(train, "resnet18", bands, args.image_size, 5, args.seed)
    images = DetectionDataset(train.samples, bands, config.image_mean)
    t0 = time.time()
    settings = PretrainSettings(
        backbone="resnet18",
        epochs=args.pretrain_epochs or args.epochs,
        seed=args.seed,
        device=args.device,
    )
    layout = InMemoryImages(
        len(bands), normalisation={"mean": config.image_mean, "std": config.image_std}
    )
    state = pretrain_encoder(images, settings, layout, log=_log("mae"))
    return state, time.time() - t0


def _write_box_masks(samples: list[Any], root: Path) -> tuple[Path, Path]:
    """Image links and 0/255 masks with the boxes painted, for the mapping job."""
    from PIL import Image

    img_dir, msk_dir = root / "images", root / "masks"
    img_dir.mkdir(parents=True)
    msk_dir.mkdir(parents=True)
    for k, s in enumerate(samples):
        stem = f"img{k:05d}"
        (img_dir / f"{stem}{s.image.suffix.lower()}").symlink_to(s.image.resolve())
        mask = np.zeros((s.height, s.width), np.uint8)
        for x1, y1, x2, y2 in np.asarray(s.boxes):
            mask[math.floor(y1) : math.ceil(y2), math.floor(x1) : math.ceil(x2)] = 255
        Image.fromarray(mask).save(msk_dir / f"{stem}.png")
    return img_dir, msk_dir


def _seg_boxes(train: Any, valid: Any, test: Any, args: argparse.Namespace) -> dict[str, Any]:
    from slidewise.engine.core.job import JobContext
    from slidewise.engine.core.protocol import Reporter
    from slidewise.engine.core.runtime import RuntimeOptions
    from slidewise.engine.detection.apply import segmentation_boxes
    from slidewise.engine.detection.data import read_image
    from slidewise.engine.detection.metrics import detection_map
    from slidewise.engine.imagery.segmodels import load_mapping_model
    from slidewise.engine.imagery.tiling import predict_whole_image
    from slidewise.engine.mapping.train import run_train

    with tempfile.TemporaryDirectory(prefix="slidewise-detbench-") as tmp:
        root = Path(tmp)
        ti, tm = _write_box_masks(train.samples, root / "train")
        vi, vm = _write_box_masks(valid.samples, root / "valid")
        model_path = root / "seg.safetensors"
        side = int(np.median([min(s.width, s.height) for s in train.samples]))
        ctx = JobContext(
            "trainmapping",
            RuntimeOptions(device=args.device, seed=args.seed),
            Reporter(LogStream("seg")),  # type: ignore[arg-type]
        )
        t0 = time.time()
        run_train(
            {
                "DATASET_TYPE": "pairs",
                "TRAIN_IMAGES": str(ti),
                "TRAIN_MASKS": str(tm),
                "VALID_IMAGES": str(vi),
                "VALID_MASKS": str(vm),
                "RECIPE": "default",
                "EPOCHS": args.epochs,
                "CHIP_SIZE": side,
                "SEED": args.seed,
                "OUTPUT": str(model_path),
            },
            ctx,
        )
        seconds = time.time() - t0
        model, meta = load_mapping_model(model_path, device=args.device)
    bands = [b - 1 for b in meta.extra.get("band_indices", [1, 2, 3])]
    threshold = float(meta.extra.get("threshold", 0.5))
    det_boxes, det_scores = [], []
    for s in test.samples:
        prob = predict_whole_image(
            model, read_image(s.image, bands), normalisation=meta.normalisation
        )
        b, sc, _ = segmentation_boxes(prob, threshold, SEG_MIN_AREA)
        det_boxes.append(b)
        det_scores.append(sc)
    metrics = detection_map(
        [s.boxes for s in test.samples],
        det_boxes,
        det_scores,
        [(s.width, s.height) for s in test.samples],
    )
    return _entry(
        metrics,
        seconds,
        threshold=threshold,
        valid_f1=(meta.metrics.get("validation") or {}).get("f1"),
    )


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Train and score the chosen models; returns the JSON document."""
    from slidewise.engine.core.runtime import seed_everything
    from slidewise.engine.detection.annotations import read_voc
    from slidewise.engine.detection.train import subsample

    seed_everything(args.seed)
    train = subsample(read_voc(args.train), args.max_train_images, args.seed)
    valid = subsample(read_voc(args.val), args.max_val_images, args.seed + 1)
    test = read_voc(args.test)
    chosen = [m.strip() for m in args.models.split(",")] if args.models else list(MODELS)
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}: choose from {', '.join(MODELS)}")
    models: dict[str, Any] = {}
    for name in chosen:
        print(f"--- {name}", file=sys.stderr, flush=True)
        if name == "frcnn_resnet18_fpn_scratch":
            models[name] = _train_frcnn(name, train, valid, test, args)
        elif name == "frcnn_resnet18_fpn_mae":
            try:
                state, pre_s = _pretrain(train, args)
            except ImportError as exc:
                models[name] = {
                    "map50": None,
                    "map": None,
                    "train_s": None,
                    "error": f"MAE pre-training is not available ({exc})",
                }
                continue
            models[name] = _train_frcnn(
                name, train, valid, test, args, encoder_state=state, extra_seconds=pre_s
            )
            models[name]["pretrain_s"] = round(pre_s, 1)
        else:
            models[name] = _seg_boxes(train, valid, test, args)
    return {
        "models": models,
        "settings": {
            "train": str(args.train),
            "val": str(args.val),
            "test": str(args.test),
            "train_images": len(train),
            "train_boxes": train.n_boxes,
            "val_images": len(valid),
            "test_images": len(test),
            "test_boxes": test.n_boxes,
            "epochs": args.epochs,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "device": args.device,
        },
    }


def _table(doc: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}"

    lines = [f"{'model':<30} {'mAP@0.5':>8} {'mAP':>8} {'train_s':>9}"]
    for name, m in doc["models"].items():
        t = "-" if m.get("train_s") is None else f"{m['train_s']:.0f}"
        lines.append(f"{name:<30} {fmt(m.get('map50')):>8} {fmt(m.get('map')):>8} {t:>9}")
        if m.get("error"):
            lines.append(f"    {m['error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m slidewise.bench.detection``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, type=Path, help="training VOC folder")
    parser.add_argument("--val", required=True, type=Path, help="validation VOC folder")
    parser.add_argument("--test", required=True, type=Path, help="test VOC folder")
    parser.add_argument("--json", required=True, type=Path, help="output JSON")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--max-train-images", type=int, default=0, help="0 = all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-val-images", type=int, default=0, help="0 = all")
    parser.add_argument("--image-size", type=int, default=0, help="detector resize, 0 = auto")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--pretrain-epochs", type=int, default=0, help="0 = --epochs")
    parser.add_argument("--models", default="", help="comma-separated subset of the models")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    doc = run_benchmark(args)
    args.json.write_text(json.dumps(doc, indent=2))
    print(_table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
