"""Polygon post-processing (issue 12): specks, holes, topology, attributes, merged boxes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage

from slidewise.contract.specs.polygons import DEFAULT_MIN_PIXELS
from slidewise.engine.core.errors import InputError
from slidewise.engine.detection.apply import segmentation_boxes
from slidewise.engine.detection.boxes import merge_overlapping_boxes
from slidewise.engine.geo.postprocess import (
    PolygonOptions,
    PolygonSettings,
    StripMorphology,
    open_close,
    polygon_builder,
    postprocess_mask,
    resolve_settings,
)
from slidewise.engine.imagery.scenes import read_picture

DATA = Path(__file__).resolve().parents[1] / "data"
UTM = CRS.from_epsg(32648)
#: 2 m pixels: the default minimum area is 16 px = 64 m².
TRANSFORM = Affine(2.0, 0.0, 500000.0, 0.0, -2.0, 3000000.0)


@pytest.fixture(scope="module")
def speckled() -> tuple[np.ndarray, np.ndarray]:
    """A real speckled map: the brightest tenth of a 200 x 240 crop of a Bijie image.

    Thresholding real imagery gives the specks, threads and holes of a real
    model output (hundreds of components, most of a few pixels).
    """
    rgb = read_picture(DATA / "bijie" / "test" / "images" / "10105.png", "image")
    grey = rgb[100:300, 100:340, :3].astype(np.float64).mean(axis=-1)
    prob = (grey - grey.min()) / (grey.max() - grey.min())
    return prob >= np.quantile(prob, 0.9), prob


def _settings(**changes: float | None) -> PolygonSettings:
    return resolve_settings(PolygonOptions(**changes), TRANSFORM, UTM, 200)


def test_default_minimum_area_follows_the_pixel_size() -> None:
    settings = _settings()
    assert settings.pixel_area == 4.0
    assert settings.min_area == DEFAULT_MIN_PIXELS * 4.0
    assert settings.simplify_tolerance == 2.0  # one pixel, map units
    assert f"minimum area {DEFAULT_MIN_PIXELS * 4:g} m² ({DEFAULT_MIN_PIXELS} px)" in (
        settings.describe()
    )
    assert _settings(min_area=0.0).min_area == 0.0  # 0 switches it off


def test_defaults_remove_specks_of_a_real_map(speckled) -> None:
    mask, prob = speckled
    _, components = ndimage.label(mask)
    off, _ = postprocess_mask(mask, prob, TRANSFORM, UTM, _settings(**_off()))
    assert len(off) == components > 100
    geoms, fields = postprocess_mask(mask, prob, TRANSFORM, UTM, _settings())
    assert 0 < len(geoms) < components / 4
    assert fields["area_m2"].min() >= DEFAULT_MIN_PIXELS * 4.0
    # Most of the landslide pixels stay inside the polygons.
    kept = shapely.area(shapely.union_all(geoms)) / 4.0
    assert kept > 0.6 * mask.sum()


def test_topology_is_kept_and_does_not_depend_on_strips(speckled) -> None:
    mask, prob = speckled
    settings = _settings(simplify_tolerance=3.0)  # strong: neighbours would overlap
    whole, _ = postprocess_mask(mask, prob, TRANSFORM, UTM, settings, strip_rows=1000)
    assert all(shapely.is_valid(whole))
    assert {g.geom_type for g in whole} == {"Polygon"}
    tree = shapely.STRtree(whole)
    a, b = tree.query(whole, predicate="intersects")
    shared = shapely.area(shapely.intersection(np.take(whole, a), np.take(whole, b)))
    assert np.all(shared[a != b] < 1e-9)
    stripped, _ = postprocess_mask(mask, prob, TRANSFORM, UTM, settings, strip_rows=9)
    key = sorted(shapely.to_wkt(g, rounding_precision=6) for g in whole)
    assert key == sorted(shapely.to_wkt(g, rounding_precision=6) for g in stripped)


def test_strip_morphology_equals_the_whole_raster(speckled) -> None:
    mask, prob = speckled
    valid = np.ones_like(mask)
    for opening, closing in ((1, 1), (2, 0), (0, 2)):
        ref = open_close(mask, opening, closing)
        strips = StripMorphology(opening, closing)
        out = []
        for r in range(0, mask.shape[0], 13):
            out += list(strips.add(r, mask[r : r + 13], valid[r : r + 13], prob[r : r + 13]))
        out += list(strips.finish())
        assert [o[0] for o in out] == sorted({o[0] for o in out})
        np.testing.assert_array_equal(np.concatenate([o[1] for o in out]), ref)


def _off() -> dict[str, float]:
    return {
        "min_area": 0.0,
        "max_hole_area": 0.0,
        "opening_radius": 0,
        "closing_radius": 0,
        "simplify_tolerance": 0.0,
    }


def test_small_holes_are_filled_and_islands_join() -> None:
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    mask[8:13, 8:13] = False  # 25 px hole: filled (below 32 px)
    mask[10, 10] = True  # an island in it joins the polygon
    mask[20:28, 20:28] = False  # 64 px hole: kept
    prob = np.where(mask, 0.75, 0.1)
    prob[10, 10] = 0.95
    options = _off() | {"max_hole_area": None}
    geoms, fields = postprocess_mask(mask, prob, TRANSFORM, UTM, _settings(**options))
    assert len(geoms) == 1 and len(geoms[0].interiors) == 1
    assert fields["area_m2"][0] == pytest.approx((900 - 64) * 4.0)
    assert fields["pixels"][0] == mask.sum()
    assert fields["max_probability"][0] == pytest.approx(0.95)
    kept, _ = postprocess_mask(mask, prob, TRANSFORM, UTM, _settings(**_off()))
    assert len(kept) == 2 and len(max(kept, key=lambda g: g.area).interiors) == 2


def test_attributes_of_a_square_and_mean_slope(tmp_path: Path) -> None:
    mask = np.zeros((30, 30), bool)
    mask[10:20, 5:15] = True  # 10 x 10 px = 20 m x 20 m
    prob = np.where(mask, np.linspace(0.5, 0.9, 900).reshape(30, 30), 0.0)
    dem = tmp_path / "dem.tif"
    cols = np.mgrid[0:40, 0:40][1]
    with rasterio.open(
        dem, "w", driver="GTiff", width=40, height=40, count=1, dtype="float32", crs=UTM,
        transform=Affine(5.0, 0, 499950.0, 0, -5.0, 3000050.0),
    ) as dst:  # fmt: skip
        dst.write((cols * 5.0 * math.tan(math.radians(30))).astype(np.float32)[None])
    info = type("Info", (), {"transform": TRANSFORM, "crs": UTM, "width": 30, "height": 30})
    params = type("P", (), _off() | {"dem": str(dem), "min_area": None})
    builder = polygon_builder(params, info)
    builder.add(0, mask, prob)
    geoms, fields = builder.finish()
    assert len(geoms) == 1
    assert fields["area_m2"][0] == pytest.approx(400.0)
    assert fields["perimeter_m"][0] == pytest.approx(80.0)
    assert fields["compactness"][0] == pytest.approx(math.pi / 4)
    assert fields["mean_probability"][0] == pytest.approx(prob[mask].mean())
    assert fields["max_probability"][0] == pytest.approx(prob[mask].max())
    assert fields["mean_slope"][0] == pytest.approx(30.0, abs=1e-3)
    params.dem = str(tmp_path / "missing.tif")
    with pytest.raises(InputError, match="DEM"):
        polygon_builder(params, info)


def test_areas_on_a_geographic_grid_are_geodesic() -> None:
    """1e-4 degree pixels near the equator: area_m2 agrees with the pixel areas on the sphere."""
    from slidewise.engine.geo.polygons import pixel_areas

    transform = Affine(1e-4, 0.0, 10.0, 0.0, -1e-4, 1.0)
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    settings = resolve_settings(PolygonOptions(**_off()), transform, CRS.from_epsg(4326), 20)
    fields = postprocess_mask(mask, mask * 0.9, transform, CRS.from_epsg(4326), settings)[1]
    expected = pixel_areas(transform, CRS.from_epsg(4326), 5, 10).sum() * 10
    assert fields["area_m2"][0] == pytest.approx(expected, rel=5e-3)  # ellipsoid vs sphere
    assert fields["perimeter_m"][0] == pytest.approx(4 * math.sqrt(expected), rel=5e-3)


def test_nested_and_overlapping_boxes_are_merged() -> None:
    prob = np.zeros((60, 60), np.float32)
    prob[10:40, 10:40] = 0.9
    prob[14:36, 14:36] = 0.0  # a ring ...
    prob[20:30, 20:30] = 0.7  # ... around a blob: its box nests in the ring's
    prob[35:50, 45:55] = 0.8  # apart
    boxes, scores, pixels = segmentation_boxes(prob, 0.5, 16)
    assert boxes.tolist() == [[10, 10, 40, 40], [45, 35, 55, 50]]
    ring = 900 - 22 * 22
    assert pixels.tolist() == [ring + 100, 150]
    assert scores[0] == pytest.approx((ring * 0.9 + 100 * 0.7) / (ring + 100))
    b, w, v = merge_overlapping_boxes(
        np.array([[0, 0, 10, 10], [8, 8, 20, 20], [15, -5, 30, 9], [30, 0, 40, 10]]),
        np.ones(4),
        np.array([0.2, 0.4, 0.6, 0.8]),
    )
    # Chained overlaps join into one box; a box that only touches stays apart.
    assert b.tolist() == [[0, -5, 30, 20], [30, 0, 40, 10]]
    assert w.tolist() == [3, 1] and v == pytest.approx([0.4, 0.8])
