"""Tile side against speed, seam error and redundancy of tiled mapping, in one run.

Usage::

    python -m slidewise.bench.tile_size --size N --tiles 576,1088 \
        --backends torch,openvino --rounds R --threads 2 --json OUT

The benchmark model and synthetic raster of :mod:`slidewise.bench.mapping_throughput`
are mapped by the engine's tiling (:func:`slidewise.engine.imagery.tiling.predict_raster`)
with each tile side and each inference backend, the runs interleaved (every
round runs each combination once, after a warm-up round) so that load from
other processes hits them alike; throughput is the best round. For each
combination: raster pixels per second, the tiles and the redundancy (computed
pixels per raster pixel), the seam error against one whole-raster prediction
(N x N at once, mirrored like the engine's borders: N = 2048 needs about 2 GB)
and the largest difference from the first tile side's PyTorch prediction.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.bench.mapping_throughput import (
    BANDS,
    build_bench_model,
    engine_predict,
    normalisation,
    write_synthetic_raster,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="raster side N (pixels)")
    parser.add_argument("--tiles", default="576,1088", help="tile sides, comma-separated")
    parser.add_argument(
        "--backends",
        default="torch,openvino",
        help="torch, onnxruntime, openvino (comma-separated)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds after the warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch and runtime threads")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    return parser.parse_args(argv)


def backend_modules(names: list[str], model: Any, work: Path, threads: int) -> dict[str, Any]:
    """The module computing the model for each backend name (``torch``: the model itself)."""
    from slidewise.engine.imagery.backends import BackendRequest, build_backend, model_key
    from slidewise.engine.imagery.segmodels import save_mapping_model

    model_path = work / "bench-unet.safetensors"
    _, config = build_bench_model()
    bands = [f"B{b}" for b in range(1, BANDS + 1)]
    save_mapping_model(model_path, model, config, bands, normalisation())
    request = BackendRequest(model, BANDS, model_key(model_path), threads=threads)
    return {name: build_backend(name, request) for name in names}


def run_rounds(
    modules: dict[str, Any], tiles: list[int], raster: Path, rounds: int
) -> tuple[dict[tuple[str, int], list[float]], dict[tuple[str, int], Any]]:
    """Each (backend, tile) once per round, a warm-up round first; seconds and predictions."""
    seconds: dict[tuple[str, int], list[float]] = {}
    outputs: dict[tuple[str, int], Any] = {}
    norm = normalisation()
    for round_ in range(rounds + 1):
        for tile in tiles:
            for name, module in modules.items():
                args = argparse.Namespace(
                    tile=tile,
                    overlap=None,
                    batch_size=None,
                    device="cpu",
                    amp="auto",
                    channels_last="auto",
                )
                start = time.perf_counter()
                prob, stats = engine_predict(module, raster, norm, args, name == "torch")
                took = time.perf_counter() - start
                if round_ > 0:
                    seconds.setdefault((name, tile), []).append(took)
                outputs[(name, tile)] = (prob, stats)
    return seconds, outputs


def figures(
    args: argparse.Namespace, model: Any, raster: Path, seconds: dict[Any, Any], outputs: dict
) -> list[dict[str, Any]]:
    """One row of figures per (backend, tile)."""
    import rasterio

    from slidewise.engine.imagery.tiling import predict_whole_image, seam_error

    with rasterio.open(raster) as src:
        image = src.read().astype(np.float32)
    first = next(iter(outputs))
    pad = outputs[first][1].margin
    whole = predict_whole_image(model, image, normalisation=normalisation(), pad=pad)
    reference = outputs.get(("torch", first[1]), outputs[first])[0]
    pixels = args.size * args.size
    rows = []
    for (name, tile), (prob, stats) in outputs.items():
        best = min(seconds[(name, tile)])
        computed = stats.tiles_run * stats.tile * stats.extra["tile_cols"]
        rows.append(
            {
                "backend": name,
                "tile": tile,
                "tile_used": stats.tile,
                "tiles": stats.tiles_run,
                "redundancy": round(computed / pixels, 3),
                "px_per_s": round(pixels / best, 1),
                "seconds": [round(s, 3) for s in seconds[(name, tile)]],
                "seam_max_abs_diff": round(seam_error(prob, whole), 6),
                "max_abs_diff_vs_first_tile_torch": round(seam_error(prob, reference), 6),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a table and write the JSON."""
    args = parse_args(argv)
    import torch

    from slidewise.engine.core.allocator import reuse_freed_memory

    reuse_freed_memory()
    torch.set_num_threads(args.threads)
    tiles = [int(t) for t in args.tiles.split(",")]
    model, _ = build_bench_model()
    with tempfile.TemporaryDirectory(prefix="slidewise-tiles-") as tmp:
        work = Path(tmp)
        raster = write_synthetic_raster(work / "synthetic.tif", args.size)
        modules = backend_modules(args.backends.split(","), model, work, args.threads)
        seconds, outputs = run_rounds(modules, tiles, raster, args.rounds)
        rows = figures(args, model, raster, seconds, outputs)
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    doc = {"size": args.size, "threads": args.threads, "load_average": load, "runs": rows}
    print(f"tile size, {args.size} x {args.size} x {BANDS}, {args.threads} thread(s), load {load}")
    for r in rows:
        print(
            f"{r['backend']:<12} tile {r['tile_used']:>5} x{r['tiles']:<3} redundancy "
            f"{r['redundancy']:.3f} {r['px_per_s']:>12,.0f} px/s  seam {r['seam_max_abs_diff']:.4f}"
            f"  vs first {r['max_abs_diff_vs_first_tile_torch']:.4f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
