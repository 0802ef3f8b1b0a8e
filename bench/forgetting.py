"""Forgetting table of per-region decoders (TSMU) on two real datasets.

Usage::

    python -m slidewise.bench.forgetting --json OUT [--epochs E] [--seed S]
        [--base-epochs E] [--l4s-train N] [--l4s-valid N] [--chattogram] [--threads T]

Regions (``/work/shared/data``, see its README):

* ``bijie``: the 24 Bijie image/mask pairs (yellow = landslide); the first 16
  (sorted by name) train, the last 8 validate. The first region: encoder and
  decoder are trained with the ``addregion`` job without MODEL.
* ``l4s``: the Landslide4Sense-derived RGB images of ``detection/l4s_rgb``,
  whose labels are **boxes** (Pascal VOC): the masks here are the filled
  boxes, a coarse stand-in for the outlines (every pixel inside a box is
  landslide). ``--l4s-train`` images drawn from the ``train`` split train,
  ``--l4s-valid`` drawn from the ``valid`` split validate.
* ``chattogram`` (``--chattogram``): the Chattogram Sentinel-2 tiles, bands
  red, green, blue; labels 2 = landslide, 1 = not landslide, 0 = unlabelled
  (ignored); small blobs around inventory points. 70 tiles train, 30 validate.

Images are downscaled by :data:`SCALE` (area averaging; masks: nearest after
decoding) so that the run fits a 2-core CPU; everything is measured at that
scale. ``--threads`` sets PyTorch's CPU threads (``1`` is much faster on a
shared, oversubscribed CPU; default: PyTorch's choice).

The ``l4s`` region is added to the same Bijie model in six ways: ``frozen``
(only the new decoder trains); ``distill`` (the job's defaults: LAMBDA 1,
T 2, encoder at a tenth of the learning rate, old decoders fixed);
``finetune`` (the same with LAMBDA 0: the encoder is fine-tuned on the new
region with no term that protects the old decoder: the forgetting baseline);
``distill_full_lr`` and ``finetune_full_lr`` (both with the encoder at the
full learning rate); and ``distill_lwf_joint`` (LwF's joint training: the old
decoders are optimised too, full encoder rate).
With ``--chattogram``, Chattogram is then added to the ``frozen`` model as a
third region. Each old region is measured on its validation images before
and after, at its stored threshold; the JSON holds every table::

    {"variants": {"frozen": {"table": [...], "seconds": s}, ...},
     "base": {"valid_f1": ..., "seconds": s}, "settings": {...}}
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: Downscaling factor applied to every image before training and measuring.
SCALE = 0.5
#: Chip side in pixels (after downscaling).
CHIP_SIZE = 128
#: Epochs of each added region (and of the base region unless --base-epochs).
DEFAULT_EPOCHS = 8


def box_masks(files: list[Path], out: Path) -> Path:
    """Write a 0/255 mask per VOC-labelled image: every box filled (a coarse label).

    The ``<size>`` of these XML files is wrong (128 for 224-pixel images), so
    the image's own size is used; boxes are clipped to it.
    """
    from PIL import Image

    out.mkdir(parents=True)
    for image in files:
        with Image.open(image) as im:
            width, height = im.size
        mask = np.zeros((height, width), np.uint8)
        root = ET.parse(image.with_suffix(".xml")).getroot()
        for box in root.iter("bndbox"):
            x0, x1 = (int(float(box.findtext(k, "0"))) for k in ("xmin", "xmax"))
            y0, y1 = (int(float(box.findtext(k, "0"))) for k in ("ymin", "ymax"))
            x0, x1 = sorted((max(0, min(width, x0)), max(0, min(width, x1))))
            y0, y1 = sorted((max(0, min(height, y0)), max(0, min(height, y1))))
            mask[y0:y1, x0:x1] = 255
        Image.fromarray(mask).save(out / f"{image.stem}.png")
    return out


def prepare_data(tmp: Path, l4s_train: int, l4s_valid: int, seed: int) -> dict[str, Any]:
    """Write the downscaled region datasets into ``tmp`` and return their folders."""
    from slidewise.bench.mapping_accuracy import write_scaled
    from slidewise.engine.imagery.datasets import discover_pairs

    bijie = DATA / "mapping" / "bijie"
    pairs = discover_pairs(bijie / "images", bijie / "masks")
    out: dict[str, Any] = {}
    for split, chosen in (("train", pairs[:16]), ("valid", pairs[16:])):
        out[f"bijie_{split}"] = write_scaled(chosen, tmp / "bijie" / split, SCALE)
    rng = np.random.default_rng(seed)
    for split, n in (("train", l4s_train), ("valid", l4s_valid)):
        files = sorted((DATA / "detection" / "l4s_rgb" / split).glob("*.jpg"))
        files = [files[i] for i in sorted(rng.choice(len(files), n, replace=False))]
        masks = box_masks(files, tmp / "l4s_boxes" / split)
        chosen = [(f, masks / f"{f.stem}.png") for f in files]
        out[f"l4s_{split}"] = write_scaled(chosen, tmp / "l4s" / split, SCALE)
    return out


@dataclass(frozen=True)
class JobRunner:
    """Runs the benchmark's addregion jobs on the CPU.

    Attributes:
        seed: Runtime seed of every job.
        verbose: Print the jobs' log lines.
        threads: PyTorch CPU threads (0: PyTorch's choice).
    """

    seed: int = 0
    verbose: bool = True
    threads: int = 0

    def run(self, params: dict[str, Any], name: str) -> tuple[Any, float]:
        """Run addregion with ``params``; its result and wall seconds."""
        from slidewise.bench.mapping_accuracy import LogStream
        from slidewise.engine.core.job import JobContext
        from slidewise.engine.core.protocol import Reporter
        from slidewise.engine.core.runtime import RuntimeOptions
        from slidewise.engine.mapping.addregion import run_add_region

        ctx = JobContext(
            name="addregion",
            options=RuntimeOptions(device="cpu", seed=self.seed, threads=self.threads),
            reporter=Reporter(LogStream(name, self.verbose)),  # type: ignore[arg-type]
        )
        t0 = time.time()
        result = run_add_region(params, ctx)
        return result, time.time() - t0


#: How the L4S region is added to the Bijie model, by variant name (see the module doc).
VARIANTS: dict[str, dict[str, Any]] = {
    "frozen": {"MODE": "frozen"},
    "distill": {"MODE": "distill", "LAMBDA": 1.0, "TEMPERATURE": 2.0},
    "finetune": {"MODE": "distill", "LAMBDA": 0.0},
    "distill_full_lr": {"MODE": "distill", "LAMBDA": 1.0, "ENCODER_LR_SCALE": 1.0},
    "finetune_full_lr": {"MODE": "distill", "LAMBDA": 0.0, "ENCODER_LR_SCALE": 1.0},
    "distill_lwf_joint": {
        "MODE": "distill",
        "LAMBDA": 1.0,
        "ENCODER_LR_SCALE": 1.0,
        "TRAIN_OLD_DECODERS": True,
    },
}


def run_benchmark(
    epochs: int = DEFAULT_EPOCHS,
    base_epochs: int | None = None,
    seed: int = 0,
    l4s_train: int = 64,
    l4s_valid: int = 48,
    chattogram: bool = False,
    verbose: bool = True,
    threads: int = 0,
) -> dict[str, Any]:
    """Train the Bijie base, add L4S in every variant (and Chattogram), collect the tables."""
    base_epochs = base_epochs or epochs
    runner = JobRunner(seed, verbose, threads)
    results: dict[str, Any] = {
        "settings": {
            "epochs": epochs,
            "base_epochs": base_epochs,
            "seed": seed,
            "scale": SCALE,
            "chip_size": CHIP_SIZE,
            "l4s_train": l4s_train,
            "l4s_valid": l4s_valid,
            "l4s_labels": "filled VOC boxes (coarse masks)",
            "threads": threads,
        },
        "variants": {},
    }
    with tempfile.TemporaryDirectory(prefix="slidewise-forgetting-") as name:
        tmp = Path(name)
        data = prepare_data(tmp, l4s_train, l4s_valid, seed)
        base_path = tmp / "bijie.safetensors"
        results["base"] = train_base(runner, data, base_epochs, base_path)
        old = {"bijie": valid_data(data, "bijie")}
        for variant, extra in VARIANTS.items():
            params = {**l4s_params(data, epochs, seed, old), **extra}
            params.update(MODEL=str(base_path), OUTPUT=str(tmp / f"{variant}.safetensors"))
            result, seconds = runner.run(params, variant)
            results["variants"][variant] = {
                "table": result.figures["forgetting"],
                "seconds": round(seconds, 1),
            }
        if chattogram:
            results["variants"]["frozen+chattogram"] = _add_chattogram(
                tmp, tmp / "frozen.safetensors", old, data, epochs, runner
            )
    return results


def valid_data(data: dict[str, Any], region: str) -> dict[str, str]:
    """OLD_REGION_DATA entry of ``region``: its validation pairs."""
    images, masks = data[f"{region}_valid"]
    return {"images": str(images), "masks": str(masks), "dataset_type": "pairs"}


def region_params(data: dict[str, Any], region: str, epochs: int, seed: int) -> dict[str, Any]:
    """addregion parameters every region shares: its training and validation pairs."""
    return {
        "DATASET_TYPE": "pairs",
        "CHIP_SIZE": CHIP_SIZE,
        "SEED": seed,
        "REGION": region,
        "TRAIN_IMAGES": str(data[f"{region}_train"][0]),
        "TRAIN_MASKS": str(data[f"{region}_train"][1]),
        "VALID_IMAGES": str(data[f"{region}_valid"][0]),
        "VALID_MASKS": str(data[f"{region}_valid"][1]),
        "EPOCHS": epochs,
    }


def train_base(
    runner: JobRunner, data: dict[str, Any], epochs: int, output: Path
) -> dict[str, Any]:
    """Train the first region, Bijie (encoder and decoder); its figures and seconds."""
    result, seconds = runner.run(
        {
            **region_params(data, "bijie", epochs, runner.seed),
            "BATCH_SIZE": 8,
            "LOSS": "dice_bce",
            "OUTPUT": str(output),
        },
        "bijie",
    )
    return {**result.figures, "seconds": round(seconds, 1)}


def l4s_params(data: dict[str, Any], epochs: int, seed: int, old: dict[str, Any]) -> dict[str, Any]:
    """addregion parameters of the L4S region (without MODEL, OUTPUT and the variant)."""
    return {**region_params(data, "l4s", epochs, seed), "OLD_REGION_DATA": json.dumps(old)}


def _add_chattogram(
    tmp: Path,
    model: Path,
    old: dict[str, Any],
    data: dict[str, Any],
    epochs: int,
    runner: JobRunner,
) -> dict[str, Any]:
    """Add Chattogram (RGB of the 4-band tiles) as a third region to ``model``."""
    root = DATA / "mapping" / "chattogram_s2"
    images = sorted((root / "images").glob("*.tif"))
    split = {"train": images[:70], "valid": images[70:]}
    folders = {}
    for name, files in split.items():
        img, lab = tmp / "chattogram" / name / "images", tmp / "chattogram" / name / "labels"
        img.mkdir(parents=True)
        lab.mkdir(parents=True)
        for f in files:
            (img / f.name).symlink_to(f)
            (lab / f.name).symlink_to(root / "labels" / f.name)
        folders[name] = (img, lab)
    old = {**old, "l4s": valid_data(data, "l4s")}
    result, seconds = runner.run(
        {
            "DATASET_TYPE": "geotiff",
            "REGION": "chattogram",
            "MODE": "frozen",
            "TRAIN_IMAGES": str(folders["train"][0]),
            "TRAIN_MASKS": str(folders["train"][1]),
            "VALID_IMAGES": str(folders["valid"][0]),
            "VALID_MASKS": str(folders["valid"][1]),
            "LANDSLIDE_VALUES": "2",
            "IGNORE_VALUES": "0",
            "BANDS": "1,2,3",
            "CHIP_SIZE": CHIP_SIZE,
            "EPOCHS": epochs,
            "SEED": runner.seed,
            "MODEL": str(model),
            "OLD_REGION_DATA": json.dumps(old),
            "OUTPUT": str(tmp / "three.safetensors"),
        },
        "chattogram",
    )
    return {"table": result.figures["forgetting"], "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: prints the forgetting tables."""
    from slidewise.engine.mapping.forgetting import format_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True, help="output JSON file")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--base-epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--l4s-train", type=int, default=64)
    parser.add_argument("--l4s-valid", type=int, default=48)
    parser.add_argument("--chattogram", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="PyTorch CPU threads (0: default)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch log lines")
    args = parser.parse_args(argv)
    if not (DATA / "mapping" / "bijie").is_dir():
        print(f"The real data are missing ({DATA}).", file=sys.stderr)
        return 1
    started = time.time()
    results = run_benchmark(
        epochs=args.epochs,
        base_epochs=args.base_epochs,
        seed=args.seed,
        l4s_train=args.l4s_train,
        l4s_valid=args.l4s_valid,
        chattogram=args.chattogram,
        verbose=not args.quiet,
        threads=args.threads,
    )
    results["wall_seconds"] = round(time.time() - started, 1)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    base = results["base"]
    print(
        f"base region bijie: valid F1 {base['valid_f1']:.3f} IoU {base['valid_iou']:.3f} "
        f"({base['seconds']:.0f} s)"
    )
    for variant, entry in results["variants"].items():
        print(f"\n{variant} ({entry['seconds']:.0f} s):")
        print(format_table(entry["table"]))
    print(f"\ntotal wall time {results['wall_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
