"""Detection on rasters: tiles, cross-tile merging, map coordinates, the segmentation route."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import torch
from engine_helpers import job_context
from rasterio.transform import from_origin

from slidewise.engine.core.errors import InputError, ModelFileError
from slidewise.engine.core.job import JobContext
from slidewise.engine.detection.apply import (
    detect_on_raster,
    detect_raster,
    merge_tile_boxes,
    pixel_boxes_to_polygons,
    run_detect,
    segmentation_boxes,
    tile_starts,
)
from slidewise.engine.detection.boxes import boxes_from_mask
from slidewise.engine.detection.models import DetectorConfig, build_detector, save_detector
from slidewise.engine.imagery.segmodels import SegModelConfig, build_model, save_mapping_model

ORIGIN = (500000.0, 4000000.0)
PIXEL = 10.0


def _ctx() -> JobContext:
    return job_context("detectlandslides")[0]


def _raster(path: Path, data: np.ndarray, crs: str | None = "EPSG:32648") -> Path:
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype="float32",
        crs=crs,
        transform=from_origin(*ORIGIN, PIXEL, PIXEL),
    ) as dst:
        dst.write(data.astype(np.float32))
    return path


def _bright_boxes(batch: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """A stand-in detector: the boxes of bright components of each tile."""
    out = []
    for x in batch:
        b, _, _ = boxes_from_mask(x[0].numpy() > 0.5, 4)
        out.append(
            {
                "boxes": torch.from_numpy(b),
                "scores": torch.full((len(b),), 0.9),
                "labels": torch.ones(len(b), dtype=torch.int64),
            }
        )
    return out


def test_tile_starts() -> None:
    assert tile_starts(300, 128, 48) == [0, 80, 160, 172]
    assert tile_starts(100, 128, 48) == [0]
    with pytest.raises(InputError, match="OVERLAP"):
        tile_starts(300, 64, 64)


@pytest.mark.parametrize("overlap", [0, 32, 48, 64])
def test_object_straddling_tile_borders_is_found_once(tmp_path: Path, overlap: int) -> None:
    image = np.zeros((300, 300), np.float32)
    image[90:130, 100:160] = 1  # crosses tile borders in both directions
    image[10:20, 250:270] = 1  # a second object inside one tile
    path = _raster(tmp_path / "r.tif", image)
    with rasterio.open(path) as src:
        found = detect_raster(_bright_boxes, src, [1], [0.0], 128, overlap)
        assert len(found.boxes) > 2  # seen (in pieces) by several tiles
        boxes, _ = merge_tile_boxes(found.boxes, found.scores, found.tiles, found.cut)
        assert sorted(boxes.tolist()) == [[100, 90, 160, 130], [250, 10, 270, 20]]
        # The job's route: merged in map coordinates, written as map polygons.
        px, scores, _ = detect_on_raster(_bright_boxes, src, [1], [0.0], 128, overlap)
        polygons, bounds = pixel_boxes_to_polygons(px, src.transform)
    assert len(polygons) == 2 and scores.tolist() == pytest.approx([0.9, 0.9])
    x0, y0 = ORIGIN
    expected = [
        [x0 + 100 * PIXEL, y0 - 130 * PIXEL, x0 + 160 * PIXEL, y0 - 90 * PIXEL],
        [x0 + 250 * PIXEL, y0 - 20 * PIXEL, x0 + 270 * PIXEL, y0 - 10 * PIXEL],
    ]
    np.testing.assert_allclose(sorted(bounds.tolist()), expected)


def test_merge_keeps_separate_objects() -> None:
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [1, 0, 11, 10]], float)
    scores = np.array([0.9, 0.8, 0.7])
    out, s = merge_tile_boxes(boxes, scores, np.array([0, 0, 1]), np.zeros(3, bool))
    assert out.tolist() == [[0, 0, 10, 10], [20, 0, 30, 10]] and s.tolist() == [0.9, 0.8]


def test_detect_job_writes_map_coordinates(tmp_path: Path) -> None:
    model = build_detector(DetectorConfig(min_size=64, max_size=64, fpn_channels=32))
    model_path = tmp_path / "det.safetensors"
    save_detector(
        model_path,
        model,
        DetectorConfig(min_size=64, max_size=64, fpn_channels=32),
        ["red", "green", "blue"],
        tile_size=64,
    )
    rng = np.random.default_rng(0)
    raster = _raster(tmp_path / "rgb.tif", rng.uniform(0, 255, (3, 60, 90)))
    out = tmp_path / "boxes.gpkg"
    result = run_detect(
        {
            "INPUT": str(raster),
            "MODEL": str(model_path),
            "OUTPUT": str(out),
            "SCORE_THRESHOLD": 0.0,
        },
        _ctx(),
    )
    assert result.figures["tiles"] == 2  # 64-px tiles, 16 px overlap over 60 x 90 px
    info = pyogrio.read_info(out)
    assert list(info["fields"]) == ["score", "class", "area"]
    assert info["crs"] == "EPSG:32648" and info["features"] == result.figures["boxes"]
    if info["features"]:
        xmin, ymin, xmax, ymax = info["total_bounds"]
        assert ORIGIN[0] <= xmin and xmax <= ORIGIN[0] + 90 * PIXEL
        assert ORIGIN[1] - 60 * PIXEL <= ymin and ymax <= ORIGIN[1]


def test_segmentation_route_from_probability(tmp_path: Path) -> None:
    prob = np.zeros((60, 80), np.float32)
    prob[5:15, 10:30] = 0.8
    prob[40:50, 50:60] = 0.6
    prob[40:50, 60:62] = 0.9  # joins the second component
    prob[0:2, 70:72] = 0.9  # 4 px: below MIN_AREA
    prob[20, 0] = np.nan
    boxes, scores, pixels = segmentation_boxes(prob, 0.5, 16)
    assert pixels.tolist() == [200, 120]
    assert boxes.tolist() == [[10, 5, 30, 15], [50, 40, 62, 50]]
    np.testing.assert_allclose(scores, [0.8, (100 * 0.6 + 20 * 0.9) / 120], rtol=1e-6)
    path = _raster(tmp_path / "prob.tif", prob)
    out = tmp_path / "seg.gpkg"
    run_detect(
        {"SOURCE": "segmentation", "PROBABILITY": str(path), "OUTPUT": str(out), "MIN_AREA": 1600},
        _ctx(),
    )
    _, _, geoms, fields = pyogrio.raw.read(out)
    import shapely

    bounds = shapely.bounds(shapely.from_wkb(geoms))
    x0, y0 = ORIGIN
    np.testing.assert_allclose(
        bounds[0], [x0 + 10 * PIXEL, y0 - 15 * PIXEL, x0 + 30 * PIXEL, y0 - 5 * PIXEL]
    )
    assert fields[0].tolist() == pytest.approx([0.8, 0.65])
    assert fields[1].tolist() == ["landslide", "landslide"]


def test_segmentation_route_with_a_mapping_model(tmp_path: Path) -> None:
    config = SegModelConfig(
        architecture="unet",
        encoder="resnet18",
        in_channels=3,
        encoder_depth=3,
        extra={"decoder_channels": [16, 8, 4]},
    )
    model_path = tmp_path / "map.safetensors"
    save_mapping_model(
        model_path,
        build_model(config),
        config,
        ["red", "green", "blue"],
        {"mean": [0.0] * 3, "std": [1.0] * 3},
        tile_size=64,
        extra={"threshold": 0.0},
    )
    raster = _raster(tmp_path / "rgb.tif", np.random.default_rng(1).uniform(0, 1, (3, 40, 50)))
    out = tmp_path / "seg.gpkg"
    result = run_detect(
        {
            "SOURCE": "segmentation",
            "INPUT": str(raster),
            "MODEL": str(model_path),
            "OUTPUT": str(out),
            "TILE_SIZE": 64,
            "OVERLAP": 0,
        },
        _ctx(),
    )
    assert result.figures["threshold"] == 0.0 and result.figures["boxes"] == 1  # all pixels
    assert pyogrio.read_info(out)["total_bounds"] == pytest.approx(
        (ORIGIN[0], ORIGIN[1] - 40 * PIXEL, ORIGIN[0] + 50 * PIXEL, ORIGIN[1])
    )
    # Wrong model task for each route.
    with pytest.raises(ModelFileError, match="needs a detection model"):
        run_detect({"INPUT": str(raster), "MODEL": str(model_path), "OUTPUT": str(out)}, _ctx())


def test_detect_bad_inputs(tmp_path: Path) -> None:
    det = tmp_path / "det.safetensors"
    config = DetectorConfig(min_size=64, max_size=64, fpn_channels=32)
    save_detector(det, build_detector(config), config, ["red", "green", "blue"], tile_size=64)
    raster = _raster(tmp_path / "one.tif", np.zeros((1, 30, 30)))
    with pytest.raises(ModelFileError, match="needs a mapping model"):
        run_detect(
            {
                "SOURCE": "segmentation",
                "INPUT": str(raster),
                "MODEL": str(det),
                "OUTPUT": str(tmp_path / "o.gpkg"),
            },
            _ctx(),
        )
    with pytest.raises(InputError, match="has 1 band"):
        run_detect(
            {"INPUT": str(raster), "MODEL": str(det), "OUTPUT": str(tmp_path / "o.gpkg")}, _ctx()
        )
    with pytest.raises(InputError, match="only used with SOURCE segmentation"):
        run_detect({"PROBABILITY": str(raster), "OUTPUT": str(tmp_path / "o.gpkg")}, _ctx())
    with pytest.raises(InputError, match="Unsupported output"):
        run_detect(
            {"INPUT": str(raster), "MODEL": str(det), "OUTPUT": str(tmp_path / "o.csv")}, _ctx()
        )
    assert not list(tmp_path.glob("o.*"))
