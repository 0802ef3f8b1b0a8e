"""Landslide-mapping accuracy: the L4S baseline recipe against the engine default.

Usage::

    python -m slidewise.bench.mapping_accuracy --train-images DIR --train-masks DIR \\
        --test-images DIR --test-masks DIR --json OUT [--epochs E] [--seed S]

    # leave-one-region-out: train on every region but one, test on that one
    python -m slidewise.bench.mapping_accuracy --loro \\
        --region bijie=IMAGES,MASKS[,R:G:B] --region sichuan=IMAGES,MASKS[,R:G:B] \\
        --json OUT [--seeds 0,1,2,3,4] [--recipes default,l4s_baseline] \\
        [--variant LABEL=RECIPE;KEY=VALUE;...]

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
are counted. Everything else is each recipe's own setting. Test images are
predicted as *Map landslides* maps a raster on the CPU (its tiled predictor and
default tile for the model, :func:`evaluate_pairs`), so the scores are those of
the product's maps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
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


def write_scaled(
    pairs: list[tuple[Path, Path]],
    out: Path,
    scale: float,
    mapping: Any = None,
    prefix: str = "",
) -> tuple[Path, Path]:
    """Write downscaled images and 0/255 masks (decoded first) to ``out``.

    Args:
        pairs: Image and mask files.
        out: Folder that receives ``images/`` and ``masks/`` (may already hold others).
        scale: Downscaling factor.
        mapping: How mask values decode (a ``LabelMapping``; default: detect).
        prefix: Put before every file name (several regions in one folder).
    """
    from PIL import Image

    from slidewise.engine.imagery.labels import IGNORE, LabelMapping, decode_mask
    from slidewise.engine.imagery.scenes import read_picture

    mapping = mapping or LabelMapping()
    img_dir, msk_dir = out / "images", out / "masks"
    img_dir.mkdir(parents=True, exist_ok=True)
    msk_dir.mkdir(parents=True, exist_ok=True)
    for image, mask in pairs:
        with Image.open(image) as im:
            rgb = im.convert("RGB")
            size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
            rgb.resize(size, Image.Resampling.BOX).save(img_dir / f"{prefix}{image.stem}.png")
        labels = decode_mask(read_picture(mask, "mask"), mapping, f"mask '{mask.name}'")
        if np.any(labels == IGNORE):
            raise SystemExit(f"{mask.name}: masks with ignored pixels are not supported here")
        small = Image.fromarray((labels * 255).astype(np.uint8)).resize(
            size, Image.Resampling.NEAREST
        )
        small.save(msk_dir / f"{prefix}{image.stem}.png")
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
    model_path: Path,
    pairs: list[tuple[Path, Path]],
    scale: float,
    mapping: Any = None,
    threshold: float | None = None,
    rule: str = "expected_f1",
) -> dict[str, float]:
    """Landslide-class figures of a model on full-resolution test pairs.

    The images are predicted as *Map landslides* maps them (:func:`predicted_pairs`).
    ``mapping`` (a ``LabelMapping``) decodes the masks; default: detect.
    ``threshold``: cut the probability there instead of as *Map landslides* does
    by default (THRESHOLD_RULE ``expected_f1``: each image, a raster of its own,
    at the best expected F1 of its probabilities when the model is calibrated;
    else the model's stored threshold). ``rule="stored"``: the stored threshold.
    """
    from slidewise.engine.imagery.labels import IGNORE
    from slidewise.engine.imagery.scene_threshold import default_threshold
    from slidewise.engine.imagery.segmetrics import Confusion
    from slidewise.engine.imagery.segmodels import load_mapping_model

    model, meta = load_mapping_model(model_path)
    if threshold is None and rule == "stored":
        threshold = float(meta.extra.get("threshold", 0.5))
    total = Confusion()
    for prob, truth in predicted_pairs(model, meta, pairs, scale, mapping):
        cut = threshold if threshold is not None else default_threshold(prob, meta.extra)
        total.update(prob >= cut, truth == 1, truth != IGNORE)
    return {"f1": total.f1, "precision": total.precision, "recall": total.recall, "iou": total.iou}


def predicted_pairs(
    model: Any, meta: Any, pairs: list[tuple[Path, Path]], scale: float, mapping: Any = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each pair's landslide probability (at the mask's size) and its decoded mask.

    Each downscaled image is predicted as *Map landslides* maps a raster on the
    CPU: :func:`slidewise.engine.imagery.tiling.predict_raster` reading the file,
    with the job's default tile for the model (:func:`default_tile_size`: for a
    model that standardises each tile, the tile its threshold was chosen with),
    its default overlap and the model's alignment.
    """
    import warnings

    import torch
    import torch.nn.functional as F  # noqa: N812
    from PIL import Image
    from rasterio.errors import NotGeoreferencedWarning

    from slidewise.engine.imagery.labels import LabelMapping, decode_mask
    from slidewise.engine.imagery.scenes import read_picture
    from slidewise.engine.imagery.tiling import (
        DEFAULT_OVERLAP,
        TilingOptions,
        default_tile_size,
        model_multiple,
        predict_raster,
    )

    indexes = [int(b) for b in meta.extra.get("band_indices", [1, 2, 3])]
    options = TilingOptions(
        tile=default_tile_size(meta, "cpu"),
        overlap=DEFAULT_OVERLAP,
        device="cpu",
        multiple=model_multiple(meta),
    )
    mapping = mapping or LabelMapping()
    with tempfile.TemporaryDirectory(prefix="slidewise-bench-") as tmp:
        for image, mask in pairs:
            truth = decode_mask(read_picture(mask, "mask"), mapping, mask.name)
            with Image.open(image) as im:
                rgb = im.convert("RGB")
                size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
                small = Path(tmp) / f"{image.stem}.png"
                rgb.resize(size, Image.Resampling.BOX).save(small)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                prob = predict_raster(
                    model, str(small), options, bands=indexes, normalisation=meta.normalisation
                )
            assert prob is not None
            full = F.interpolate(
                torch.from_numpy(np.nan_to_num(prob))[None, None],
                size=truth.shape,
                mode="bilinear",
                align_corners=False,
            )[0, 0].numpy()
            yield full, truth


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
        recipes: The recipes (or variant labels) trained, in order.
        overrides: Recipe or variant label -> extra trainmapping parameters.
        variants: Variant label -> the recipe it starts from (its parameters are in
            ``overrides``).
        verbose: Print the jobs' log lines.
        keep: Folder that keeps the trained models (``--loro``; empty: none kept).
        rescore: Folder of models an earlier ``--loro --keep`` run kept: they are
            scored again (with today's scoring) instead of trained.
    """

    epochs: int = DEFAULT_EPOCHS
    seed: int = 0
    scale: float = SCALE
    chip_size: int = CHIP_SIZE
    batch_size: int = BATCH_SIZE
    chips_per_epoch: int = CHIPS_PER_EPOCH
    recipes: tuple[str, ...] = ("l4s_baseline", "default")
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    variants: dict[str, str] = field(default_factory=dict)
    verbose: bool = True
    keep: str = ""
    rescore: str = ""


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
        "RECIPE": settings.variants.get(name, name),
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


@dataclass(frozen=True)
class Region:
    """One region of the leave-one-region-out benchmark.

    Attributes:
        name: Region name (``bijie``).
        images: Image folder.
        masks: Mask folder.
        color: RGB colour of landslide pixels in its masks; ``None`` = detect.
    """

    name: str
    images: str
    masks: str
    color: tuple[int, int, int] | None = None

    def pairs(self) -> list[tuple[Path, Path]]:
        """The region's image/mask pairs."""
        from slidewise.engine.imagery.datasets import discover_pairs

        return discover_pairs(self.images, self.masks)

    def mapping(self) -> Any:
        """The ``LabelMapping`` of its masks."""
        from slidewise.engine.imagery.labels import LabelMapping

        return LabelMapping(mask_color=self.color)


def parse_region(text: str) -> Region:
    """``NAME=IMAGES,MASKS[,R:G:B]`` -> :class:`Region`."""
    name, sep, rest = text.partition("=")
    parts = rest.split(",")
    if not sep or len(parts) not in (2, 3) or not name:
        raise argparse.ArgumentTypeError(f"--region wants NAME=IMAGES,MASKS[,R:G:B], got {text!r}")
    color = None
    if len(parts) == 3:
        rgb = tuple(int(v) for v in parts[2].split(":"))
        if len(rgb) != 3:
            raise argparse.ArgumentTypeError(f"mask colour must be R:G:B, got {parts[2]!r}")
        color = (rgb[0], rgb[1], rgb[2])
    return Region(name.strip(), parts[0], parts[1], color)


def parse_variant(text: str) -> tuple[str, str, dict[str, Any]]:
    """``LABEL=RECIPE;KEY=VALUE;...`` -> (label, recipe, trainmapping parameters)."""
    label, sep, rest = text.partition("=")
    items = [t for t in rest.split(";") if t.strip()]
    if not sep or not items:
        raise argparse.ArgumentTypeError(
            f"--variant wants LABEL=RECIPE;KEY=VALUE;..., got {text!r}"
        )
    params: dict[str, Any] = {}
    for item in items[1:]:
        key, eq, value = item.partition("=")
        if not eq:
            raise argparse.ArgumentTypeError(f"--variant item {item!r} is not KEY=VALUE")
        params[key.strip().upper()] = value.strip()
    return label.strip(), items[0].strip(), params


def summarise(per_seed: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per-seed figures plus their mean and (sample) standard deviation."""
    keys = ("f1", "precision", "recall", "iou")
    values = {k: np.array([fig[k] for fig in per_seed.values()], float) for k in keys}
    ddof = 1 if len(per_seed) > 1 else 0
    return {
        "seeds": per_seed,
        "mean": {k: float(v.mean()) for k, v in values.items()},
        "std": {k: float(v.std(ddof=ddof)) for k, v in values.items()},
    }


def run_loro(
    regions: list[Region],
    seeds: list[int],
    settings: AccuracySettings,
    held_out: list[str] | None = None,
) -> dict[str, Any]:
    """Leave-one-region-out: for each region, train on all others and test on it.

    ``held_out`` limits the folds to these test regions (to run folds in parallel).

    Returns:
        ``{"folds": {"A->B": {"recipes": {name: {"seeds", "mean", "std"}}}},
        "recipes": {name: {"mean_f1", "mean_iou"}}}`` (the last over folds and seeds).
    """
    doc: dict[str, Any] = {"folds": {}, "seeds": seeds, "scale": settings.scale}
    with tempfile.TemporaryDirectory(prefix="slidewise-loro-") as tmp:
        for test in regions:
            if held_out and test.name not in held_out:
                continue
            train = [r for r in regions if r.name != test.name]
            fold = f"{'+'.join(r.name for r in train)}->{test.name}"
            folder = Path(tmp) / fold.replace(">", "_").replace("+", "_")
            scaled = (Path(), Path())
            for region in train if not settings.rescore else []:
                scaled = write_scaled(
                    region.pairs(), folder, settings.scale, region.mapping(), f"{region.name}_"
                )
            per_recipe: dict[str, dict[str, dict[str, float]]] = {}
            for seed in seeds:
                run = replace(settings, seed=seed)
                for name in settings.recipes:
                    t0 = time.time()
                    model = loro_model(name, test.name, scaled, folder / f"{name}-{seed}", run)
                    fig = evaluate_pairs(model, test.pairs(), settings.scale, test.mapping())
                    fig["seconds"] = round(time.time() - t0, 1)
                    per_recipe.setdefault(name, {})[str(seed)] = fig
                    print(
                        f"{fold} seed {seed} {name}: F1 {fig['f1']:.4f} IoU {fig['iou']:.4f} "
                        f"P {fig['precision']:.4f} R {fig['recall']:.4f} [{fig['seconds']} s]",
                        flush=True,
                    )
            doc["folds"][fold] = {"recipes": {k: summarise(v) for k, v in per_recipe.items()}}
    doc["recipes"] = (
        {}
        if not doc["folds"]
        else {
            name: {
                m: float(np.mean([f["recipes"][name]["mean"][m] for f in doc["folds"].values()]))
                for m in ("f1", "iou")
            }
            for name in settings.recipes
        }
    )
    return doc


def loro_model(
    name: str, test: str, scaled: tuple[Path, Path], stem: Path, settings: AccuracySettings
) -> Path:
    """A fold's model of recipe ``name``: trained (and kept), or the one kept earlier.

    Kept models are named ``<test region>-<recipe>-<seed>.safetensors``.
    """
    kept_name = f"{test}-{stem.name}.safetensors"
    if settings.rescore:
        kept = Path(settings.rescore) / kept_name
        if not kept.is_file():
            raise SystemExit(f"--rescore: {kept} is missing")
        return kept
    model = train_recipe(name, scaled, stem.with_suffix(".safetensors"), settings)
    if settings.keep:
        Path(settings.keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(model, Path(settings.keep) / kept_name)
    return model


def print_loro(doc: dict[str, Any]) -> None:
    """One line per fold and recipe: mean ± std of F1 and IoU."""
    print(f"{'fold':<22} {'recipe':<16} {'F1 mean ± std':>16} {'IoU mean ± std':>16}")
    for fold, rec in doc["folds"].items():
        for name, s in rec["recipes"].items():
            m, d = s["mean"], s["std"]
            print(
                f"{fold:<22} {name:<16} {m['f1']:8.3f} ± {d['f1']:.3f} "
                f"{m['iou']:8.3f} ± {d['iou']:.3f}"
            )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-images")
    parser.add_argument("--train-masks")
    parser.add_argument("--test-images")
    parser.add_argument("--test-masks")
    parser.add_argument("--json", required=True, help="output JSON file")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loro", action="store_true", help="leave-one-region-out over --region")
    parser.add_argument("--region", type=parse_region, action="append", default=[])
    parser.add_argument(
        "--seeds", default="", help="comma-separated seeds (--loro; default --seed)"
    )
    parser.add_argument("--recipes", default="l4s_baseline,default", help="comma-separated")
    parser.add_argument("--variant", type=parse_variant, action="append", default=[])
    parser.add_argument(
        "--hold-out", action="append", default=[], help="--loro: only the folds testing on these"
    )
    parser.add_argument("--scale", type=float, default=SCALE)
    parser.add_argument("--chip-size", type=int, default=CHIP_SIZE)
    parser.add_argument("--keep", default="", help="--loro: keep the trained models here")
    parser.add_argument(
        "--rescore", default="", help="--loro: score the models an earlier --keep kept here"
    )
    parser.add_argument("--chips-per-epoch", type=int, default=CHIPS_PER_EPOCH)
    parser.add_argument("--quiet", action="store_true", help="do not print the jobs' log lines")
    args = parser.parse_args(argv)
    started = time.time()
    names = [n for n in args.recipes.split(",") if n]
    settings = AccuracySettings(
        epochs=args.epochs,
        seed=args.seed,
        scale=args.scale,
        chip_size=args.chip_size,
        chips_per_epoch=args.chips_per_epoch,
        recipes=(*names, *(v[0] for v in args.variant)),
        overrides={label: params for label, _, params in args.variant},
        variants={label: recipe for label, recipe, _ in args.variant},
        verbose=not args.quiet,
        keep=args.keep,
        rescore=args.rescore,
    )
    if args.loro:
        if len(args.region) < 2:
            parser.error("--loro needs at least two --region")
        seeds = [int(v) for v in args.seeds.split(",") if v] or [args.seed]
        doc = run_loro(args.region, seeds, settings, args.hold_out)
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print_loro(doc)
        print(f"total wall time {time.time() - started:.1f} s")
        return 0
    folders = (args.train_images, args.train_masks, args.test_images, args.test_masks)
    if not all(folders):
        parser.error("give --train-images, --train-masks, --test-images, --test-masks (or --loro)")
    results, seconds = run_benchmark(*folders, settings)
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
