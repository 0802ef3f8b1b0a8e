"""Benchmark: peak memory and time of susceptibility prediction on a large factor stack.

Usage::

    python -m slidewise.bench.susceptibility_memory --size 10000 --json OUT \\
        [--small 1000] [--method meta] [--block-size 512] [--threads 1] [--workdir DIR]

For each size (the small baseline size, then ``--size``) it writes a synthetic
N x N x 5 float32 factor stack (UTM, 10 m pixels, tiled GeoTIFF, written strip by
strip) and a point inventory whose labels follow the smooth part of the factors,
trains a small model with the ``trainsusceptibility`` job (``meta`` by default:
the stack is segmented into blocks and the block raster is written, as in the
plugin), then runs the ``predictsusceptibility`` job (probability + quantile
classes) in a fresh interpreter and records its peak resident memory (VmHWM) and
wall time. Baselines measured in the same run: the bytes of the stack held as one
float32 array (a prediction that read the whole raster at once needs at least
that) and the peak RSS of the small prediction (memory should not grow with the
raster size). Temporary rasters are deleted at the end (about 2 GB at N = 10,000).

``OUT`` gets ``{"sizes": [{"size", "stack_mb", "peak_rss_mb", "rss_after_imports_mb",
"predict_seconds", "px_per_s", "peak_over_stack", ...}], "growth_mb",
"within_2gb", "settings"}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.bench.memory import peak_rss_mb, quiet_context, rss_mb, run_child

FACTORS = ("elevation", "slope", "curvature", "twi", "ndvi")
PIXEL = 10.0
ORIGIN = (400000.0, 2500000.0)
LIMIT_MB = 2048.0


def _waves(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    freq = rng.uniform(1 / 2000, 1 / 200, size=(len(FACTORS), 2, 2))
    freq *= rng.choice([-1, 1], (len(FACTORS), 2, 2))
    phase = rng.uniform(0, 2 * np.pi, size=(len(FACTORS), 2))
    return freq, phase


def _smooth(rows: np.ndarray, cols: np.ndarray, seed: int) -> np.ndarray:
    """The noise-free part of every factor at the given pixels, shape ``(factors, *rows.shape)``."""
    freq, phase = _waves(seed)
    out = np.empty((len(FACTORS), *np.broadcast(rows, cols).shape), dtype=np.float32)
    for b in range(len(FACTORS)):
        out[b] = sum(
            np.sin(2 * np.pi * (freq[b, k, 0] * rows + freq[b, k, 1] * cols) + phase[b, k])
            for k in range(2)
        )
    return out


def write_factor_stack(path: Path, size: int, seed: int = 0, rows: int = 512) -> Path:
    """Write a size x size x 5 float32 factor stack (band descriptions = factor names).

    Each factor is a sum of two plane waves (periods 200-2,000 px) plus Gaussian
    noise; written strip by strip, so writing needs little memory.
    """
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": len(FACTORS),
        "dtype": "float32",
        "nodata": float("nan"),
        "crs": "EPSG:32645",
        "transform": from_origin(*ORIGIN, PIXEL, PIXEL),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "BIGTIFF": "IF_SAFER",
    }
    cols = np.arange(size, dtype=np.float32)[None, :]
    with rasterio.open(path, "w", **profile) as dst:
        for b, name in enumerate(FACTORS, start=1):
            dst.set_band_description(b, name)
        for top in range(0, size, rows):
            h = min(rows, size - top)
            r = np.arange(top, top + h, dtype=np.float32)[:, None]
            noise = np.random.default_rng([seed, top])
            block = _smooth(r, cols, seed)
            block += 0.3 * noise.standard_normal(block.shape, dtype=np.float32)
            dst.write(block, window=Window(0, top, size, h))
    return path


def write_inventory(path: Path, size: int, n: int = 600, seed: int = 0) -> Path:
    """Write a CSV of ``n`` points (x, y, label) whose labels follow the smooth factors."""
    rng = np.random.default_rng([seed, 1])
    rows = rng.integers(0, size, n)
    cols = rng.integers(0, size, n)
    smooth = _smooth(rows.astype(np.float32), cols.astype(np.float32), seed)
    score = smooth[0] + 0.8 * smooth[1] - 0.5 * smooth[3] + rng.logistic(0.0, 0.4, n)
    labels = (score > np.median(score)).astype(int)
    xs = ORIGIN[0] + (cols + 0.5) * PIXEL
    ys = ORIGIN[1] - (rows + 0.5) * PIXEL
    lines = ["x,y,label"] + [
        f"{x:.1f},{y:.1f},{lab}" for x, y, lab in zip(xs, ys, labels, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def train_model(
    stack: Path, inventory: Path, out_dir: Path, method: str = "meta", iterations: int = 40
) -> dict[str, Any]:
    """Train a small model on the stack with the ``trainsusceptibility`` job.

    Returns:
        ``{"model", "seconds", "train_auc"}``.
    """
    from slidewise.engine.susceptibility.train import run_train

    params: dict[str, Any] = {
        "INPUT": str(stack),
        "INVENTORY": str(inventory),
        "LABEL_FIELD": "label",
        "X_FIELD": "x",
        "Y_FIELD": "y",
        "METHOD": method,
        "N_BLOCKS": 16,
        "ITERATIONS_META": iterations,
        "TASKS_PER_BATCH": 4,
        "CV_FOLDS": 0,
        "N_ESTIMATORS": 50,
        "IMPORTANCE_SAMPLES": 0,
        "OUTPUT": str(out_dir / "model.safetensors"),
    }
    start = time.perf_counter()
    result = run_train(params, quiet_context("trainsusceptibility"))
    return {
        "model": result.outputs["OUTPUT"],
        "seconds": time.perf_counter() - start,
        "train_auc": result.figures.get("train_auc"),
    }


def run_child_job(
    stack: str, model: str, out_dir: str, threads: int, block_size: int | None
) -> dict[str, Any]:
    """Run ``predictsusceptibility`` in this (child) process; report time and peak RSS."""
    import torch

    from slidewise.engine.susceptibility.predict import run_predict

    if threads > 0:
        torch.set_num_threads(threads)
    import_rss = rss_mb()
    params: dict[str, Any] = {
        "MODEL": model,
        "INPUT": stack,
        "OUTPUT": str(Path(out_dir) / "probability.tif"),
        "CLASSED": str(Path(out_dir) / "classes.tif"),
    }
    if block_size:
        params["BLOCK_SIZE"] = block_size
    start = time.perf_counter()
    result = run_predict(params, quiet_context("predictsusceptibility", threads))
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_imports_mb": import_rss,
        "valid_pixels": result.figures.get("valid_pixels"),
    }


def predict_in_child(
    stack: Path, model: str, out_dir: Path, threads: int = 1, block_size: int | None = None
) -> dict[str, Any]:
    """Run :func:`run_child_job` in a fresh interpreter and return its figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        "--child-job",
        str(stack),
        model,
        str(out_dir),
        "--threads",
        str(threads),
    ]
    if block_size:
        cmd += ["--block-size", str(block_size)]
    return run_child("slidewise.bench.susceptibility_memory", cmd)


def measure(
    size: int,
    work: Path,
    method: str = "meta",
    threads: int = 1,
    block_size: int | None = None,
    iterations: int = 40,
    seed: int = 0,
) -> dict[str, Any]:
    """Write, train and predict one size x size stack; delete its files afterwards.

    Returns:
        Figures of the prediction (peak RSS, time) and of the set-up.
    """
    folder = work / f"size_{size}"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        stack = write_factor_stack(folder / "stack.tif", size, seed)
        write_seconds = time.perf_counter() - start
        inventory = write_inventory(folder / "inventory.csv", size, seed=seed)
        trained = train_model(stack, inventory, folder, method, iterations)
        child = predict_in_child(stack, trained["model"], folder / "out", threads, block_size)
        stack_mb = size * size * len(FACTORS) * 4 / 2**20
        return {
            "size": size,
            "stack_mb": round(stack_mb, 1),
            "stack_file_mb": round(stack.stat().st_size / 2**20, 1),
            "peak_rss_mb": round(child["peak_rss_mb"], 1),
            "rss_after_imports_mb": round(child["rss_after_imports_mb"], 1),
            "predict_seconds": round(child["seconds"], 1),
            "px_per_s": round(size * size / child["seconds"], 1),
            "peak_over_stack": round(child["peak_rss_mb"] / stack_mb, 3),
            "valid_pixels": child["valid_pixels"],
            "write_seconds": round(write_seconds, 1),
            "train_seconds": round(trained["seconds"], 1),
            "train_auc": trained["train_auc"],
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark and return the JSON document."""
    started = time.perf_counter()
    sizes = [s for s in (args.small, args.size) if s > 0]
    base = Path(args.workdir) if args.workdir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="slidewise_suscmem_", dir=base) as tmp:
        rows = [
            measure(
                s,
                Path(tmp),
                args.method,
                args.threads,
                args.block_size,
                args.iterations,
                args.seed,
            )
            for s in sizes
        ]
    doc: dict[str, Any] = {
        "sizes": rows,
        "within_2gb": all(r["peak_rss_mb"] <= LIMIT_MB for r in rows),
        "settings": {
            "factors": list(FACTORS),
            "method": args.method,
            "threads": args.threads,
            "block_size": args.block_size or 512,
            "meta_iterations": args.iterations,
            "seed": args.seed,
            "seconds": round(time.perf_counter() - started, 1),
        },
    }
    if len(rows) == 2:
        doc["growth_mb"] = round(rows[1]["peak_rss_mb"] - rows[0]["peak_rss_mb"], 1)
    return doc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    ap = argparse.ArgumentParser(
        prog="python -m slidewise.bench.susceptibility_memory",
        description=__doc__.split("\n")[0],
    )
    ap.add_argument("--size", type=int, default=10000, help="side of the large stack in pixels")
    ap.add_argument("--small", type=int, default=1000, help="baseline side in pixels (0 = none)")
    ap.add_argument("--json", help="output JSON")
    ap.add_argument("--method", default="meta", choices=("meta", "lr", "mlp", "rf"))
    ap.add_argument("--block-size", type=int, default=None, help="BLOCK_SIZE (default 512)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the prediction")
    ap.add_argument("--iterations", type=int, default=40, help="meta-iterations of training")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the synthetic data")
    ap.add_argument("--workdir", default=None, help="folder for the temporary rasters")
    ap.add_argument(
        "--child-job", nargs=3, metavar=("STACK", "MODEL", "OUT"), help=argparse.SUPPRESS
    )
    args = ap.parse_args(argv)
    if not args.child_job and not args.json:
        ap.error("--json is required")
    return args


def _print_table(doc: dict[str, Any]) -> None:
    print(
        f"{'size':>6} {'stack MB':>9} {'peak RSS MB':>12} {'RSS/stack':>10} {'s':>7} {'px/s':>10}"
    )
    for r in doc["sizes"]:
        print(
            f"{r['size']:>6} {r['stack_mb']:9.0f} {r['peak_rss_mb']:12.0f} "
            f"{r['peak_over_stack']:10.2f} {r['predict_seconds']:7.1f} {r['px_per_s']:10.0f}"
        )
    if "growth_mb" in doc:
        print(f"peak RSS growth small -> large: {doc['growth_mb']:.0f} MB")
    print(f"within 2 GB: {doc['within_2gb']}")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if args.child_job:
        stack, model, out = args.child_job
        figures = run_child_job(stack, model, out, args.threads, args.block_size)
        print(json.dumps(figures))
        return 0
    doc = run(args)
    Path(args.json).write_text(json.dumps(doc, indent=2), encoding="utf-8")
    _print_table(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
