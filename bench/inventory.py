"""Benchmark: the cost of adding one scene to a Map scenes inventory, by inventory size.

Usage::

    python -m slidewise.bench.inventory [--sizes 1000,10000,100000] [--scene 1000]
        [--seed 0] [--json OUT]

For each size, an inventory of that many landslide-like polygons (17-vertex
discs of ~700 m², scattered over 1000 x 1000 km in UTM 48N) is built and
committed, then one scene of ``--scene`` polygons, half of them overlapping
inventory polygons, is added (merge) and committed (the atomic rewrite of the
GeoPackage). Synthetic geometry: it measures the inventory's bookkeeping, not
mapping, which is measured by :mod:`slidewise.bench.mapping_throughput`.
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


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one line per inventory size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--scene", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
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
