"""Throughput, seam error and memory of tiled landslide mapping.

Usage::

    python -m slidewise.bench.mapping_throughput --size N --json OUT [--rss-check]

One fixed, randomly initialised U-Net (ResNet-18 encoder, 14 input bands,
``torch.manual_seed(0)``) maps a synthetic N x N, 14-band uint16 GeoTIFF two
ways in one run:

* ``seed``: the loop of Prakash et al. (2021): the image read into memory,
  224 px tiles at 50 % overlap (stride 112), batch 1, keeping only the central
  112 px of each tile (so a 56 px border is never predicted).
* ``engine``: :func:`slidewise.engine.imagery.tiling.predict_raster` with its defaults.

Throughput is raster pixels per second (N² / wall time, reading included),
the best of ``--repeats`` runs after one warm-up run each, the two methods
alternating so that load from other processes hits both alike. The seam error
is the largest absolute probability difference between a tiled prediction and
a prediction of the whole raster at once (on an S x S raster, S = min(N,
``--seam-size``), mirrored by the engine's border margin like the engine's
own edge tiles), over the pixels the method predicts; ``seam_tiles`` is the
number of engine tiles on that raster (1: the engine's tile covers it, so its
seam error is zero by construction: give a larger ``--seam-size``). The engine's peak
resident memory is measured in a separate process running the
``maplandslides`` job (probability and mask GeoTIFFs) on the same raster.
``--rss-check`` also maps an 8,000 x 8,000 x 14 raster in such a process.

Both methods run under the memory setting of the engine's worker process
(freed memory kept for reuse, :mod:`slidewise.engine.core.allocator`);
``--allocator default`` runs both with the C library's defaults instead.

``--backend onnxruntime|openvino|auto`` adds a third method in the same
run: the engine's tiling with the model computed by that inference backend
(:mod:`slidewise.engine.imagery.backends`; ``auto`` runs the engine's timed
probe, as the job does on a raster of 4 megapixels or more), timed
alternately with the other two (``backend_px_per_s``, ``backend_ratio``
against the seed, ``backend_vs_torch``, its seam error and
its largest difference from the PyTorch path); the child job then runs with
that BACKEND. ``--floor`` adds the per-pixel compute floor: the model's
multiply-adds per pixel (forward hooks on every convolution) against the
multiply-add rate of a 2048 x 2048 float32 ``torch.matmul`` on the same
threads (``floor_px_per_s`` at the engine's redundancy, and each method's
fraction of it), and the per-layer floor (:mod:`slidewise.bench.layer_floor`):
each convolution of the model timed as ``torch.matmul`` with its own im2col
GEMM shape (M = output pixels, K = Cin x kh x kw, N = Cout) at the engine's
tile side, the times added per tile and divided by the redundancy
(``layer_floor_px_per_s``, ``layer_floor_vs_seed``, each method's
``*_fraction_of_layer_floor``); ``layer_conv_px_per_s`` is the convolutions
each timed alone as the engine runs them, ``layer_best_px_per_s`` the faster
of the two per layer, and ``layer_floor_layers`` the per-layer table.

``--device cuda`` runs both methods on the GPU (the seed's loop still batch 1,
float32, one tile copied to the device and back at a time; the engine with
its CUDA defaults); ``--amp on|off`` and ``--channels-last on|off`` override
the engine's defaults (``auto``: float16 autocast and channels-last on CUDA).
``--sweep-tiles 512,1024 --sweep-batches 4,8,16`` also times the engine for
every tile/batch pair on the same raster (``sweep``: one record per pair, its
px/s and ratio to the seed). docs/gpu.md has the GPU session's commands.

Writes the JSON figures (``seed_px_per_s``, ``engine_px_per_s``, ``ratio``,
``engine_peak_rss_mb``, ``seam_max_abs_diff`` and more) and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.bench.memory import peak_rss_mb, quiet_context, rss_mb, run_child

BANDS = 14
SEED_TILE = 224
SEED_KEEP = 112
RSS_CHECK_SIZE = 8000
DN_MEAN = 2000.0
DN_STD = 800.0


def build_bench_model() -> Any:
    """The fixed benchmark model: U-Net / ResNet-18, 14 bands, seed 0, eval mode."""
    import torch

    from slidewise.engine.imagery.segmodels import SegModelConfig, build_model

    torch.manual_seed(0)
    config = SegModelConfig(architecture="unet", encoder="resnet18", in_channels=BANDS)
    return build_model(config).eval(), config


def normalisation() -> dict[str, Any]:
    """Per-band mean and std of the synthetic digital numbers."""
    return {"kind": "bench", "mean": [DN_MEAN] * BANDS, "std": [DN_STD] * BANDS}


def write_synthetic_raster(path: Path, size: int, seed: int = 0, rows: int = 512) -> Path:
    """Write a size x size x 14 uint16 GeoTIFF (UTM, 10 m) strip by strip.

    Each band is a sum of two plane waves (periods 50-500 px) plus Gaussian
    noise, scaled like Sentinel-2 reflectance numbers.
    """
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    freq = rng.uniform(1 / 500, 1 / 50, size=(BANDS, 2, 2)) * rng.choice([-1, 1], (BANDS, 2, 2))
    phase = rng.uniform(0, 2 * np.pi, size=(BANDS, 2))
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": BANDS,
        "dtype": "uint16",
        "crs": "EPSG:32645",
        "transform": from_origin(400000.0, 2500000.0, 10.0, 10.0),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "BIGTIFF": "IF_SAFER",
    }
    cols = np.arange(size, dtype=np.float32)[None, :]
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, size, rows):
            h = min(rows, size - top)
            r = np.arange(top, top + h, dtype=np.float32)[:, None]
            noise = np.random.default_rng([seed, top])
            block = np.empty((BANDS, h, size), dtype=np.uint16)
            for b in range(BANDS):
                wave = sum(
                    np.sin(2 * np.pi * (freq[b, k, 0] * r + freq[b, k, 1] * cols) + phase[b, k])
                    for k in range(2)
                )
                value = DN_MEAN + DN_STD * (0.5 * wave + 0.5 * noise.standard_normal((h, size)))
                block[b] = np.clip(value, 0, 65535).astype(np.uint16)
            dst.write(block, window=Window(0, top, size, h))
            for b in range(1, BANDS + 1):
                dst.set_band_description(b, f"B{b}")
    return path


def seed_predict(model: Any, path: Path, norm: dict[str, Any]) -> np.ndarray:
    """The seed's loop: 224 px tiles, stride 112, batch 1, keep the central 112 px."""
    import rasterio
    import torch

    from slidewise.engine.imagery.segmodels import normalise

    with rasterio.open(path) as src:
        image = torch.from_numpy(src.read().astype(np.float32))[None]
    image = normalise(image, norm)
    _, _, height, width = image.shape
    out = np.full((height, width), np.nan, dtype=np.float32)
    lo, hi = (SEED_TILE - SEED_KEEP) // 2, (SEED_TILE + SEED_KEEP) // 2
    device = next(model.parameters()).device  # --device: the seed's loop moves one tile at a time
    with torch.inference_mode():
        for y in range(0, height - SEED_TILE + 1, SEED_KEEP):
            for x in range(0, width - SEED_TILE + 1, SEED_KEEP):
                tile = image[:, :, y : y + SEED_TILE, x : x + SEED_TILE].to(device)
                prob = torch.sigmoid(model(tile))[0, 0].float().cpu().numpy()
                out[y + lo : y + hi, x + lo : x + hi] = prob[lo:hi, lo:hi]
    return out


def engine_predict(
    model: Any, path: Path, norm: dict[str, Any], args: argparse.Namespace, torch_path: bool = True
) -> Any:
    """The engine with its defaults (or the --tile/--overlap/--batch-size overrides).

    ``torch_path=False``: ``model`` is an inference backend's module (plain NCHW input).
    """
    from slidewise.engine.imagery.tiling import PredictionStats, TilingOptions, predict_raster

    given: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("tile", "overlap", "batch_size")
        if getattr(args, name) is not None
    }
    given.setdefault("tile", engine_tile(args))
    if torch_path:
        given.update(device_options(args))
    else:
        given["channels_last"] = False
    stats = PredictionStats()
    prob = predict_raster(model, str(path), TilingOptions(stats=stats, **given), normalisation=norm)
    return prob, stats


def engine_tile(args: argparse.Namespace) -> int:
    """The engine's tile side: ``--tile``, else the job's rule on a CPU for the bench model.

    :func:`slidewise.engine.imagery.tiling.default_tile_size` of the benchmark
    model's metadata (a U-Net without a training tile), as ``maplandslides``
    picks it when TILE_SIZE is empty.
    """
    from slidewise.engine.imagery.tiling import default_tile_size

    if args.tile is not None:
        return int(args.tile)
    config = {"architecture": "unet", "encoder": "resnet18"}
    meta = argparse.Namespace(tile_size=0, config=config, architecture="unet")
    return default_tile_size(meta, getattr(args, "device", None) or "cpu")


def _timed(func: Any, *a: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = func(*a)
    return time.perf_counter() - start, out


def run_job_child(
    raster: str, model_path: str, out_dir: str, threads: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """Run the maplandslides job in this (child) process; report time and peak RSS."""
    from slidewise.engine.mapping.apply import run_map

    import_rss = rss_mb()
    ctx = quiet_context("maplandslides", threads)
    params = {
        "INPUT": raster,
        "MODEL": model_path,
        "OUTPUT_PROBABILITY": str(Path(out_dir) / "probability.tif"),
        "OUTPUT_MASK": str(Path(out_dir) / "mask.tif"),
        **extra,
    }
    start = time.perf_counter()
    result = run_map(params, ctx)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_imports_mb": import_rss,
        "tiles": result.figures.get("tiles"),
        "tile_size": result.figures.get("tile_size"),
        "backend": result.figures.get("backend"),
    }


def measure_child(
    raster: Path, model_path: Path, out_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Run :func:`run_job_child` in a fresh interpreter and return its figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        "--child-job",
        str(raster),
        str(model_path),
        str(out_dir),
        "--threads",
        str(args.threads),
    ]
    for flag, value in (("--tile", args.tile), ("--overlap", args.overlap)):
        if value is not None:
            cmd += [flag, str(value)]
    if args.batch_size is not None:
        cmd += ["--batch-size", str(args.batch_size)]
    cmd += ["--backend", args.backend]
    return run_child("slidewise.bench.mapping_throughput", cmd)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="raster side N (pixels)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per method")
    parser.add_argument("--seam-size", type=int, default=1024, help="largest seam raster side")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--tile", type=int, default=None, help="engine tile (default: engine's)")
    parser.add_argument("--overlap", type=int, default=None, help="engine overlap")
    parser.add_argument("--batch-size", type=int, default=None, help="engine batch size")
    parser.add_argument(
        "--rss-check", action="store_true", help="also map 8000 x 8000 x 14 in a child process"
    )
    parser.add_argument(
        "--allocator",
        choices=("engine", "default"),
        default="engine",
        help="engine: keep freed memory as the engine's worker does (both methods); "
        "default: the C library's defaults",
    )
    parser.add_argument(
        "--backend",
        choices=("torch", "onnxruntime", "openvino", "openvino_bf16", "auto"),
        default="torch",
        help="also time the engine with this inference backend (torch: only today's path)",
    )
    parser.add_argument(
        "--floor", action="store_true", help="also measure the per-pixel compute floor"
    )
    parser.add_argument("--rss-size", type=int, default=RSS_CHECK_SIZE, help=argparse.SUPPRESS)
    parser.add_argument("--child-job", nargs=3, default=None, help=argparse.SUPPRESS)
    add_device_args(parser)
    args = parser.parse_args(argv)
    check_device_args(parser, args)
    return args


def child_main(args: argparse.Namespace) -> int:
    """``--child-job RASTER MODEL OUT_DIR``: run the job here and print its figures as JSON."""
    extra = {
        key: value
        for key, value in (
            ("TILE_SIZE", args.tile),
            ("OVERLAP", args.overlap),
            ("BATCH_SIZE", args.batch_size),
            ("BACKEND", args.backend),
        )
        if value is not None
    }
    raster, model_file, out_dir = args.child_job
    print(json.dumps(run_job_child(raster, model_file, out_dir, args.threads, extra)))
    return 0


@dataclass
class Timings:
    """The timed runs of both methods, and their last predictions.

    Attributes:
        seed: Seconds of each run of the seed's loop.
        engine: Seconds of each run of the engine.
        seed_out: The seed's last prediction.
        engine_out: The engine's last prediction.
        stats: What the engine's last prediction did.
    """

    seed: list[float] = field(default_factory=list)
    engine: list[float] = field(default_factory=list)
    seed_out: Any = None
    engine_out: Any = None
    stats: Any = None
    backend: list[float] = field(default_factory=list)
    backend_out: Any = None


@dataclass(frozen=True)
class Bench:
    """What both methods run: the models, the normalisation and the command line.

    Attributes:
        model: The engine's model.
        seed_model: A plain-layout copy, as the seed ran it.
        norm: Per-band normalisation.
        args: The command line.
        backend_model: The ``--backend`` module (``None``: torch only).
        backend_name: The backend it runs on (``auto`` resolved).
    """

    model: Any
    seed_model: Any
    norm: dict[str, Any]
    args: argparse.Namespace
    backend_model: Any = None
    backend_name: str = "torch"


def warm_up(bench: Bench, work: Path) -> None:
    """Build each method's kernels on a small raster of its own tile shape.

    The first call of a tile shape builds its kernels, so each method first runs
    once on a small raster made of its own tile shape (the seed's 224 px tiles;
    the one tile of the engine's layout for this raster); then the two alternate.
    """
    from slidewise.engine.imagery.tiling import DEFAULT_OVERLAP, TileLayout

    args = bench.args
    small = write_synthetic_raster(work / "warmup.tif", 448, seed=1)
    seed_predict(bench.seed_model, small, bench.norm)
    layout = TileLayout.plan(
        args.size,
        args.size,
        BANDS,
        tile=engine_tile(args),
        overlap=DEFAULT_OVERLAP if args.overlap is None else args.overlap,
    )
    side = layout.rows.tile - 2 * layout.rows.margin
    engine_warm = write_synthetic_raster(work / "warmup_engine.tif", side, seed=1)
    engine_predict(bench.model, engine_warm, bench.norm, args)
    if bench.backend_model is not None:
        engine_predict(bench.backend_model, engine_warm, bench.norm, args, False)


def time_methods(bench: Bench, raster: Path) -> Timings:
    """Run the methods (seed, engine, and the ``--backend`` one) alternately ``--repeats`` times."""
    timings = Timings()
    for _ in range(max(1, bench.args.repeats)):
        t, timings.seed_out = _timed(seed_predict, bench.seed_model, raster, bench.norm)
        timings.seed.append(t)
        t, (timings.engine_out, timings.stats) = _timed(
            engine_predict, bench.model, raster, bench.norm, bench.args
        )
        timings.engine.append(t)
        if bench.backend_model is not None:
            t, (timings.backend_out, _) = _timed(
                engine_predict, bench.backend_model, raster, bench.norm, bench.args, False
            )
            timings.backend.append(t)
    assert timings.stats is not None and timings.seed_out is not None
    assert timings.engine_out is not None
    return timings


def seam_figures(bench: Bench, work: Path, raster: Path, timings: Timings) -> dict[str, Any]:
    """Seam errors of both methods against one whole-raster prediction."""
    import rasterio

    from slidewise.engine.imagery.tiling import predict_whole_image, seam_error

    args, norm = bench.args, bench.norm
    seam = min(args.size, args.seam_size)
    seed_out, engine_out = timings.seed_out, timings.engine_out
    backend_out = timings.backend_out
    if seam != args.size:
        raster = write_synthetic_raster(work / "seam.tif", seam)
        seed_out = seed_predict(bench.seed_model, raster, norm)
        engine_out, _ = engine_predict(bench.model, raster, norm, args)
        if bench.backend_model is not None:
            backend_out, _ = engine_predict(bench.backend_model, raster, norm, args, False)
    with rasterio.open(raster) as src:
        image = src.read().astype(np.float32)
    pad = timings.stats.margin
    whole = predict_whole_image(bench.model, image, normalisation=norm, pad=pad)
    whole0 = predict_whole_image(bench.model, image, normalisation=norm, pad=0)
    figures = {
        "seam_max_abs_diff": round(seam_error(engine_out, whole), 6),
        "seed_seam_max_abs_diff": round(seam_error(seed_out, whole), 6),
        "seed_seam_max_abs_diff_zero_pad_reference": round(seam_error(seed_out, whole0), 6),
        "seam_size": seam,
        "seam_reference_pad": pad,
        "seam_tiles": seam_tiles(args, seam),
    }
    if backend_out is not None:
        figures["backend_seam_max_abs_diff"] = round(seam_error(backend_out, whole), 6)
        figures["backend_max_abs_diff_vs_torch"] = float(seam_error(backend_out, engine_out))
    return figures


def seam_tiles(args: argparse.Namespace, seam: int) -> int:
    """Tiles of the engine's layout on the seam raster (1: no seam to measure)."""
    from slidewise.engine.imagery.tiling import DEFAULT_OVERLAP, TileLayout

    overlap = DEFAULT_OVERLAP if args.overlap is None else args.overlap
    return TileLayout.plan(seam, seam, BANDS, engine_tile(args), overlap).n_tiles


def speed_figures(args: argparse.Namespace, timings: Timings) -> dict[str, Any]:
    """Pixels per second of both methods, and what the engine ran."""
    from slidewise.engine.imagery.tiling import default_batch_size

    pixels = args.size * args.size
    stats = timings.stats
    seed_px = pixels / min(timings.seed)
    engine_px = pixels / min(timings.engine)
    seed_predicted = int(np.count_nonzero(np.isfinite(timings.seed_out)))
    seed_predicted_px = seed_predicted / min(timings.seed)
    return {
        "seed_px_per_s": round(seed_px, 1),
        "engine_px_per_s": round(engine_px, 1),
        "ratio": round(engine_px / seed_px, 3),
        "seed_seconds": [round(t, 3) for t in timings.seed],
        "engine_seconds": [round(t, 3) for t in timings.engine],
        "engine_tile": stats.tile,
        "engine_overlap": stats.overlap,
        "engine_batch_size": args.batch_size or default_batch_size(args.device),
        "engine_tiles": stats.tiles_run,
        "engine_redundancy": round(stats.tiles_run * stats.tile**2 / pixels, 3),
        "seed_tiles": ((args.size - SEED_TILE) // SEED_KEEP + 1) ** 2,
        "seed_predicted_px_per_s": round(seed_predicted_px, 1),
        "ratio_predicted_pixels": round(engine_px / seed_predicted_px, 3),
        "seed_unpredicted_fraction": round(1 - seed_predicted / pixels, 4),
    }


def job_figures(child: dict[str, Any], pixels: int) -> dict[str, Any]:
    """Time and memory of the maplandslides job run in a child process."""
    return {
        "engine_peak_rss_mb": round(child["peak_rss_mb"], 1),
        "engine_job_seconds": round(child["seconds"], 3),
        "engine_job_px_per_s": round(pixels / child["seconds"], 1),
        "engine_rss_after_imports_mb": round(child["rss_after_imports_mb"], 1),
    }


def machine_figures(allocator: bool) -> dict[str, Any]:
    """Threads, allocator, versions and load of the machine."""
    import torch

    return {
        "threads": torch.get_num_threads(),
        "allocator_keeps_freed_memory": allocator,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def rss_check(args: argparse.Namespace, work: Path, model_path: Path) -> dict[str, Any]:
    """``--rss-check``: map a ``--rss-size`` raster with the job in a child process."""
    big = write_synthetic_raster(work / "rss_check.tif", args.rss_size, seed=2)
    started = time.perf_counter()
    child = measure_child(big, model_path, work / "rss_child", args)
    return {
        "rss_check_size": args.rss_size,
        "rss_check_peak_rss_mb": round(child["peak_rss_mb"], 1),
        "rss_check_seconds": round(child["seconds"], 1),
        "rss_check_px_per_s": round(args.rss_size**2 / child["seconds"], 1),
        "rss_check_wall_seconds": round(time.perf_counter() - started, 1),
        "rss_check_within_2gb": child["peak_rss_mb"] <= 2048,
    }


def prepare_backend(args: argparse.Namespace, model: Any, model_path: Path) -> tuple[Any, str]:
    """The ``--backend`` module of the benchmark model and its name (``None`` for torch)."""
    if args.backend == "torch":
        return None, "torch"
    from slidewise.engine.imagery.backends import (
        AUTO_MIN_PIXELS,
        BackendRequest,
        choose_backend,
        model_key,
    )

    request = BackendRequest(
        model,
        BANDS,
        model_key(model_path),
        threads=args.threads,
        tile=engine_tile(args),
        pixels=max(args.size * args.size, AUTO_MIN_PIXELS),  # auto probes as on a large raster
    )
    module, name = choose_backend(args.backend, request)
    return (None if name == "torch" else module), name


def backend_speed(args: argparse.Namespace, bench: Bench, timings: Timings) -> dict[str, Any]:
    """Pixels per second of the ``--backend`` method, against the seed and the torch path."""
    out: dict[str, Any] = {"backend": bench.backend_name}
    if not timings.backend:
        return out
    pixels = args.size * args.size
    backend_px = pixels / min(timings.backend)
    out.update(
        backend_px_per_s=round(backend_px, 1),
        backend_ratio=round(min(timings.seed) / min(timings.backend), 3),
        backend_vs_torch=round(min(timings.engine) / min(timings.backend), 3),
        backend_seconds=[round(t, 3) for t in timings.backend],
    )
    return out


def macs_per_pixel(model: Any, side: int = 256) -> float:
    """Multiply-adds per output pixel of ``model``: every convolution, counted by forward hooks."""
    import torch
    from torch import nn

    total = 0

    def count(module: Any, inputs: Any, output: Any) -> None:
        nonlocal total
        weight = module.weight
        if isinstance(module, nn.ConvTranspose2d):
            total += inputs[0].numel() * weight.shape[1] * weight.shape[2] * weight.shape[3]
        else:
            total += output.numel() * weight.shape[1] * weight.shape[2] * weight.shape[3]

    convs = (nn.Conv2d, nn.ConvTranspose2d)
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, convs)]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, BANDS, side, side))
    finally:
        for hook in hooks:
            hook.remove()
    return total / (side * side)


def gemm_macs_per_s(n: int = 2048, runs: int = 5) -> float:
    """Multiply-adds per second of a float32 ``n`` x ``n`` matmul on torch's threads (best run)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return n**3 / best


def floor_figures(model: Any, speed: dict[str, Any], pixels: int, runs: int = 5) -> dict[str, Any]:
    """``--floor``: both compute floors in raster px/s and each method's fraction of them.

    The GEMM floor: the model's multiply-adds per pixel at the rate of one
    2048 x 2048 matmul. The per-layer floor (:mod:`slidewise.bench.layer_floor`):
    each convolution timed as its own im2col GEMM at the engine's tile side.
    """
    macs = macs_per_pixel(model)
    rate = gemm_macs_per_s()
    redundancy = float(speed["engine_redundancy"])
    floor = rate / (macs * redundancy)
    out = {
        "model_macs_per_pixel": round(macs, 1),
        "gemm_gmacs_per_s": round(rate / 1e9, 2),
        "floor_px_per_s": round(floor, 1),
        "engine_fraction_of_floor": round(speed["engine_px_per_s"] / floor, 3),
        "seed_fraction_of_floor_at_its_redundancy": round(
            speed["seed_px_per_s"] * speed["seed_tiles"] * SEED_TILE**2 / pixels * macs / rate, 3
        ),
        "floor_vs_seed": round(floor / speed["seed_px_per_s"], 3),
    }
    if "backend_px_per_s" in speed:
        out["backend_fraction_of_floor"] = round(speed["backend_px_per_s"] / floor, 3)
    out.update(layer_floor_figures(model, speed, runs))
    return out


def layer_floor_figures(model: Any, speed: dict[str, Any], runs: int = 5) -> dict[str, Any]:
    """The per-layer GEMM floor at the engine's tile side (keys ``layer_*``)."""
    from slidewise.bench.layer_floor import layer_floor
    from slidewise.engine.imagery.tiling import make_runner

    engine_model = make_runner(copy.deepcopy(model), {}, "cpu").model  # folded, as the engine
    found = layer_floor(engine_model, BANDS, int(speed["engine_tile"]), runs)
    redundancy = float(speed["engine_redundancy"])
    floor = found.px_per_s(redundancy)
    out: dict[str, Any] = {
        "layer_floor_tile": found.side,
        "layer_floor_px_per_s": round(floor, 1),
        "layer_floor_vs_seed": round(floor / speed["seed_px_per_s"], 3),
        "layer_floor_gmacs_per_s": round(found.macs / found.gemm_seconds / 1e9, 2),
        "layer_floor_gemm_seconds_per_tile": round(found.gemm_seconds, 4),
        "layer_conv_seconds_per_tile": round(found.conv_seconds, 4),
        "layer_conv_px_per_s": round(found.px_per_s(redundancy, found.conv_seconds), 1),
        "layer_best_seconds_per_tile": round(found.best_seconds, 4),
        "layer_best_px_per_s": round(found.px_per_s(redundancy, found.best_seconds), 1),
        "engine_fraction_of_layer_floor": round(speed["engine_px_per_s"] / floor, 3),
    }
    if "backend_px_per_s" in speed:
        out["backend_fraction_of_layer_floor"] = round(speed["backend_px_per_s"] / floor, 3)
    out["layer_floor_layers"] = found.layers
    return out


# --------------------------------------------------------------------------- device, AMP, sweeps


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--amp``, ``--channels-last``, ``--sweep-tiles``, ``--sweep-batches``."""
    parser.add_argument("--device", default="cpu", help="torch device of both methods (cuda)")
    choices = ("auto", "on", "off")
    parser.add_argument(
        "--amp", choices=choices, default="auto", help="engine float16 autocast (auto: on CUDA)"
    )
    parser.add_argument(
        "--channels-last",
        choices=choices,
        default="auto",
        help="engine channels-last memory format (auto: on CUDA and x86 CPUs)",
    )
    parser.add_argument(
        "--sweep-tiles", type=_int_list, default=[], help="also time these engine tiles: 512,1024"
    )
    parser.add_argument(
        "--sweep-batches", type=_int_list, default=[], help="and these batch sizes: 4,8,16"
    )


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def check_device_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a CUDA device this machine lacks, and the CPU-only options on a GPU."""
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this machine has no CUDA GPU; use --device cpu")
    if args.device != "cpu" and (args.backend != "torch" or args.floor):
        parser.error("--backend and --floor measure the CPU: use them with --device cpu")


def device_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine's ``TilingOptions`` for ``--device``, ``--amp`` and ``--channels-last``."""
    switches = {"on": True, "off": False, "auto": None}
    return {
        "device": args.device,
        "amp": switches[args.amp],
        "channels_last": switches[args.channels_last],
    }


def device_figures(args: argparse.Namespace) -> dict[str, Any]:
    """The device both methods ran on, and the engine's AMP and memory-format switches."""
    import torch

    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None
    return {
        "device": args.device,
        "gpu": name,
        "amp": args.amp,
        "channels_last": args.channels_last,
    }


def sweep_figures(bench: Bench, raster: Path, seed_px_per_s: float) -> list[dict[str, Any]]:
    """The engine timed for every ``--sweep-tiles`` x ``--sweep-batches`` pair (best of repeats).

    Each pair first runs once untimed (its kernels and, on CUDA, its memory pool).
    """
    args = bench.args
    pixels = args.size * args.size
    out = []
    for tile in args.sweep_tiles or [args.tile]:
        for batch in args.sweep_batches or [args.batch_size]:
            pair = copy.copy(args)
            pair.tile, pair.batch_size = tile, batch
            engine_predict(bench.model, raster, bench.norm, pair)
            runs = [
                _timed(engine_predict, bench.model, raster, bench.norm, pair)
                for _ in range(max(1, args.repeats))
            ]
            best = min(t for t, _ in runs)
            stats = runs[-1][1][1]
            out.append(
                {
                    "tile": stats.tile,
                    "batch_size": batch,
                    "px_per_s": round(pixels / best, 1),
                    "ratio": round(pixels / best / seed_px_per_s, 3),
                    "tiles": stats.tiles_run,
                }
            )
    return out


def run_bench(args: argparse.Namespace, allocator: bool) -> dict[str, Any]:
    """The methods on a synthetic raster, the job in a child process; the figures."""
    from slidewise.engine.imagery.segmodels import save_mapping_model

    model, config = build_bench_model()
    figures: dict[str, Any] = {"size": args.size}
    with tempfile.TemporaryDirectory(prefix="slidewise-bench-") as tmp:
        work = Path(tmp)
        raster = write_synthetic_raster(work / "synthetic.tif", args.size)
        model_path = work / "bench-unet.safetensors"
        bands = [f"B{b}" for b in range(1, BANDS + 1)]
        save_mapping_model(model_path, model, config, bands, normalisation())
        backend_model, backend_name = prepare_backend(args, model, model_path)
        bench = Bench(
            model,
            copy.deepcopy(model).to(args.device),
            normalisation(),
            args,
            backend_model,
            backend_name,
        )
        warm_up(bench, work)
        timings = time_methods(bench, raster)
        seams = seam_figures(bench, work, raster, timings)
        child = measure_child(raster, model_path, work / "child", args)
        speed = {**speed_figures(args, timings), **backend_speed(args, bench, timings)}
        figures.update(_in_order(speed, job_figures(child, args.size**2), seams))
        figures["engine_job_backend"] = child.get("backend")
        figures["engine_job_tile"] = child.get("tile_size")
        if args.floor:
            figures.update(floor_figures(bench.seed_model, speed, args.size**2))
        if args.sweep_tiles or args.sweep_batches:
            figures["sweep"] = sweep_figures(bench, raster, speed["seed_px_per_s"])
        figures.update(machine_figures(allocator))
        figures.update(device_figures(args))
        if args.rss_check:
            figures.update(rss_check(args, work, model_path))
    return figures


def _in_order(speed: dict[str, Any], job: dict[str, Any], seams: dict[str, Any]) -> dict[str, Any]:
    """The figures in the order the JSON has always listed them."""
    first = ("seed_px_per_s", "engine_px_per_s", "ratio")
    out = {k: speed[k] for k in first}
    out["engine_peak_rss_mb"] = job["engine_peak_rss_mb"]
    out.update(seams)
    out.update({k: v for k, v in speed.items() if k not in first})
    out.update({k: v for k, v in job.items() if k != "engine_peak_rss_mb"})
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--child-job``, the job of a child process)."""
    args = parse_args(argv)

    import torch

    from slidewise.engine.core.allocator import reuse_freed_memory

    # The engine's worker process keeps freed memory for reuse (runtime.apply); both
    # methods run under that setting here, the seed's loop included.
    allocator = reuse_freed_memory() if args.allocator == "engine" else False
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.child_job is not None:
        return child_main(args)
    figures = run_bench(args, allocator)
    _print_table(figures)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


def _print_table(f: dict[str, Any]) -> None:
    print(f"mapping throughput, {f['size']} x {f['size']} x {BANDS}, {f['threads']} thread(s)")
    print(f"{'method':<34}{'px/s':>12}{'seam max|diff|':>16}")
    print(
        f"{'seed (224/112 centre, batch 1)':<34}{f['seed_px_per_s']:>12.0f}"
        f"{f['seed_seam_max_abs_diff']:>16.4f}"
    )
    name = f"engine ({f['engine_tile']}/{f['engine_overlap']} blend)"
    print(f"{name:<34}{f['engine_px_per_s']:>12.0f}{f['seam_max_abs_diff']:>16.4f}")
    if "backend_px_per_s" in f:
        name = f"engine, backend {f['backend']}"
        print(f"{name:<34}{f['backend_px_per_s']:>12.0f}{f['backend_seam_max_abs_diff']:>16.4f}")
        print(
            f"ratio backend/seed: {f['backend_ratio']:.2f}x; backend/torch "
            f"{f['backend_vs_torch']:.2f}x"
        )
    if "floor_px_per_s" in f:
        print(
            f"compute floor: {f['model_macs_per_pixel']:.0f} MAC/px at "
            f"{f['gemm_gmacs_per_s']:.1f} GMAC/s -> {f['floor_px_per_s']:.0f} px/s; engine at "
            f"{f['engine_fraction_of_floor']:.0%}"
            + (
                f", backend at {f['backend_fraction_of_floor']:.0%}"
                if "backend_fraction_of_floor" in f
                else ""
            )
        )
    if "layer_floor_px_per_s" in f:
        print(
            f"per-layer floor ({f['layer_floor_tile']}-px tile, each conv as its GEMM): "
            f"{f['layer_floor_gmacs_per_s']:.1f} GMAC/s -> {f['layer_floor_px_per_s']:.0f} px/s "
            f"({f['layer_floor_vs_seed']:.2f}x the seed); engine at "
            f"{f['engine_fraction_of_layer_floor']:.0%}"
            + (
                f", backend at {f['backend_fraction_of_layer_floor']:.0%}"
                if "backend_fraction_of_layer_floor" in f
                else ""
            )
            + f"; convs alone {f['layer_conv_px_per_s']:.0f} px/s, faster of the two per layer "
            f"{f['layer_best_px_per_s']:.0f} px/s"
        )
    print(
        f"ratio engine/seed: {f['ratio']:.2f}x; "
        f"engine job peak RSS {f['engine_peak_rss_mb']:.0f} MB"
    )
    if "rss_check_size" in f:
        n = f["rss_check_size"]
        print(
            f"rss check {n} x {n} x {BANDS}: peak RSS {f['rss_check_peak_rss_mb']:.0f} MB, "
            f"{f['rss_check_seconds']:.0f} s ({f['rss_check_px_per_s']:.0f} px/s)"
        )


if __name__ == "__main__":
    sys.exit(main())
