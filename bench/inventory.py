"""Benchmark: the cost of adding one scene to a Map scenes inventory, by inventory size.

Usage::

    python -m slidewise.bench.inventory [--sizes 1000,10000,100000] [--scene 1000]
        [--seed 0] [--json OUT]
    python -m slidewise.bench.inventory --scenes FOLDER [--model M] [--bands 1,2,3]
        [--threshold T] [--json OUT]

For each size, an inventory of that many landslide-like polygons (17-vertex
discs of ~700 m², scattered over 1000 x 1000 km in UTM 48N) is built and
committed, then one scene of ``--scene`` polygons, half of them overlapping
inventory polygons, is added (merge) and committed (the atomic rewrite of the
GeoPackage). Synthetic geometry: it measures the inventory's bookkeeping, not
mapping, which is measured by :mod:`slidewise.bench.mapping_throughput`.

With ``--scenes``, the ``mapscenes`` job maps every raster of FOLDER into a new
inventory (one PyTorch thread), then runs again (every scene skipped), and
checks the inventory against the union of every scene's polygons: reported are
both run times, the polygons of the scenes, of the inventory and of the union
(equal counts and areas when the merge is right).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.engine.mapping.inventory import Inventory, SceneTags

CRS = "EPSG:32648"


def polygons(xy: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Discs of radius 15 m at ``xy`` with Map landslides' polygon fields."""
    import shapely

    geoms = shapely.buffer(shapely.points(xy), 15.0, quad_segs=4)
    n = len(geoms)
    values = {
        "mean_probability": np.full(n, 0.6),
        "max_probability": np.full(n, 0.8),
        "area_m2": shapely.area(geoms),
        "perimeter_m": shapely.length(geoms),
        "compactness": np.full(n, 0.95),
    }
    return geoms, values


def measure(size: int, scene: int, seed: int) -> dict[str, Any]:
    """Build an inventory of ``size`` polygons, then add and commit one scene."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 1e6, (size, 2))
    with tempfile.TemporaryDirectory() as folder:
        inventory = Inventory(Path(folder) / "inventory.gpkg", "landslide_inventory")
        geoms, values = polygons(xy)
        inventory.add_scene(geoms, values, CRS, SceneTags("s1", "", "", "unet", "m", "0"))
        inventory.commit()
        near = xy[: scene // 2] + 10.0  # overlaps the polygon it was moved from
        far = rng.uniform(0, 1e6, (scene - scene // 2, 2))
        geoms, values = polygons(np.concatenate([near, far]))
        started = time.perf_counter()
        merged = inventory.add_scene(geoms, values, CRS, SceneTags("s2", "", "", "unet", "m", "0"))
        added = time.perf_counter()
        inventory.commit()
        committed = time.perf_counter()
        megabytes = inventory.path.stat().st_size / 1e6
    return {
        "inventory_polygons": size,
        "scene_polygons": scene,
        "merged": merged,
        "add_seconds": round(added - started, 3),
        "commit_seconds": round(committed - added, 3),
        "file_mb": round(megabytes, 1),
    }


def scenes_run(folder: str, mapping: dict[str, Any]) -> dict[str, Any]:
    """Map the rasters of ``folder`` twice into one inventory; compare it with the union."""
    import io

    import pyogrio
    import shapely
    import torch

    from slidewise.engine.core.job import JobContext
    from slidewise.engine.core.protocol import Reporter
    from slidewise.engine.core.runtime import RuntimeOptions
    from slidewise.engine.mapping.scenes_batch import run_map_scenes

    torch.set_num_threads(1)
    out: dict[str, Any] = {"folder": folder, **mapping}
    with tempfile.TemporaryDirectory() as work:
        params = {"SCENE_FOLDER": folder, "OUTPUT_FOLDER": f"{work}/scenes", **mapping}
        params["INVENTORY"] = f"{work}/inventory.gpkg"
        for run in ("first", "again"):
            ctx = JobContext("mapscenes", RuntimeOptions(device="cpu"), Reporter(io.StringIO()))
            started = time.perf_counter()
            figures = run_map_scenes(params, ctx).figures
            out[f"{run}_seconds"] = round(time.perf_counter() - started, 2)
            out[f"{run}_mapped_skipped_failed"] = [
                figures["scenes_mapped"],
                figures["scenes_skipped"],
                len(figures["scenes_failed"]),
            ]
        _, _, wkb, _ = pyogrio.raw.read(params["INVENTORY"], layer="landslide_inventory")
        inventory = shapely.from_wkb(wkb)
        parts = [
            shapely.from_wkb(pyogrio.raw.read(str(p))[2])
            for p in sorted(Path(work, "scenes").glob("*_polygons.gpkg"))
        ]
        every = np.concatenate([p for p in parts if p is not None and len(p)])
        union = shapely.get_parts(shapely.union_all(shapely.make_valid(every)))
    out.update(
        scene_polygons=len(every),
        inventory_polygons=len(inventory),
        union_parts=len(union),
        area_difference=float(abs(shapely.area(inventory).sum() - shapely.area(union).sum())),
    )
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one line per inventory size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--scene", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="")
    parser.add_argument("--scenes", default="", help="map the rasters of this folder")
    parser.add_argument("--model", default="", help="mapping model (empty: the shipped one)")
    parser.add_argument("--bands", default="")
    parser.add_argument("--threshold", default="")
    args = parser.parse_args(argv)
    if args.scenes:
        mapping = {"MODEL": args.model, "BANDS": args.bands, "THRESHOLD": args.threshold}
        result = scenes_run(args.scenes, {k: v for k, v in mapping.items() if v})
        print(json.dumps(result, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return
    runs = [measure(int(s), args.scene, args.seed) for s in args.sizes.split(",")]
    for run in runs:
        print(
            f"{run['inventory_polygons']:>8} polygons ({run['file_mb']} MB): a scene of "
            f"{run['scene_polygons']} ({run['merged']} merged) added in {run['add_seconds']} s, "
            f"committed in {run['commit_seconds']} s"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs}, indent=1))


if __name__ == "__main__":
    main()
