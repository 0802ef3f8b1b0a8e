"""Benchmark: susceptibility prediction and landslide mapping on 1 and more local Dask workers.

Usage::

    python -m slidewise.bench.scaling --json OUT [--size 3000] [--workers 1,2]
        [--method meta] [--block-size 256] [--workdir DIR]
        [--tasks susceptibility,mapping,detection] [--map-size 1536] [--encoder resnet18]
        [--detect-size 1536]

Writes a synthetic ``size`` x ``size`` x 5 factor stack and inventory (those of
:mod:`slidewise.bench.susceptibility_memory`), trains one small model with the
``trainsusceptibility`` job, then runs the ``predictsusceptibility`` job once per
worker count, each in a fresh interpreter with one PyTorch thread: ``WORKERS=1``
is the one-process path (the baseline of the same run), more workers a local
Dask cluster. Reported per run: wall time (cluster start included), throughput,
parallel efficiency ``throughput / (workers x baseline throughput)``, peak
memory of the job's process and of the largest worker process, the largest
difference of the probability raster from the one-process output, and CPU
seconds of the job's process and of its workers (``cpu_efficiency``: the
baseline's CPU seconds over the run's, i.e. the share of the CPU that did the
baseline's work; unlike the wall-clock efficiency it hardly moves when other
work loads the machine).

Mapping (``--tasks ...,mapping``): the ``maplandslides`` job maps a synthetic
``map-size`` x ``map-size`` x 5 raster (the same kind of stack) with a randomly
initialised U-Net (``--encoder``, the trainmapping default resnet18; speed does
not depend on the weights), default tiles, once per worker count, reported the
same way (tile rows go to the workers, the job blends and writes).

Detection (``--tasks detection``, not in the default): the ``detectlandslides``
job (``SOURCE detector``) runs a randomly initialised Faster R-CNN (ResNet-18 FPN,
the traindetection defaults; 448-px tiles, 64 px overlap) on a synthetic
``detect-size`` x ``detect-size`` x 5 raster with ``SCORE_THRESHOLD`` 0, once per
worker count (tile batches go to the workers, the job merges the boxes);
``max_difference`` is then the largest score difference of the written boxes
(``inf`` when the boxes or their order differ).

``OUT`` gets ``{"runs": [...], "settings": {...}}``; each run names its ``task``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.bench.memory import peak_rss_mb, quiet_context, run_child
from slidewise.bench.susceptibility_memory import train_model, write_factor_stack, write_inventory

#: Start-up parts of a Dask run: cluster start, then the workers' first window.
WARMUP = ("start_seconds", "first_window_seconds")


def child_job(stack: str, model: str, out_dir: str, workers: int, block_size: int) -> dict:
    """Run ``predictsusceptibility`` in this (child) process with ``workers`` Dask workers."""
    import torch

    from slidewise.engine.susceptibility.predict import run_predict

    torch.set_num_threads(1)
    params: dict[str, Any] = {
        "MODEL": model,
        "INPUT": stack,
        "OUTPUT": str(Path(out_dir) / f"probability_{workers}.tif"),
        "BLOCK_SIZE": block_size,
        "WORKERS": workers,
    }
    start, cpu = time.perf_counter(), cpu_seconds()
    result = run_predict(params, quiet_context("predictsusceptibility", threads=1))
    return run_record(start, cpu, workers, result.figures, params["OUTPUT"])


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) of this process and of its ended children (the workers)."""
    me, kids = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return {"job": me.ru_utime + me.ru_stime, "workers": kids.ru_utime + kids.ru_stime}


def run_record(
    start: float, cpu: dict[str, float], workers: int, figures: dict[str, Any], output: str
) -> dict[str, Any]:
    """One run's record: wall and CPU seconds since ``start``/``cpu``, peak memory, figures."""
    seconds = time.perf_counter() - start
    used = {k: round(v - cpu[k], 2) for k, v in cpu_seconds().items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {
        "seconds": seconds,
        "cpu_seconds": used,
        "job_peak_rss_mb": peak_rss_mb(),
        "worker_peak_rss_mb": children if workers > 1 else None,
        "valid_pixels": figures.get("valid_pixels"),
        "cluster": figures.get("cluster"),
        "output": output,
    }


def child_map(image: str, model: str, out_dir: str, workers: int) -> dict:
    """Run ``maplandslides`` in this (child) process with ``workers`` Dask workers."""
    import torch

    from slidewise.engine.mapping.apply import run_map

    torch.set_num_threads(1)
    params: dict[str, Any] = {
        "MODEL": model,
        "INPUT": image,
        "OUTPUT_PROBABILITY": str(Path(out_dir) / f"landslides_{workers}.tif"),
        "WORKERS": workers,
    }
    start, cpu = time.perf_counter(), cpu_seconds()
    result = run_map(params, quiet_context("maplandslides", threads=1))
    return run_record(start, cpu, workers, result.figures, params["OUTPUT_PROBABILITY"])


def child_detect(image: str, model: str, out_dir: str, workers: int) -> dict:
    """Run ``detectlandslides`` (SOURCE detector) in this (child) process with ``workers``."""
    import torch

    from slidewise.engine.detection.apply import run_detect

    torch.set_num_threads(1)
    params: dict[str, Any] = {
        "MODEL": model,
        "INPUT": image,
        "SCORE_THRESHOLD": 0.0,
        "OUTPUT": str(Path(out_dir) / f"boxes_{workers}.gpkg"),
        "WORKERS": workers,
    }
    start, cpu = time.perf_counter(), cpu_seconds()
    result = run_detect(params, quiet_context("detectlandslides", threads=1))
    record = run_record(start, cpu, workers, result.figures, params["OUTPUT"])
    return record | {"tiles": result.figures["tiles"], "boxes": result.figures["boxes"]}


def detection_model(path: Path, image: Path, seed: int) -> str:
    """Save a randomly initialised Faster R-CNN on the stack's 5 bands (448-px tiles)."""
    import rasterio
    import torch

    from slidewise.bench.susceptibility_memory import FACTORS
    from slidewise.engine.detection.models import DetectorConfig, build_detector, save_detector

    with rasterio.open(image) as src:
        sample = src.read(window=((0, 256), (0, 256))).reshape(len(FACTORS), -1)
    mean = [float(v) for v in np.nanmean(sample, 1)]
    std = [float(v) for v in np.nanstd(sample, 1)]
    torch.manual_seed(seed)
    config = DetectorConfig(in_channels=len(FACTORS), image_mean=mean, image_std=std)
    save_detector(path, build_detector(config).eval(), config, list(FACTORS), tile_size=448)
    return str(path)


def mapping_model(path: Path, encoder: str, seed: int) -> str:
    """Save a randomly initialised U-Net on the stack's 5 bands as a mapping model."""
    import torch

    from slidewise.bench.susceptibility_memory import FACTORS
    from slidewise.engine.imagery.segmodels import SegModelConfig, build_model, save_mapping_model

    torch.manual_seed(seed)
    config = SegModelConfig(architecture="unet", encoder=encoder, in_channels=len(FACTORS))
    model = build_model(config).eval()
    save_mapping_model(path, model, config, list(FACTORS), {}, tile_size=576)
    return str(path)


def max_difference(a: str, b: str) -> float:
    """Largest absolute difference of two probability rasters (NaN where both are NaN).

    Box layers (``.gpkg``): the largest score difference, ``inf`` when the boxes differ.
    """
    import rasterio

    if a.endswith(".gpkg"):
        return box_difference(a, b)

    with rasterio.open(a) as x, rasterio.open(b) as y:
        pa, pb = x.read(1), y.read(1)
    if not np.array_equal(np.isnan(pa), np.isnan(pb)):
        return float("inf")
    return float(np.nanmax(np.abs(pa - pb)))


def box_difference(a: str, b: str) -> float:
    """Largest score difference of two box layers; ``inf`` when the boxes or their order differ."""
    import pyogrio.raw

    x, y = pyogrio.raw.read(a), pyogrio.raw.read(b)
    if list(x[2]) != list(y[2]):
        return float("inf")
    if not len(x[2]):
        return 0.0
    return float(np.max(np.abs(np.asarray(x[3][0]) - np.asarray(y[3][0]))))


def measure(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Write the inputs, then run each task once per worker count; one record per run."""
    runs: list[dict[str, Any]] = []
    if "susceptibility" in args.tasks:
        stack = write_factor_stack(work / "stack.tif", args.size, args.seed)
        inventory = write_inventory(work / "inventory.csv", args.size, seed=args.seed)
        trained = train_model(stack, inventory, work, args.method, args.iterations)
        common = ["--child-job", str(stack), trained["model"], str(work)]
        extra = ["--block-size", str(args.block_size)]
        runs += _runs(args, "susceptibility", common, extra, args.size**2)
    if "mapping" in args.tasks:
        image = write_factor_stack(work / "image.tif", args.map_size, args.seed + 1)
        model = mapping_model(work / "unet.safetensors", args.encoder, args.seed)
        common = ["--child-map", str(image), model, str(work)]
        runs += _runs(args, "mapping", common, [], args.map_size**2)
    if "detection" in args.tasks:
        image = write_factor_stack(work / "scene.tif", args.detect_size, args.seed + 2)
        model = detection_model(work / "detector.safetensors", image, args.seed)
        common = ["--child-detect", str(image), model, str(work)]
        runs += _runs(args, "detection", common, [], args.detect_size**2)
    return runs


def _runs(
    args: argparse.Namespace, task: str, common: list[str], extra: list[str], pixels: int
) -> list[dict[str, Any]]:
    """One child run per worker count, with efficiency against the first (1 worker)."""
    runs = []
    for workers in args.workers:
        cmd = [*common, "--workers", str(workers), *extra]
        runs.append({"task": task, "workers": workers, **run_child("slidewise.bench.scaling", cmd)})
    base = runs[0]
    for run in runs:
        run["px_per_s"] = round(pixels / run["seconds"], 1)
        run["efficiency"] = round(base["seconds"] / (run["seconds"] * run["workers"]), 3)
        warmup = sum((run.get("cluster") or {}).get(k, 0.0) for k in WARMUP)
        run["warmup_seconds"] = round(warmup, 2)
        steady = base["seconds"] / ((run["seconds"] - warmup) * run["workers"])
        run["steady_efficiency"] = round(steady, 3)
        run["max_difference"] = max_difference(base["output"], run["output"])
        run["cpu_efficiency"] = round(total_cpu(base) / max(1e-9, total_cpu(run)), 3)
    return runs


def total_cpu(run: dict[str, Any]) -> float:
    """CPU seconds of a run, its job's process and workers together."""
    return float(sum(run["cpu_seconds"].values()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="output JSON file")
    parser.add_argument("--size", type=int, default=3000)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--method", default="meta")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--child-job", nargs=3, metavar=("STACK", "MODEL", "OUT_DIR"))
    parser.add_argument("--tasks", default="susceptibility,mapping")
    parser.add_argument("--map-size", type=int, default=1536)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--child-map", nargs=3, metavar=("IMAGE", "MODEL", "OUT_DIR"))
    parser.add_argument("--detect-size", type=int, default=1536)
    parser.add_argument("--child-detect", nargs=3, metavar=("IMAGE", "MODEL", "OUT_DIR"))
    args = parser.parse_args(argv)
    child = bool(args.child_job or args.child_map or args.child_detect)
    args.workers = worker_counts(parser, args.workers, child)
    args.tasks = [t.strip() for t in str(args.tasks).split(",") if t.strip()]
    return args


def worker_counts(parser: argparse.ArgumentParser, text: str, child: bool) -> list[int]:
    """``--workers`` as numbers; a run (not a child job) starts with the 1-worker baseline."""
    counts = [int(w) for w in str(text).split(",")]
    if not child and counts[0] != 1:
        parser.error("--workers must start with 1 (the one-process baseline)")
    return counts


def print_table(runs: list[dict[str, Any]]) -> None:
    """The short table of the benchmark."""
    print(
        "task            workers  seconds  start-up  px/s      efficiency  after start-up  "
        "job MB  worker MB  max diff  job CPU s  workers CPU s  CPU efficiency"
    )
    for r in runs:
        worker_mb = f"{r['worker_peak_rss_mb']:.0f}" if r["worker_peak_rss_mb"] else "-"
        cpu = r["cpu_seconds"]
        print(
            f"{r['task']:<14}  {r['workers']:>7}  {r['seconds']:7.1f}  {r['warmup_seconds']:8.1f}  "
            f"{r['px_per_s']:<8.0f}  {r['efficiency']:>10.3f}  {r['steady_efficiency']:>14.3f}  "
            f"{r['job_peak_rss_mb']:6.0f}  {worker_mb:>9}  {r['max_difference']:8.2g}  "
            f"{cpu['job']:9.1f}  {cpu['workers']:13.1f}  {r['cpu_efficiency']:14.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m slidewise.bench.scaling``."""
    args = parse_args(argv)
    if args.child_job:
        stack, model, out_dir = args.child_job
        print(json.dumps(child_job(stack, model, out_dir, args.workers[-1], args.block_size)))
        return 0
    if args.child_map:
        image, model, out_dir = args.child_map
        print(json.dumps(child_map(image, model, out_dir, args.workers[-1])))
        return 0
    if args.child_detect:
        image, model, out_dir = args.child_detect
        print(json.dumps(child_detect(image, model, out_dir, args.workers[-1])))
        return 0
    work = Path(tempfile.mkdtemp(prefix="slidewise-scaling-", dir=args.workdir))
    try:
        runs = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    drop = ("json", "child_job", "child_map", "child_detect")
    settings = {k: v for k, v in vars(args).items() if k not in drop}
    print_table(runs)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "settings": settings}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
