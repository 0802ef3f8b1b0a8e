"""The COG option: raster outputs rewritten as Cloud-Optimized GeoTIFFs, values unchanged."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import rasterio
from engine_helpers import REPO

from slidewise.engine.core.protocol import Reporter
from slidewise.engine.geo.cog import is_cog
from slidewise.engine.worker import EXIT_OK, run

DEM = REPO / "tests" / "data" / "ecuador" / "dem_10m.tif"


def _terrain(tmp: Path, name: str, cog: bool | None) -> tuple[Path, list[dict]]:
    out = tmp / f"{name}.tif"
    params = {"INPUT": str(DEM), "OUTPUT": str(out), "BLOCK_SIZE": 128}
    if cog is not None:
        params["COG"] = cog
    stream = io.StringIO()
    assert run({"job": "terrainfactors", "params": params}, Reporter(stream)) == EXIT_OK
    return out, [json.loads(line) for line in stream.getvalue().splitlines()]


def test_cog_output_is_valid_and_holds_the_same_values(tmp_path: Path) -> None:
    plain, _ = _terrain(tmp_path, "plain", None)
    cog, messages = _terrain(tmp_path, "cog", True)
    assert is_cog(cog)
    assert any("Cloud-Optimized" in m.get("message", "") for m in messages)
    with rasterio.open(plain) as a, rasterio.open(cog) as b:
        assert (a.crs, a.transform, a.descriptions) == (b.crs, b.transform, b.descriptions)
        assert np.isnan(a.nodata) and np.isnan(b.nodata)
        assert not a.overviews(1) and b.overviews(1) == [2]  # overviews only with COG
        assert b.block_shapes[0] == (256, 256)
        np.testing.assert_array_equal(a.read(), b.read())  # NaN where NaN
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cog.manifest.json",
        "cog.tif",
        "plain.manifest.json",
        "plain.tif",
    ]


def test_cog_false_leaves_the_plain_geotiff(tmp_path: Path) -> None:
    out, messages = _terrain(tmp_path, "plain", False)
    with rasterio.open(out) as src:
        assert not src.overviews(1)
    assert not any("Cloud-Optimized" in m.get("message", "") for m in messages)
