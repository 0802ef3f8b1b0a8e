"""Benchmark: terrainfactors on 1 and more local Dask workers, in one run.

Usage::

    python -m slidewise.bench.terrain_scaling --json OUT [--size 3000] [--workers 1,2]
        [--block-size 1024] [--dem tests/data/ecuador/dem_10m.tif] [--workdir DIR]

Writes a ``size`` x ``size`` DEM tiled from a real one (by default the Ecuador
10 m DEM of the test data, mirrored at every seam so the terrain stays
continuous), then runs the ``terrainfactors`` job once per worker count, each
in a fresh interpreter: ``WORKERS=1`` is the one-process path (the baseline of
the same run), more workers a local Dask cluster. Reported per run: wall time
(cluster start included), the flow routing's share (it needs the whole DEM and
runs whole: in the job's process with one process, on one Dask worker beside
the window tasks with 2 or more), the window phase (computing and writing the
windows; with the routing on a worker it includes waiting for the routing),
throughput, the speed-up and parallel efficiency against the baseline (whole
run and window phase), CPU seconds of the job's process and
of its workers, peak memory, and whether the 8 bands equal the baseline's bit
for bit.

``OUT`` gets ``{"runs": [...], "settings": {...}}``.
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

from slidewise.bench.memory import quiet_context, run_child
from slidewise.bench.scaling import cpu_seconds, run_record, worker_counts

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEM = REPO / "tests" / "data" / "ecuador" / "dem_10m.tif"


def write_tiled_dem(source: Path, path: Path, size: int) -> Path:
    """A ``size`` x ``size`` float32 DEM tiled from ``source``, mirrored at the seams.

    The source's outer one-pixel ring is dropped (often a nodata border); its
    nodata holes stay NaN.
    """
    import rasterio
    from rasterio.transform import Affine

    with rasterio.open(source) as src:
        z = src.read(1, masked=True).astype(np.float32).filled(np.nan)[1:-1, 1:-1]
        crs, t = src.crs, src.transform
    tile = np.block([[z, z[:, ::-1]], [z[::-1], z[::-1, ::-1]]])
    reps = (-(-size // tile.shape[0]), -(-size // tile.shape[1]))
    dem = np.tile(tile, reps)[:size, :size]
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "float32",
        "crs": crs,
        "transform": Affine(t.a, 0.0, t.c, 0.0, t.e, t.f),
        "nodata": float("nan"),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(dem, 1)
    return path


def child_job(dem: str, out_dir: str, workers: int, block_size: int) -> dict[str, Any]:
    """Run ``terrainfactors`` in this (child) process with ``workers`` Dask workers."""
    from slidewise.engine.preparation.terrainfactors import run_job

    params: dict[str, Any] = {
        "INPUT": dem,
        "OUTPUT": str(Path(out_dir) / f"terrain_{workers}.tif"),
        "BLOCK_SIZE": block_size,
        "WORKERS": workers,
    }
    start, cpu = time.perf_counter(), cpu_seconds()
    result = run_job(params, quiet_context("terrainfactors", threads=1))
    record = run_record(start, cpu, workers, result.figures, params["OUTPUT"])
    phases = ("flow_routing", "windows")
    for key in [f"{p}_{kind}" for p in phases for kind in ("seconds", "cpu_seconds")]:
        record[key] = result.figures[key]
    return record


def same_bits(a: str, b: str) -> bool:
    """True when two rasters hold the same float32 bits in every band (NaN included)."""
    import rasterio

    with rasterio.open(a) as x, rasterio.open(b) as y:
        return bool(np.array_equal(x.read().view(np.uint32), y.read().view(np.uint32)))


def measure(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Write the DEM, then run the job once per worker count; one record per run."""
    dem = write_tiled_dem(Path(args.dem), work / "dem.tif", args.size)
    runs = []
    for workers in args.workers:
        cmd = ["--child-job", str(dem), str(work), "--workers", str(workers)]
        cmd += ["--block-size", str(args.block_size)]
        runs.append({"workers": workers, **run_child("slidewise.bench.terrain_scaling", cmd)})
    base = runs[0]
    for run in runs:
        run["px_per_s"] = round(args.size**2 / run["seconds"], 1)
        run["speed_up"] = round(base["seconds"] / run["seconds"], 3)
        run["efficiency"] = round(run["speed_up"] / run["workers"], 3)
        run["routing_share"] = round(run["flow_routing_seconds"] / run["seconds"], 3)
        run["windows_speed_up"] = round(base["windows_seconds"] / run["windows_seconds"], 3)
        run["identical"] = same_bits(base["output"], run["output"])
    return runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="output JSON file")
    parser.add_argument("--size", type=int, default=3000)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--dem", default=str(DEFAULT_DEM))
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--child-job", nargs=2, metavar=("DEM", "OUT_DIR"))
    args = parser.parse_args(argv)
    args.workers = worker_counts(parser, args.workers, bool(args.child_job))
    return args


def print_table(runs: list[dict[str, Any]]) -> None:
    """The short table of the benchmark."""
    print(
        "workers  seconds  routing s  windows s  px/s      speed-up  efficiency  "
        "windows speed-up  job CPU s (routing, windows)  workers CPU s  job MB  identical"
    )
    for r in runs:
        cpu = r["cpu_seconds"]
        print(
            f"{r['workers']:>7}  {r['seconds']:7.1f}  {r['flow_routing_seconds']:9.1f}  "
            f"{r['windows_seconds']:9.1f}  {r['px_per_s']:<8.0f}  {r['speed_up']:8.2f}  "
            f"{r['efficiency']:10.3f}  {r['windows_speed_up']:16.2f}  "
            f"{cpu['job']:9.1f} ({r['flow_routing_cpu_seconds']:5.1f}, "
            f"{r['windows_cpu_seconds']:5.1f})  {cpu['workers']:13.1f}  "
            f"{r['job_peak_rss_mb']:6.0f}  {r['identical']}"
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m slidewise.bench.terrain_scaling``."""
    args = parse_args(argv)
    if args.child_job:
        dem, out_dir = args.child_job
        print(json.dumps(child_job(dem, out_dir, args.workers[-1], args.block_size)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="slidewise-terrain-scaling-", dir=args.workdir))
    try:
        runs = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "child_job")}
    print_table(runs)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "settings": settings}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
