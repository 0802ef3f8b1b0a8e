"""Tests of factor sampling (points, polygons, negatives, CRS) and block segmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from engine_helpers import SHARED
from scipy import ndimage

from slidewise.engine.core.errors import InputError
from slidewise.engine.geo.samples import (
    SamplingOptions,
    collect_samples,
    open_factor_stack,
    read_inventory,
    sample_inventory,
)
from slidewise.engine.geo.vectors import write_vector
from slidewise.engine.susceptibility.blocks import (
    BlockParams,
    block_statistics,
    kmeans_blocks,
    polygonise,
    segment_stack,
    terrain_bands,
)

DATA = SHARED / "susceptibility"
ECUADOR = DATA / "ecuador" / "ta.tif"
CRS = "EPSG:32717"
ORIGIN = (700000.0, 9560000.0)


def write_stack(
    path: Path, size: int = 40, nodata_corner: bool = True, origin: tuple = ORIGIN
) -> Path:
    """A 3-band 10 m stack: elev, slope, landuse (classes 1-3); NaN in one corner."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    elev = 1000 + 5 * yy + xx
    slope = 20 + 10 * np.sin(xx / 5) + rng.normal(0, 1, (size, size)).astype(np.float32)
    landuse = 1 + (xx // (size / 3)).astype(np.float32)
    data = np.stack([elev, slope, landuse]).astype(np.float32)
    if nodata_corner:
        data[:, :5, :5] = np.nan
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "float32",
        "crs": CRS,
        "transform": Affine(10, 0, origin[0], 0, -10, origin[1]),
        "nodata": float("nan"),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(["elev", "slope", "landuse"], start=1):
            dst.set_band_description(i, name)
    return path


def xy(col: float, row: float) -> tuple[float, float]:
    return ORIGIN[0] + 10 * col + 5, ORIGIN[1] - 10 * row - 5


def test_points_and_negatives_outside_buffer(tmp_path: Path) -> None:
    stack_path = write_stack(tmp_path / "stack.tif")
    pts = [xy(10, 10), xy(30, 30), xy(20, 5), xy(2, 2)]  # the last one on nodata
    write_vector(tmp_path / "ls.gpkg", shapely.points(pts), {"id": np.arange(4)}, CRS, "Point")
    options = SamplingOptions(str(tmp_path / "ls.gpkg"), negative_ratio=5.0, buffer=50.0, seed=1)
    warnings: list[str] = []
    with open_factor_stack(str(stack_path), categorical=["landuse"]) as stack:
        samples = collect_samples(stack, options, warn=warnings.append)
    assert samples.counts["landslides"] == 3 and samples.counts["non_landslides"] == 15
    assert any("nodata" in w for w in warnings)
    pos = shapely.points(np.column_stack([samples.xs, samples.ys])[samples.labels == 1])
    neg = shapely.points(np.column_stack([samples.xs, samples.ys])[samples.labels == 0])
    dist = shapely.distance(neg[:, None], pos[None, :])
    assert dist.min() > 50.0
    assert np.all(np.isfinite(samples.values))
    np.testing.assert_allclose(
        samples.values[samples.labels == 1][0], [1000 + 50 + 10, samples.values[0, 1], 1.0]
    )


def test_polygons_all_pixels_or_fixed_number(tmp_path: Path) -> None:
    stack_path = write_stack(tmp_path / "stack.tif")
    x0, y0 = xy(10, 10)
    square = shapely.box(x0 - 5, y0 - 35, x0 + 35, y0 + 5)  # 4 x 4 pixels
    tiny = shapely.Point(xy(30, 30)).buffer(1.0)  # smaller than a pixel
    write_vector(tmp_path / "poly.gpkg", [square, tiny], {"id": np.arange(2)}, CRS, "Polygon")
    with open_factor_stack(str(stack_path)) as stack:
        inv = read_inventory(tmp_path / "poly.gpkg", stack.crs)
        every = sample_inventory(stack, inv, "inventory")
        fixed = sample_inventory(stack, inv, "inventory", per_polygon=3, seed=0)
    assert len(every) == 16 + 1
    assert len(fixed) == 3 + 1


def test_inventory_in_other_crs_is_reprojected(tmp_path: Path) -> None:
    from rasterio.warp import transform

    stack_path = write_stack(tmp_path / "stack.tif")
    x, y = xy(12, 20)
    lon, lat = transform(CRS, "EPSG:4326", [x], [y])
    (tmp_path / "ls.csv").write_text(f"lon,lat\n{lon[0]:.10f},{lat[0]:.10f}\n")
    with open_factor_stack(str(stack_path)) as stack:
        inv = read_inventory(tmp_path / "ls.csv", stack.crs, "lon", "lat", table_crs="EPSG:4326")
        s = sample_inventory(stack, inv, "inventory")
    assert (s.rows[0], s.cols[0]) == (20, 12)


def test_inventory_outside_stack_is_refused(tmp_path: Path) -> None:
    stack_path = write_stack(tmp_path / "stack.tif")
    (tmp_path / "far.csv").write_text("x,y\n100,200\n300,400\n")
    with open_factor_stack(str(stack_path)) as stack:
        inv = read_inventory(tmp_path / "far.csv", stack.crs)
        with pytest.raises(InputError, match="outside the factor stack"):
            sample_inventory(stack, inv, "inventory")


def test_factor_rasters_on_different_grids_refused(tmp_path: Path) -> None:
    a = write_stack(tmp_path / "a.tif")
    b = write_stack(tmp_path / "b.tif", origin=(ORIGIN[0] + 5, ORIGIN[1]))
    with pytest.raises(InputError, match=r"b\.tif"):
        open_factor_stack(factors=[str(a), str(b)])
    with open_factor_stack(factors=[str(a), str(b)], align=True) as stack:
        assert stack.count == 6 and len(set(stack.names)) == 6


def test_unknown_categorical_name_refused(tmp_path: Path) -> None:
    stack_path = write_stack(tmp_path / "stack.tif")
    with pytest.raises(InputError, match="geology"):
        open_factor_stack(str(stack_path), categorical=["geology"])


def test_no_landslide_label_refused(tmp_path: Path) -> None:
    stack_path = write_stack(tmp_path / "stack.tif")
    x, y = xy(10, 10)
    (tmp_path / "neg.csv").write_text(f"x,y,label\n{x},{y},0\n")
    with open_factor_stack(str(stack_path)) as stack:
        with pytest.raises(InputError, match="no landslide"):
            collect_samples(stack, SamplingOptions(str(tmp_path / "neg.csv"), label_field="label"))


def test_all_nodata_stack_refused_by_segmentation(tmp_path: Path) -> None:
    path = tmp_path / "empty.tif"
    profile = {
        "driver": "GTiff",
        "width": 8,
        "height": 8,
        "count": 1,
        "dtype": "float32",
        "crs": CRS,
        "transform": Affine(10, 0, 0, 0, -10, 80),
        "nodata": float("nan"),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((1, 8, 8), np.nan, dtype=np.float32))
    with open_factor_stack(str(path)) as stack:
        with pytest.raises(InputError, match="no valid pixel"):
            segment_stack(stack, BlockParams(n_blocks=4))


def test_slic_blocks_on_ecuador_connected_and_nodata_masked() -> None:
    if not ECUADOR.is_file():
        pytest.skip("Ecuador factor stack not available")
    with open_factor_stack(str(ECUADOR)) as stack:
        labels, factor, bands, weights = segment_stack(stack, BlockParams(n_blocks=96))
        data, valid = stack.read()
    assert factor == 1 and bands == ["elev", "cplan", "slope"] and weights == [0.3, 0.2, 0.4]
    assert labels.dtype == np.int32 and labels.shape == valid.shape
    assert np.all(labels[~valid] == 0) and np.all(labels[valid] > 0)
    n = int(labels.max())
    assert 60 <= n <= 140
    assert np.array_equal(np.unique(labels[labels > 0]), np.arange(1, n + 1))
    for bid, sl in enumerate(ndimage.find_objects(labels), start=1):
        assert ndimage.label(labels[sl] == bid)[1] == 1, f"block {bid} is not one region"
    stats = block_statistics(labels, data, stack.names, 100.0)
    assert stats["pixels"].sum() == valid.sum()
    ids, geoms = polygonise(labels, stack.transform)
    assert ids.size == n
    np.testing.assert_allclose(shapely.area(geoms), stats["area"][ids - 1])


def test_terrain_band_defaults_and_kmeans_blocks() -> None:
    assert terrain_bands(["DEM", "Aspect", "plan_curvature", "Slope", "NDVI"]) == (
        ["DEM", "Aspect", "plan_curvature", "Slope"],
        [0.3, 0.1, 0.2, 0.4],
    )
    assert terrain_bands(["a", "b"]) == (["a", "b"], [1.0, 1.0])
    rng = np.random.default_rng(0)
    xs, ys = rng.random(200), rng.random(200)
    ids, centres = kmeans_blocks(xs, ys, 8, seed=0)
    assert ids.min() == 1 and ids.max() == 8 and centres.shape == (8, 2)
    with pytest.raises(InputError, match="Cannot make"):
        kmeans_blocks(xs[:3], ys[:3], 8)
