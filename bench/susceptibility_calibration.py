"""Benchmark: seams, held-out AUC and calibration of block-wise susceptibility (issue 12).

Usage::

    python -m slidewise.bench.susceptibility_calibration --json OUT [--workdir DIR]
        [--iterations 1000] [--widths 0 8 16 32] [--seed 0]

The demo's honest split of the southern-Ecuador data (``scripts/demo.d``):
blocks (24, segmentblocks) and a ``meta`` model from the 350 sample points north
of y = 9,558,766; the map is scored on the 1,535-point inventory south of it.
For every blending width the probability raster is predicted (calibrated and
raw) and measured: the seam statistic (mean absolute probability jump across
block borders over the same inside blocks, :func:`~slidewise.engine.susceptibility.
blending.seam_statistic`), the held-out ROC-AUC, and the share of pixels below
0.05 or over 0.95. The calibration figures (Brier, ECE of the out-of-block
predictions, cross-fitted) come from training.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.bench.memory import quiet_context

ECUADOR = Path(__file__).resolve().parents[2] / "shared" / "data" / "susceptibility" / "ecuador"
SPLIT_Y = 9558766


def split_points(source: Path, target: Path, north: bool) -> int:
    """Write the points of ``source`` north (or south) of :data:`SPLIT_Y` to ``target``."""
    with open(source, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    keep = [r for r in rows if (float(r["y"]) > SPLIT_Y) == north]
    with open(target, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(keep)
    return len(keep)


def held_out_auc(prob_path: Path, points: Path, label: str = "lslpts") -> float:
    """ROC-AUC of the probability raster at the labelled points (NaN pixels skipped)."""
    import rasterio
    from sklearn.metrics import roc_auc_score

    with open(points, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    xy = [(float(r["x"]), float(r["y"])) for r in rows]
    y = np.array([int(float(r[label])) for r in rows])
    with rasterio.open(prob_path) as src:
        p = np.array([v[0] for v in src.sample(xy)], dtype=float)
    ok = np.isfinite(p)
    return float(roc_auc_score(y[ok], p[ok]))


def predict_variant(
    model: Path, out: Path, width: int, calibrated: bool, stack: Path = ECUADOR / "ta.tif"
) -> dict[str, Any]:
    """Predict ``stack`` with BLEND_WIDTH ``width``; raw when not ``calibrated``."""
    from slidewise.engine.core.modelfile import load_model
    from slidewise.engine.susceptibility.calibration import Calibrator
    from slidewise.engine.susceptibility.predict import (
        PredictParams,
        load_predictor,
        predict_stack,
    )

    params: dict[str, Any] = {"MODEL": str(model), "INPUT": str(stack), "OUTPUT": str(out)}
    params["BLEND_WIDTH"] = width
    options = PredictParams.from_params(params)
    ctx = quiet_context("bench", 1)
    tensors, meta = load_model(str(model), task="susceptibility")
    predictor = load_predictor(tensors, meta.config, meta.normalisation, options, ctx.log)
    if not calibrated:
        predictor.calibrator = Calibrator()
    start = time.perf_counter()
    figures = predict_stack(options, predictor, dict(meta.extra["blocks"]), ctx)
    figures.pop("_sample")
    figures["seconds"] = time.perf_counter() - start
    return figures


def measure(workdir: Path, iterations: int, widths: list[int], seed: int) -> dict[str, Any]:
    """Train once, predict every variant, measure seams, AUC and extremes."""
    import rasterio

    from slidewise.engine.susceptibility.blending import seam_statistic
    from slidewise.engine.susceptibility.segmentblocks import run_segment_blocks
    from slidewise.engine.susceptibility.train import run_train

    train, val = workdir / "train.csv", workdir / "validation.csv"
    counts = {"train": split_points(ECUADOR / "lsl.csv", train, True)}
    counts["validation"] = split_points(ECUADOR / "landslides.csv", val, False)
    common = {"INPUT": str(ECUADOR / "ta.tif"), "INVENTORY": str(train), "LABEL_FIELD": "lslpts"}
    blocks = workdir / "blocks.tif"
    run_segment_blocks(
        {**common, "N_BLOCKS": 24, "OUTPUT": str(blocks)}, quiet_context("bench", 1, seed)
    )
    model = workdir / "model.safetensors"
    start = time.perf_counter()
    trained = run_train(
        {**common, "BLOCKS": str(blocks), "METHOD": "meta", "ITERATIONS_META": iterations,
         "CV_FOLDS": 0, "OUTPUT": str(model)},
        quiet_context("bench", 1, seed),
    )  # fmt: skip
    doc: dict[str, Any] = {"counts": counts, "train_seconds": time.perf_counter() - start}
    doc["calibration"] = trained.figures.get("calibration", {})
    with rasterio.open(blocks) as src:
        ids = src.read(1)
    doc["variants"] = []
    for width in widths:
        for calibrated in (False, True):
            out = workdir / f"p_w{width}_{'cal' if calibrated else 'raw'}.tif"
            fig = predict_variant(model, out, width, calibrated)
            with rasterio.open(out) as src:
                seams = seam_statistic(src.read(1), ids)
            row = {"blend_width": width, "calibrated": calibrated, "seams": seams}
            row.update({k: fig[k] for k in ("extreme_share", "uncertainty_mean", "seconds")})
            row["held_out_auc"] = held_out_auc(out, val)
            doc["variants"].append(row)
            print(json.dumps(row), flush=True)
    return doc


def measure_synthetic(
    workdir: Path, size: int, iterations: int, seed: int, widths: tuple[int, ...] = (0, 16)
) -> dict[str, Any]:
    """The same on the synthetic stack of :mod:`.susceptibility_memory` (north/south split)."""
    import rasterio

    from slidewise.bench.susceptibility_memory import write_factor_stack, write_inventory
    from slidewise.engine.susceptibility.blending import seam_statistic
    from slidewise.engine.susceptibility.train import run_train

    stack = write_factor_stack(workdir / "synthetic.tif", size, seed)
    points = write_inventory(workdir / "synthetic_points.csv", size, n=800, seed=seed)
    with open(points, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    mid = float(np.median([float(r["y"]) for r in rows]))
    halves = {}
    for name, north in (("north", True), ("south", False)):
        halves[name] = workdir / f"synthetic_{name}.csv"
        with open(halves[name], "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(r for r in rows if (float(r["y"]) > mid) == north)
    model, blocks = workdir / "synthetic_model.safetensors", workdir / "synthetic_blocks.tif"
    run_train(
        {"INPUT": str(stack), "INVENTORY": str(halves["north"]), "LABEL_FIELD": "label",
         "N_BLOCKS": 16, "ITERATIONS_META": iterations, "CV_FOLDS": 0,
         "OUTPUT": str(model), "OUTPUT_BLOCKS": str(blocks)},
        quiet_context("bench", 1, seed),
    )  # fmt: skip
    with rasterio.open(blocks) as src:
        ids = src.read(1)
    out = []
    for width in widths:
        prob = workdir / f"synthetic_p{width}.tif"
        fig = predict_variant(model, prob, width, True, stack)
        with rasterio.open(prob) as src:
            row: dict[str, Any] = {"blend_width": width}
            row["seams"] = seam_statistic(src.read(1), ids)
        row["held_out_auc"] = held_out_auc(prob, halves["south"], "label")
        row["extreme_share"] = fig["extreme_share"]
        out.append(row)
        print(json.dumps(row), flush=True)
    return {"size": size, "variants": out}


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--workdir", default="")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--widths", type=int, nargs="*", default=[0, 8, 16, 32])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synthetic", type=int, default=0, help="also a synthetic N x N stack")
    parser.add_argument("--synthetic-widths", type=int, nargs="+", default=[0, 16])
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        doc = measure(workdir, args.iterations, list(args.widths), args.seed) if args.widths else {}
        if args.synthetic:
            doc["synthetic"] = measure_synthetic(
                workdir, args.synthetic, args.iterations, args.seed, tuple(args.synthetic_widths)
            )
    doc["settings"] = vars(args)
    Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
