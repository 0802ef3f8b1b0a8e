"""Polygon post-processing before and after, on real image/mask pairs (issue 12).

Usage::

    python -m slidewise.bench.polygons (--model MODEL.safetensors | --train N [--epochs 8]) \\
        --images DIR --masks DIR [--skip N] [--pixel 1.0] --json OUT

Each image (RGB PNG, as Bijie and Sichuan ship them) is written as a GeoTIFF
(EPSG:32648, ``--pixel`` metres, so that areas are in m²) and mapped once with
the ``maplandslides`` job with every post-processing step off (pixel outlines
of every component: "off"). The same probability is then turned into polygons
with :func:`slidewise.engine.geo.postprocess.postprocess_mask`, the function
the job streams through, for each setting of :data:`SETTINGS` ("defaults" is
what the job does with nothing set). Each polygon layer is scored against the
mask:

* pixel precision, recall, F1 and IoU of the rasterised polygons
  (:func:`slidewise.engine.mapping.evaluate.evaluate_rasters`, pixel centres);
* object recall: the share of reference landslides (4-connected components of
  the mask) that the rasterised polygons touch (``object_hit_rate``);
* polygon precision: the share of polygons that cover a reference landslide
  pixel (pixel centres of the polygon, as rasterised);
* polygon F1: the harmonic mean of the two. Every fragment that touches a
  landslide counts as a hit here, so a landslide cut into 50 specks gives 50
  "true" polygons;
* matched F1: one-to-one matching of polygons and reference landslides
  (:func:`scipy.optimize.linear_sum_assignment` on the pixels they share):
  each landslide is matched by at most one polygon, extra fragments are false
  positives. ``2 * matched / (polygons + reference landslides)``.

Figures are pooled over the images (counts summed). The first ``--skip``
pairs (by name) are skipped: they trained the model. ``--train N`` first
trains the default recipe on the first N pairs (:func:`train_model`) and
skips them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.contract.specs.polygons import DEFAULT_MIN_PIXELS
from slidewise.engine.geo.postprocess import PolygonOptions

#: Settings compared with "off" (``None`` fields: the default for the pixel size).
SETTINGS: dict[str, PolygonOptions] = {
    "min_area_only": PolygonOptions(None, 0.0, 0, 0, 0.0),
    "no_opening": PolygonOptions(opening_radius=0),
    "defaults": PolygonOptions(),
}
#: Polygons of at most this many pixels are counted as specks.
SPECK_PIXELS = 10
#: CRS given to the benchmark images.
CRS = "EPSG:32648"


def write_pair(image: Path, mask: Path, out: Path, pixel: float) -> tuple[Path, Path]:
    """The image as a GeoTIFF and its mask as a 0/1 GeoTIFF on the same grid."""
    import rasterio
    from rasterio.transform import from_origin

    from slidewise.engine.imagery.labels import LabelMapping, decode_mask
    from slidewise.engine.imagery.scenes import read_picture

    rgb = read_picture(image, "image")[..., :3]
    labels = decode_mask(read_picture(mask, "mask"), LabelMapping(), mask.name)
    profile = {
        "driver": "GTiff",
        "height": rgb.shape[0],
        "width": rgb.shape[1],
        "crs": CRS,
        "transform": from_origin(500000.0, 3000000.0, pixel, pixel),
    }
    img_path, mask_path = out / f"{image.stem}.tif", out / f"{image.stem}_mask.tif"
    with rasterio.open(img_path, "w", count=3, dtype="uint8", **profile) as dst:
        dst.write(np.moveaxis(rgb, -1, 0).astype(np.uint8))
        dst.descriptions = ("red", "green", "blue")
    with rasterio.open(mask_path, "w", count=1, dtype="uint8", nodata=255, **profile) as dst:
        dst.write((labels == 1).astype(np.uint8)[None])
    return img_path, mask_path


def map_off(model: Path, image: Path, out: Path) -> tuple[Path, Path, float]:
    """Run maplandslides with no post-processing: probability, polygons, threshold."""
    from slidewise.bench.mapping_accuracy import LogStream
    from slidewise.engine.core.job import JobContext
    from slidewise.engine.core.protocol import Reporter
    from slidewise.engine.core.runtime import RuntimeOptions
    from slidewise.engine.mapping.apply import run_map

    prob, polys = out / f"{image.stem}_prob.tif", out / f"{image.stem}_off.gpkg"
    params = {
        "INPUT": str(image),
        "MODEL": str(model),
        "MIN_AREA": 0,
        "MAX_HOLE_AREA": 0,
        "OPENING_RADIUS": 0,
        "CLOSING_RADIUS": 0,
        "SIMPLIFY_TOLERANCE": 0,
        "OUTPUT_PROBABILITY": str(prob),
        "OUTPUT_POLYGONS": str(polys),
    }
    ctx = JobContext(
        name="maplandslides",
        options=RuntimeOptions(device="cpu", seed=0),
        reporter=Reporter(LogStream("map", False)),  # type: ignore[arg-type]
    )
    result = run_map(params, ctx)
    return prob, polys, float(result.figures["threshold"])


def score(geoms: list[Any], fields: dict[str, np.ndarray], truth: Path, out: Path) -> dict:
    """Pixel and object figures of polygons against a 0/1 mask (see the module docstring)."""
    import rasterio
    from rasterio.features import rasterize
    from scipy import ndimage
    from scipy.optimize import linear_sum_assignment

    from slidewise.engine.mapping.evaluate import evaluate_rasters

    with rasterio.open(truth) as src:
        ref = src.read(1) == 1
        profile = src.profile | {"nodata": None, "dtype": "int32"}
        shape, transform = ref.shape, src.transform
    ids = rasterize(
        [(g, k + 1) for k, g in enumerate(geoms)], out_shape=shape, transform=transform,
        dtype="int32",
    )  # fmt: skip
    pred = out / "pred.tif"
    with rasterio.open(pred, "w", **profile) as dst:
        dst.write((ids > 0).astype(np.int32)[None])
    figures = evaluate_rasters(str(pred), str(truth), 0.5)
    labels = ndimage.label(ref)[0]
    both = (ids > 0) & (labels > 0)
    pairs, overlap = np.unique(np.stack([ids[both], labels[both]]), axis=1, return_counts=True)
    hit = len(np.unique(pairs[0])) if pairs.size else 0
    matched = 0
    if pairs.size:  # one-to-one: each reference landslide matches at most one polygon
        poly, inv_p = np.unique(pairs[0], return_inverse=True)
        refs, inv_r = np.unique(pairs[1], return_inverse=True)
        table = np.zeros((len(poly), len(refs)))
        table[inv_p, inv_r] = overlap
        rows, cols = linear_sum_assignment(-table)
        matched = int(np.count_nonzero(table[rows, cols] > 0))
    pixels = np.asarray(fields.get("pixels", np.zeros(0)))
    return {
        "polygons": len(geoms),
        "specks": int(np.count_nonzero(pixels <= SPECK_PIXELS)),
        "polygons_hit": hit,
        "matched": matched,
        **{k: figures[k] for k in ("tp", "fp", "fn", "reference_objects")},
        "reference_objects_hit": figures["reference_objects_hit"],
    }


def pooled(rows: list[dict]) -> dict[str, float]:
    """Figures of the summed counts."""
    s = {k: sum(r[k] for r in rows) for k in rows[0]}
    p = s["tp"] / max(1, s["tp"] + s["fp"])
    r = s["tp"] / max(1, s["tp"] + s["fn"])
    op = s["polygons_hit"] / max(1, s["polygons"])
    orc = s["reference_objects_hit"] / max(1, s["reference_objects"])
    return {
        "images": len(rows),
        "polygons": s["polygons"],
        "specks_le_10px": s["specks"],
        "pixel_precision": p,
        "pixel_recall": r,
        "pixel_f1": 2 * p * r / max(1e-12, p + r),
        "pixel_iou": s["tp"] / max(1, s["tp"] + s["fp"] + s["fn"]),
        "polygon_precision": op,
        "object_recall": orc,
        "polygon_f1": 2 * op * orc / max(1e-12, op + orc),
        "matched_precision": s["matched"] / max(1, s["polygons"]),
        "matched_recall": s["matched"] / max(1, s["reference_objects"]),
        "matched_f1": 2 * s["matched"] / max(1, s["polygons"] + s["reference_objects"]),
    }


def sharing(boxes: np.ndarray) -> int:
    """How many boxes share area with another box (nested or overlapping)."""
    import shapely

    if len(boxes) < 2:
        return 0
    geoms = shapely.box(*np.asarray(boxes, np.float64).T)
    i, j = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    area = shapely.area(shapely.intersection(geoms[i], geoms[j]))
    return len(np.unique(i[(i != j) & (area > 0)]))


def box_figures(prob: np.ndarray, threshold: float) -> dict[str, int]:
    """Segmentation boxes (detectlandslides SOURCE=1) before and after issue 12.

    Before: 8-connected components of at least 16 pixels, boxed as they come.
    After: the defaults (opening and closing radius 1, 16 pixels) and the merge
    of nested or overlapping boxes.
    """
    from slidewise.engine.detection.apply import segmentation_boxes
    from slidewise.engine.detection.boxes import boxes_from_mask

    mask = np.isfinite(prob) & (prob >= threshold)
    before = boxes_from_mask(mask, DEFAULT_MIN_PIXELS)[0]
    after = segmentation_boxes(prob, threshold, DEFAULT_MIN_PIXELS, 0.0, (1, 1))[0]
    return {
        "boxes_before": len(before),
        "boxes_sharing_area_before": sharing(before),
        "boxes_after": len(after),
        "boxes_sharing_area_after": sharing(after),
    }


def run_benchmark(model: Path, images: str, masks: str, skip: int, pixel: float) -> dict:
    """Every setting on every pair; pooled figures and the per-image polygon counts."""
    import pyogrio
    import rasterio
    import shapely

    from slidewise.engine.geo.postprocess import postprocess_mask, resolve_settings
    from slidewise.engine.imagery.datasets import discover_pairs

    pairs = sorted(discover_pairs(images, masks))[skip:]
    rows: dict[str, list[dict]] = {"off": [], **{k: [] for k in SETTINGS}}
    counts: dict[str, dict[str, int]] = {}
    boxes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="slidewise-polygons-") as tmp:
        out = Path(tmp)
        for image, mask in pairs:
            img, truth = write_pair(image, mask, out, pixel)
            prob_path, polys, threshold = map_off(model, img, out)
            _, _, wkb, data = pyogrio.raw.read(polys)
            info = pyogrio.read_info(polys)
            off_fields = dict(zip(info["fields"], data, strict=True))
            rows["off"].append(score(list(shapely.from_wkb(wkb)), off_fields, truth, out))
            with rasterio.open(prob_path) as src:
                prob, t, crs = src.read(1).astype(np.float64), src.transform, src.crs
            mask_arr = np.isfinite(prob) & (prob >= threshold)
            counts[image.name] = {"off": len(wkb)}
            for name, options in SETTINGS.items():
                settings = resolve_settings(options, t, crs, prob.shape[0])
                geoms, fields = postprocess_mask(mask_arr, prob, t, crs, settings)
                rows[name].append(score(geoms, fields, truth, out))
                counts[image.name][name] = len(geoms)
            for key, value in box_figures(prob, threshold).items():
                boxes[key] = boxes.get(key, 0) + value
            print(image.name, counts[image.name], flush=True)
    return {
        "settings": {k: pooled(v) for k, v in rows.items()},
        "per_image_polygons": counts,
        "segmentation_boxes": boxes,
    }


def train_model(images: str, masks: str, count: int, epochs: int, out: Path) -> Path:
    """Train the default recipe on the first ``count`` pairs (by name), full resolution.

    The ``trainmapping`` job of :func:`slidewise.bench.mapping_accuracy.train_recipe`,
    seed 0, ``epochs`` epochs of 24 chips of 256 px, batch 8.
    """
    from slidewise.bench.mapping_accuracy import AccuracySettings, train_recipe, write_scaled
    from slidewise.engine.imagery.datasets import discover_pairs

    pairs = sorted(discover_pairs(images, masks))[:count]
    folders = write_scaled(pairs, out / "train", 1.0)
    settings = AccuracySettings(epochs=epochs, scale=1.0, recipes=("default",), verbose=False)
    return train_recipe("default", folders, out / "model.safetensors", settings)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="mapping model; default: train one (--train)")
    parser.add_argument("--train", type=int, default=0, help="train on the first N pairs")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (--train)")
    parser.add_argument("--images", required=True)
    parser.add_argument("--masks", required=True)
    parser.add_argument("--skip", type=int, default=0, help="first pairs (by name) to skip")
    parser.add_argument("--pixel", type=float, default=1.0, help="pixel size given, metres")
    parser.add_argument("--json", required=True, help="output JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="slidewise-polygons-model-") as tmp:
        model = Path(args.model) if args.model else None
        if args.train:
            model = train_model(args.images, args.masks, args.train, args.epochs, Path(tmp))
        if model is None:
            parser.error("give --model, or --train N to train one on the first N pairs")
        skip = max(args.skip, args.train)
        results = run_benchmark(model, args.images, args.masks, skip, args.pixel)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    keys = ["polygons", "specks_le_10px", "pixel_f1", "pixel_iou", "polygon_precision"]
    keys += ["object_recall", "polygon_f1", "matched_f1"]
    print(f"{'setting':<14}" + "".join(f"{k:>18}" for k in keys))
    for name, fig in results["settings"].items():
        print(f"{name:<14}" + "".join(f"{fig[k]:>18.4g}" for k in keys))
    print("segmentation boxes:", results["segmentation_boxes"])
    print(f"total wall time {time.time() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
