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

Learning curve: ``--eval-every N`` scores each Faster R-CNN on the test folder
before the first optimiser step, every N steps and after the last one, all
within the one training run (the learning-rate schedule is that of the whole
run); each model's entry then holds ``"curve": [{"step", "images", "map50",
"map", "train_s"}, ...]`` (``train_s`` excludes the curve's own evaluations,
which are reported as ``curve_eval_s``), and ``--curve-png FILE`` plots it
with the seed's GPU anchor (:data:`SEED_ANCHOR_MAP50`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MODELS = ("frcnn_resnet18_fpn_scratch", "frcnn_resnet18_fpn_mae", "seg_boxes_default")
DEFAULT_EPOCHS = 10
#: Smallest connected component (pixels) that becomes a box on the segmentation route.
SEG_MIN_AREA = 16
#: The seed study's best test mAP@0.5 (Faster R-CNN, MAE pre-trained Swin-B, GPU).
SEED_ANCHOR_MAP50 = 0.377


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


class TestCurve:
    """Scores the model being trained on the test images at each checkpoint.

    Attributes:
        test: The test images.
        bands: 0-based bands fed to the model.
        fill: Per-band fill value (the detector's band means).
        device: Torch device name.
        batch_size: Images per training step (``images`` = ``step * batch_size``).
        on_point: Called with the curve after each new point (to save it as it grows).
        points: The curve so far.
        eval_seconds: Time spent in these evaluations.
    """

    def __init__(
        self,
        test: Any,
        bands: list[int],
        fill: list[float],
        device: str,
        batch_size: int,
        on_point: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.test, self.bands, self.fill = test, bands, fill
        self.device, self.batch_size, self.on_point = device, batch_size, on_point
        self.points: list[dict[str, Any]] = []
        self.eval_seconds = 0.0
        self.started = time.time()

    def __call__(self, step: int, model: Any) -> None:
        from slidewise.engine.detection.train import evaluate_detector

        t0 = time.time()
        train_s = t0 - self.started - self.eval_seconds
        metrics = evaluate_detector(model, self.test.samples, self.bands, self.fill, self.device)
        self.eval_seconds += time.time() - t0
        point = {"step": step, "images": step * self.batch_size, **_entry(metrics, train_s)}
        self.points.append(point)
        print(
            f"[curve] step {step}: test mAP@0.5 {point['map50']:.4f}, mAP {point['map']:.4f} "
            f"(train {point['train_s']:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        if self.on_point is not None:
            self.on_point(self.points)


def save_partial_curve(name: str, points: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Write the curve so far to ``--json`` (and ``--curve-png``), marked ``"partial": true``.

    A run stopped by a time limit (the GPU session's ``timeout``) still leaves
    its curve; the finished run overwrites both files with the whole document.
    """
    keys = ("epochs", "batch_size", "image_size", "seed", "device", "eval_every")
    doc = {
        "partial": True,
        "models": {name: {"map50": None, "map": None, "train_s": None, "curve": points}},
        "settings": {k: getattr(args, k) for k in keys},
    }
    args.json.write_text(json.dumps(doc, indent=2))
    if args.curve_png is not None:
        write_curve_png(doc, args.curve_png)


def write_curve_png(doc: dict[str, Any], path: Path) -> None:
    """Plot the learning curves of a benchmark document (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, m in doc["models"].items():
        curve = m.get("curve") or []
        steps = [p["step"] for p in curve]
        ax.plot(steps, [p["map50"] for p in curve], "o-", label=f"{name} mAP@0.5")
        ax.plot(steps, [p["map"] for p in curve], "s--", label=f"{name} mAP@0.5:0.95")
    ax.axhline(SEED_ANCHOR_MAP50, color="grey", ls=":", label="seed anchor mAP@0.5 (Swin-B, GPU)")
    s = doc["settings"]
    ax.set_xlabel(f"training steps (batch {s['batch_size']}, {s['image_size'] or 'auto'} px)")
    ax.set_ylabel("test score")
    scores = [p["map50"] or 0.0 for m in doc["models"].values() for p in m.get("curve") or []]
    ax.set_ylim(0, max([0.45, *scores]) * 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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
    curve = TestCurve(
        test,
        bands,
        config.image_mean,
        args.device,
        args.batch_size,
        on_point=lambda points: save_partial_curve(name, points, args),
    )
    settings = DetTrainSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        bands=bands,
        checkpoint_every=args.eval_every,
        on_checkpoint=curve if args.eval_every > 0 else None,
    )
    outcome = train_detector(
        train, valid, config, settings, BackboneStart(state=encoder_state), log=_log(name)
    )
    last = curve.points[-1] if curve.points else None
    total = args.epochs * math.ceil(len(train) / args.batch_size)
    if last is not None and last["step"] == total and outcome.best_epoch == args.epochs:
        metrics = last  # the selected weights are the final ones, just scored on the test images
    else:
        metrics = evaluate_detector(
            outcome.model, test.samples, bands, config.image_mean, args.device
        )
    extra: dict[str, Any] = {}
    if curve.points:
        extra = {"curve": curve.points, "curve_eval_s": round(curve.eval_seconds, 1)}
    return _entry(
        metrics,
        outcome.seconds - curve.eval_seconds + extra_seconds,
        valid_map50=outcome.metrics.get("map50"),
        best_epoch=outcome.best_epoch,
        **extra,
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
            "eval_every": args.eval_every,
            "torch_threads": _torch_threads(),
        },
    }


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


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
    parser.add_argument(
        "--eval-every", type=int, default=0, help="learning curve: test every N steps, 0 = off"
    )
    parser.add_argument("--curve-png", type=Path, default=None, help="plot of the curve (PNG)")
    args = parser.parse_args(argv)
    if args.curve_png is not None and args.eval_every <= 0:
        parser.error("--curve-png needs --eval-every N (N > 0)")
    doc = run_benchmark(args)
    args.json.write_text(json.dumps(doc, indent=2))
    if args.curve_png is not None:
        write_curve_png(doc, args.curve_png)
    print(_table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
