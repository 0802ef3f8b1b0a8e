"""Benchmark: copying a Map scenes inventory into PostGIS through QGIS, by inventory size.

Runs in QGIS's Python (PyQGIS), not the engine's: the copy is made on the QGIS side (so it
is a script, not a ``slidewise.bench`` module, which may not import the plugin).

Usage (from the repository root)::

    QT_QPA_PLATFORM=offscreen PYTHONPATH=.. /usr/bin/python3 scripts/bench_postgis_copy.py \\
        --connection "host=/tmp/pg port=5432 dbname=postgres user=postgres" \\
        [--sizes 1000,10000,100000] [--seed 0] [--json OUT]

For each size, a GeoPackage inventory of that many landslide-like polygons (the
17-vertex discs of ~700 m² of :mod:`slidewise.bench.inventory`, scattered over
1000 x 1000 km in UTM 48N, with every inventory attribute) is written, then
copied twice with :func:`slidewise.processing_provider.algorithms.postgis.copy_inventory`
(the checks, the export into the staging table, its spatial index and the swap):
first into a new table, then replacing it. Reported: seconds and polygons per
second of each copy, and whether the table then holds every polygon.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

#: Attributes of the inventory's polygons (text, then numbers), as the engine writes them.
TEXT_FIELDS = ("scene", "date_first", "date_last", "region", "decoder", "model", "model_sha256")
NUMBER_FIELDS = ("scene_count", "mean_probability", "max_probability", "area_m2", "perimeter_m")
LAYER = "landslide_inventory"


def write_inventory(path: Path, size: int, seed: int) -> None:
    """A GeoPackage inventory of ``size`` discs of radius 15 m (17 vertices) in UTM 48N."""
    import numpy as np
    from qgis.core import (
        QgsCoordinateReferenceSystem,
        QgsCoordinateTransformContext,
        QgsFeature,
        QgsField,
        QgsFields,
        QgsGeometry,
        QgsVectorFileWriter,
        QgsWkbTypes,
    )
    from qgis.PyQt.QtCore import QVariant

    fields = QgsFields()
    for name in TEXT_FIELDS:
        fields.append(QgsField(name, QVariant.String))
    for name in NUMBER_FIELDS:
        fields.append(QgsField(name, QVariant.Double))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName, options.layerName = "GPKG", LAYER
    writer = QgsVectorFileWriter.create(
        str(path), fields, QgsWkbTypes.MultiPolygon, QgsCoordinateReferenceSystem("EPSG:32648"),
        QgsCoordinateTransformContext(), options,
    )  # fmt: skip
    xy = np.random.default_rng(seed).uniform(0, 1e6, (size, 2))
    angles = np.linspace(0, 2 * math.pi, 17)
    for i, (x, y) in enumerate(xy):
        ring = ", ".join(f"{x + 15 * math.cos(a):.3f} {y + 15 * math.sin(a):.3f}" for a in angles)
        feature = QgsFeature(fields)
        feature.setGeometry(QgsGeometry.fromWkt(f"MULTIPOLYGON((({ring})))"))
        texts = [f"scene_{i % 50}", "2024-07-31", "2024-07-31", "nepal", "unet", "m", "0" * 12]
        feature.setAttributes([*texts, 1.0, 0.6, 0.8, 706.0, 94.0])
        writer.addFeature(feature)
    del writer  # closes the file


def measure(connection: str, size: int, seed: int, folder: Path) -> dict[str, Any]:
    """Write an inventory of ``size`` polygons, copy it into PostGIS twice, time each copy."""
    from slidewise.processing_provider.algorithms.postgis import PostgisTarget, copy_inventory

    path = folder / f"inventory_{size}.gpkg"
    write_inventory(path, size, seed)
    target = PostgisTarget(connection, "public", f"bench_inventory_{size}")
    out: dict[str, Any] = {"polygons": size}
    for step in ("create", "replace"):
        started = time.perf_counter()
        count = copy_inventory(str(path), LAYER, target)
        seconds = time.perf_counter() - started
        out[f"{step}_seconds"] = round(seconds, 3)
        out[f"{step}_polygons_per_second"] = round(size / seconds)
        out[f"{step}_complete"] = count == size
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connection", required=True, help="saved connection name or string")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for size in (int(s) for s in args.sizes.split(",")):
            runs.append(measure(args.connection, size, args.seed, Path(folder)))
            print(json.dumps(runs[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "settings": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
