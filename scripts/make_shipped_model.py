"""Make the landslide model shipped with the plugin (resources/models/landslide_rgb.safetensors).

Two steps, run with the engine's Python from the repository's parent folder
(``PYTHONPATH`` = the folder holding ``slidewise``)::

    # 1. train the default recipe on every shared pixel-labelled RGB pair
    python slidewise/scripts/make_shipped_model.py train --data ../shared/data/mapping \\
        --out /tmp/shipped_raw.safetensors --epochs 10 --chips-per-epoch 24 --seed 0

    # 2. write the shipped copy with the leave-one-region-out figures on its card
    python slidewise/scripts/make_shipped_model.py card --raw /tmp/shipped_raw.safetensors \\
        --loro loro_sichuan.json --loro loro_bijie.json

The training uses the settings of ``bench/mapping_accuracy.py --loro`` (images
x0.5, 128-px chips) so the card's figures describe the recipe it was made with.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

#: Regions of the shipped model: folder under --data and landslide colour of its masks.
REGIONS = {"bijie": (255, 255, 0), "sichuan": (255, 0, 255)}


def train(args: argparse.Namespace) -> None:
    """Train the recipe on all regions (scaled like the benchmark)."""
    from slidewise.bench.mapping_accuracy import (
        AccuracySettings,
        Region,
        train_recipe,
        write_scaled,
    )

    settings = AccuracySettings(
        epochs=args.epochs,
        seed=args.seed,
        chip_size=args.chip_size,
        chips_per_epoch=args.chips_per_epoch,
        recipes=(args.recipe,),
    )
    with tempfile.TemporaryDirectory(prefix="slidewise-shipped-") as tmp:
        for name, color in REGIONS.items():
            base = Path(args.data) / name
            region = Region(name, str(base / "images"), str(base / "masks"), color)
            folders = write_scaled(
                region.pairs(), Path(tmp), settings.scale, region.mapping(), f"{name}_"
            )
        train_recipe(args.recipe, folders, Path(args.out), settings)


def loro_card(paths: list[str], recipe: str) -> dict[str, Any]:
    """Leave-one-region-out figures of every recipe from bench JSONs; means of ``recipe``."""
    folds: dict[str, Any] = {}
    for path in paths:  # one JSON may hold a fold's recipes, or some of them
        for fold, rec in json.loads(Path(path).read_text())["folds"].items():
            folds.setdefault(fold, {"recipes": {}})["recipes"].update(rec["recipes"])
    card: dict[str, Any] = {"folds": {}}
    for fold, rec in folds.items():
        card["folds"][fold] = {
            name: {"mean": s["mean"], "std": s["std"], "seeds": len(s["seeds"])}
            for name, s in rec["recipes"].items()
        }
    for metric in ("f1", "iou", "precision", "recall"):
        card[metric] = float(
            np.mean([rec["recipes"][recipe]["mean"][metric] for rec in folds.values()])
        )
    card["recipe"] = recipe
    card["command"] = "python -m slidewise.bench.mapping_accuracy --loro (see docs/benchmarks.md)"
    return card


def card(args: argparse.Namespace) -> None:
    """Write the shipped model (float32: small enough) with the card in its metadata."""
    from slidewise.engine.mapping.shipped import shipped_model_path, write_shipped_model

    loro = loro_card(args.loro, args.recipe)
    target = Path(args.target) if args.target else shipped_model_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    size = write_shipped_model(
        args.raw,
        target,
        {
            "metrics": {"leave_one_region_out": loro},
            "provenance": {
                "shipped": "Slidewise landslide model for RGB imagery (Bijie + Sichuan)",
                "training_data": "shared/data/mapping bijie (24 pairs) + sichuan (36 pairs), "
                "images x0.5",
                "licence_of_data": "Bijie: licence unknown (Ji et al. 2020); Sichuan: CC BY 4.0 "
                "(Zeng et al. 2021, doi:10.11922/sciencedb.j00001.00222)",
            },
        },
        half=args.half,
    )
    target.chmod(0o644)  # written through a private temporary file
    target.with_suffix(".md").write_text(card_markdown(loro, size), encoding="utf-8")
    print(f"{target} {size / 2**20:.1f} MB; leave-one-region-out F1 {loro['f1']:.3f}")


def card_markdown(loro: dict[str, Any], size: int) -> str:
    """The human-readable model card written beside the model file."""
    rows = []
    for fold, recipes in loro["folds"].items():
        for name, s in recipes.items():
            m, d = s["mean"], s["std"]
            rows.append(
                f"| {fold} | {name} | {s['seeds']} | {m['f1']:.3f} ± {d['f1']:.3f} | "
                f"{m['iou']:.3f} ± {d['iou']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} |"
            )
    return CARD.format(
        size=size / 2**20,
        rows="\n".join(rows),
        f1=loro["f1"],
        iou=loro["iou"],
        recipe=loro["recipe"],
        recipe_note=RECIPE_NOTES.get(loro["recipe"], ""),
    )


#: What the card says about a recipe beyond its name.
RECIPE_NOTES = {
    "default": "\n\nEvery input tile is standardised by its own band statistics, so the "
    "sensor's brightness,\ncontrast and colour balance matter little; probabilities are "
    "calibrated (Platt scaling). *Map\nlandslides* cuts each raster at the threshold with the "
    "best expected F1 of its own calibrated\nprobabilities (THRESHOLD_RULE expected_f1); the "
    "threshold stored in the file, tuned on the\nvalidation images, is used with "
    "THRESHOLD_RULE=stored.",
}


CARD = """# Slidewise landslide model for RGB imagery (landslide_rgb.safetensors)

What it is: a plain U-Net (widths 16-32-64-128-256, 1.9 M parameters) trained with Slidewise's
`{recipe}` mapping recipe, the one that measured best across regions (table below), on every
shared pixel-labelled RGB pair: Bijie (24 images, Guizhou) and Sichuan (36 aerial orthophotos of
the Wenchuan, Lushan and Jiuzhaigou earthquake areas), images downscaled x0.5 (about 1-2 m
pixels), 10 epochs of 24 chips of 128 px on a CPU. Input: three bands red, green, blue (8-bit
values); output: the landslide probability and the threshold stored in the file. Weights
float32 ({size:.1f} MB).{recipe_note}

It is a small model trained on 60 images with a CPU budget: across regions it is weak (F1 below),
so check its map before use and train your own model (Train mapping model) on a few labelled
images of your area when you can.

Use: *Map landslides* with MODEL left empty (or the panel's Mapping tab without a model).
Works best on RGB imagery of 0.5-2 m pixels of mountain landslides; for other sensors, bands or
resolutions, train your own model (Train mapping model) on a few labelled images.

## Leave-one-region-out figures (landslide class, pixels, images x0.5)

Trained on one region, tested on the other (images it was not trained or tuned on), the default
recipe against the Landslide4Sense baseline recipe, same settings, mean ± std over seeds; each
image mapped as *Map landslides* maps it by default (the default recipe's models at each image's
expected-F1 threshold, the baseline's uncalibrated models at their stored 0.5):

| train -> test | recipe | seeds | F1 | IoU | precision | recall |
|---|---|---|---|---|---|---|
{rows}

Mean over the two folds (`{recipe}` recipe): F1 {f1:.3f}, IoU {iou:.3f}. The shipped model itself
is trained on both regions with the same budget (10 epochs of 24 chips); the figures above are
for the recipe trained on one region only, so they are what to expect on a region the model has
never seen. Command lines and data:
`docs/benchmarks.md`, section "Mapping across regions (issue 16)".

Data licences: Bijie dataset (Ji et al. 2020), licence not stated; Sichuan dataset CC BY 4.0
(Zeng C., Cao Z., Su F. et al., Science Data Bank 2021, doi:10.11922/sciencedb.j00001.00222).
"""


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("train")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recipe", default="default", help="the recipe that won the LORO benchmark")
    p.add_argument("--chip-size", type=int, default=128)
    p.add_argument("--chips-per-epoch", type=int, default=24)
    c = sub.add_parser("card")
    c.add_argument("--raw", required=True)
    c.add_argument("--loro", action="append", required=True)
    c.add_argument("--target", default="")
    c.add_argument("--recipe", default="default", help="the recipe the raw model was trained with")
    c.add_argument("--half", action="store_true", help="store float16 weights (large models)")
    args = parser.parse_args(argv)
    (train if args.step == "train" else card)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
