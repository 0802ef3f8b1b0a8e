"""Landslide-mapping accuracy: the L4S baseline recipe against the engine default.

Usage::

    python -m slidewise.bench.mapping_accuracy --train-images DIR --train-masks DIR \\
        --test-images DIR --test-masks DIR --json OUT [--epochs E] [--seed S]

Both recipes (:data:`slidewise.engine.mapping.recipes.RECIPES`) are trained on the
same image/mask pairs (Bijie format: RGB images, masks 0/1, 0/255 or coloured)
with the ``trainmapping`` job. Each job splits its validation images off the
training folders (whole images, :func:`slidewise.engine.imagery.splits.spatial_split`)
for epoch and threshold selection; the test folders are only used for the
final scores. The JSON holds the landslide-class figures on the test pairs::

    {"recipes": {"l4s_baseline": {"f1", "precision", "recall", "iou"},
                 "default": {...}}}

To fit a 2-core CPU in 15 minutes, images are downscaled by :data:`SCALE`
(area averaging; masks: nearest after decoding) before training, each recipe
trains :data:`DEFAULT_EPOCHS` epochs of :data:`CHIPS_PER_EPOCH` chips of
:data:`CHIP_SIZE` pixels, and test predictions are made at that scale and
upsampled (bilinear probabilities) to the original mask size, where the pixels
are counted. Everything else is each recipe's own setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Default training epochs of each recipe.
DEFAULT_EPOCHS = 10
#: Chips drawn per epoch (of about 30 from 14 training images at half scale).
CHIPS_PER_EPOCH = 24
#: Downscaling factor applied to the pairs before training and prediction.
SCALE = 0.5
#: Training chip side (pixels, after downscaling).
CHIP_SIZE = 256
#: Chips per batch (both recipes).
BATCH_SIZE = 8


def write_scaled(pairs: list[tuple[Path, Path]], out: Path, scale: float) -> tuple[Path, Path]:
    """Write downscaled images and 0/255 masks (decoded first) to ``out``."""
    from PIL import Image

    from slidewise.engine.imagery.labels import IGNORE, LabelMapping, decode_mask
    from slidewise.engine.imagery.scenes import read_picture

    img_dir, msk_dir = out / "images", out / "masks"
    img_dir.mkdir(parents=True)
    msk_dir.mkdir(parents=True)
    for image, mask in pairs:
        with Image.open(image) as im:
            rgb = im.convert("RGB")
            size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
            rgb.resize(size, Image.Resampling.BOX).save(img_dir / f"{image.stem}.png")
        labels = decode_mask(read_picture(mask, "mask"), LabelMapping(), f"mask '{mask.name}'")
        if np.any(labels == IGNORE):
            raise SystemExit(f"{mask.name}: masks with ignored pixels are not supported here")
        small = Image.fromarray((labels * 255).astype(np.uint8)).resize(
            size, Image.Resampling.NEAREST
        )
        small.save(msk_dir / f"{image.stem}.png")
    return img_dir, msk_dir


class LogStream:
    """Protocol stream that prints log lines (with a prefix) and drops progress."""

    def __init__(self, prefix: str, verbose: bool) -> None:
        self.prefix, self.verbose = prefix, verbose

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if not line.strip():
                continue
            msg = json.loads(line)
            if msg.get("type") == "log" and self.verbose:
                print(f"[{self.prefix}] {msg['message']}", file=sys.stderr, flush=True)

    def flush(self) -> None:
        pass


def evaluate_pairs(
    model_path: Path, pairs: list[tuple[Path, Path]], scale: float
) -> dict[str, float]:
    """Landslide-class figures of a model on full-resolution test pairs."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from PIL import Image

    from slidewise.engine.imagery.labels import IGNORE, LabelMapping, decode_mask
    from slidewise.engine.imagery.scenes import PairScene, read_picture
    from slidewise.engine.imagery.segmetrics import Confusion
    from slidewise.engine.imagery.segmodels import load_mapping_model
    from slidewise.engine.mapping.validation import predict_scene

    model, meta = load_mapping_model(model_path)
    bands = [b - 1 for b in meta.extra.get("band_indices", [1, 2, 3])]
    threshold = float(meta.extra.get("threshold", 0.5))
    total = Confusion()
    with tempfile.TemporaryDirectory(prefix="slidewise-bench-") as tmp:
        for image, mask in pairs:
            truth = decode_mask(read_picture(mask, "mask"), LabelMapping(), mask.name)
            with Image.open(image) as im:
                rgb = im.convert("RGB")
                size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
                small = Path(tmp) / f"{image.stem}.png"
                rgb.resize(size, Image.Resampling.BOX).save(small)
            window = int(meta.tile_size or 256)
            prob = predict_scene(
                model,
                PairScene(small, None, LabelMapping()),
                bands,
                meta.normalisation,
                window=window,
                overlap=window // 2,
            )
            full = F.interpolate(
                torch.from_numpy(np.nan_to_num(prob))[None, None],
                size=truth.shape,
                mode="bilinear",
                align_corners=False,
            )[0, 0].numpy()
            total.update(full >= threshold, truth == 1, truth != IGNORE)
    return {"f1": total.f1, "precision": total.precision, "recall": total.recall, "iou": total.iou}


@dataclass(frozen=True)
class AccuracySettings:
    """How every recipe of the benchmark is trained.

    Attributes:
        epochs: Training epochs of each recipe.
        seed: Seed of every job.
        scale: Downscaling factor of the pairs.
        chip_size: Training chip side (pixels, after downscaling).
        batch_size: Chips per batch.
        chips_per_epoch: Chips drawn per epoch.
        recipes: The recipes trained, in order.
        overrides: Recipe -> extra trainmapping parameters.
        verbose: Print the jobs' log lines.
    """

    epochs: int = DEFAULT_EPOCHS
    seed: int = 0
    scale: float = SCALE
    chip_size: int = CHIP_SIZE
    batch_size: int = BATCH_SIZE
    chips_per_epoch: int = CHIPS_PER_EPOCH
    recipes: tuple[str, ...] = ("l4s_baseline", "default")
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    verbose: bool = True


def run_benchmark(
    train_images: str,
    train_masks: str,
    test_images: str,
    test_masks: str,
    settings: AccuracySettings | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Train every recipe on the training pairs and score it on the test pairs.

    Returns:
        ``({"recipes": {name: figures}}, {name: training seconds})``.
    """
    from slidewise.engine.imagery.datasets import discover_pairs

    settings = settings or AccuracySettings()
    train_pairs = discover_pairs(train_images, train_masks)
    test_pairs = discover_pairs(test_images, test_masks)
    results: dict[str, Any] = {"recipes": {}}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="slidewise-bench-") as tmp:
        folders = write_scaled(train_pairs, Path(tmp) / "train", settings.scale)
        for name in settings.recipes:
            t0 = time.time()
            model = train_recipe(name, folders, Path(tmp) / f"{name}.safetensors", settings)
            results["recipes"][name] = evaluate_pairs(model, test_pairs, settings.scale)
            seconds[name] = time.time() - t0
    return results, seconds


def train_recipe(
    name: str, folders: tuple[Path, Path], output: Path, settings: AccuracySettings
) -> Path:
    """Run the trainmapping job with recipe ``name`` on the scaled pairs; the model file."""
    from slidewise.engine.core.job import JobContext
    from slidewise.engine.core.protocol import Reporter
    from slidewise.engine.core.runtime import RuntimeOptions
    from slidewise.engine.mapping.train import run_train

    params: dict[str, Any] = {
        "DATASET_TYPE": "pairs",
        "TRAIN_IMAGES": str(folders[0]),
        "TRAIN_MASKS": str(folders[1]),
        "RECIPE": name,
        "EPOCHS": settings.epochs,
        "BATCH_SIZE": settings.batch_size,
        "CHIPS_PER_EPOCH": settings.chips_per_epoch,
        "CHIP_SIZE": settings.chip_size,
        "SEED": settings.seed,
        "OUTPUT": str(output),
    }
    params.update(settings.overrides.get(name, {}))
    ctx = JobContext(
        name="trainmapping",
        options=RuntimeOptions(device="cpu", seed=settings.seed),
        reporter=Reporter(LogStream(name, settings.verbose)),  # type: ignore[arg-type]
    )
    run_train(params, ctx)
    return output


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-images", required=True)
    parser.add_argument("--train-masks", required=True)
    parser.add_argument("--test-images", required=True)
    parser.add_argument("--test-masks", required=True)
    parser.add_argument("--json", required=True, help="output JSON file")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.time()
    results, seconds = run_benchmark(
        args.train_images,
        args.train_masks,
        args.test_images,
        args.test_masks,
        AccuracySettings(epochs=args.epochs, seed=args.seed),
    )
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'recipe':<14} {'precision':>9} {'recall':>7} {'F1':>7} {'IoU':>7} {'seconds':>8}")
    for name, fig in results["recipes"].items():
        print(
            f"{name:<14} {fig['precision']:9.4f} {fig['recall']:7.4f} {fig['f1']:7.4f} "
            f"{fig['iou']:7.4f} {seconds[name]:8.1f}"
        )
    print(f"total wall time {time.time() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
