"""Images without georeference (the Bijie PNGs): outputs overlay them as QGIS draws them.

QGIS and GDAL draw an image without geotransform with its top-left corner at
(0, 0), one unit a pixel and rows going down to y = -height; rasterio reports
the identity (rows going up). Outputs must use QGIS's grid, or they appear
beside the image, mirrored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from engine_helpers import job_context
from rasterio.transform import from_origin

from slidewise.engine.geo.raster import UNGEOREFERENCED, open_raster, output_profile
from slidewise.engine.mapping.apply import run_map

REPO = Path(__file__).resolve().parents[2]
PNG = REPO / "tests" / "data" / "bijie" / "test" / "images" / "10105.png"  # 512 x 720
FLIPPED = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_png_gets_the_grid_qgis_draws() -> None:
    info = open_raster(PNG, "image")
    assert tuple(info.transform)[:6] == FLIPPED
    assert info.transform == UNGEOREFERENCED
    assert info.res == (1.0, 1.0)
    left, top = info.transform * (0, 0)
    right, bottom = info.transform * (info.width, info.height)
    # QgsRasterLayer(PNG).extent(): 0, -720 : 512, 0
    assert (left, bottom, right, top) == (0.0, -720.0, 512.0, 0.0)


def test_georeferenced_rasters_keep_their_transform(tmp_path: Path) -> None:
    path = tmp_path / "geo.tif"
    transform = from_origin(400000, 2500000, 10, 10)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=8,
        height=6,
        count=1,
        dtype="uint8",
        crs="EPSG:32646",
        transform=transform,
    ) as dst:
        dst.write(np.zeros((1, 6, 8), dtype=np.uint8))
    assert open_raster(path).transform == transform


def test_written_output_of_a_png_has_the_flipped_transform(tmp_path: Path) -> None:
    info = open_raster(PNG, "image")
    profile = output_profile(info, 1)
    out = tmp_path / "out.tif"
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.zeros((1, info.height, info.width), dtype=np.float32))
    with rasterio.open(out) as ds:
        assert tuple(ds.transform)[:6] == FLIPPED
        assert tuple(ds.bounds) == (0.0, -720.0, 512.0, 0.0)


@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory) -> str:
    """A small randomly initialised 3-band LinkNet (mechanics only)."""
    import torch

    from slidewise.engine.imagery.segmodels import SegModelConfig, build_model, save_mapping_model

    torch.manual_seed(0)
    config = SegModelConfig(architecture="linknet", encoder="mobilenet_v2", in_channels=3)
    model = build_model(config).eval()
    path = tmp_path_factory.mktemp("model") / "rgb.safetensors"
    norm = {"kind": "fit", "mean": [100.0, 100.0, 100.0], "std": [50.0, 50.0, 50.0]}
    save_mapping_model(path, model, config, ["red", "green", "blue"], norm, tile_size=128)
    return str(path)


def test_mapping_a_png_overlays_it(rgb_model: str, tmp_path: Path) -> None:
    """maplandslides on a Bijie PNG: rasters on y = -720 ... 0, polygons inside them."""
    outputs = {
        "OUTPUT_PROBABILITY": str(tmp_path / "prob.tif"),
        "OUTPUT_MASK": str(tmp_path / "mask.tif"),
        "OUTPUT_POLYGONS": str(tmp_path / "slides.gpkg"),
    }
    with rasterio.open(PNG) as src:
        image = src.read().astype(np.float32)
    result = run_map(
        {"INPUT": str(PNG), "MODEL": rgb_model, "THRESHOLD": 0.0, **outputs},
        job_context("maplandslides")[0],
    )
    for name in ("OUTPUT_PROBABILITY", "OUTPUT_MASK"):
        with rasterio.open(outputs[name]) as ds:
            assert tuple(ds.transform)[:6] == FLIPPED, name
            assert tuple(ds.bounds) == (0.0, -720.0, 512.0, 0.0), name
            assert (ds.width, ds.height) == (image.shape[2], image.shape[1])
    assert result.figures["polygons"] >= 1
    _, _, geometry, _ = pyogrio.raw.read(outputs["OUTPUT_POLYGONS"])
    left, bottom, right, top = shapely.total_bounds(shapely.from_wkb(geometry))
    # THRESHOLD 0: every pixel is a landslide, so the polygons cover the image exactly.
    assert (left, bottom, right, top) == (0.0, -720.0, 512.0, 0.0)
