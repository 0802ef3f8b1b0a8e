"""Tests of engine/align.py on real rasters (Jiuzhaigou terrain, Ecuador factors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from engine_helpers import SHARED
from rasterio.windows import Window

from slidewise.contract.partials import partial_glob
from slidewise.engine.core.errors import InputError
from slidewise.engine.geo.align import (
    AlignedStack,
    FactorSource,
    GridSpec,
    check_same_grid,
    grid_differences,
    write_aligned_stack,
)
from slidewise.engine.geo.raster import iter_windows

JIUZHAI = SHARED / "terrain" / "jiuzhaigou"
DEM = JIUZHAI / "DEM_030.tif"
SLOPE = JIUZHAI / "DEM_030_SLOPE.tif"
HILLSHADE = JIUZHAI / "DEM_030_HILLSHADE.tif"
SNOW = JIUZHAI / "SNOW_CLOUD_MASK_010.tif"
TEST_ROI = JIUZHAI / "Test_010.tif"
TA = SHARED / "susceptibility" / "ecuador" / "ta.tif"

pytestmark = pytest.mark.skipif(
    not (DEM.exists() and SNOW.exists() and TA.exists()),
    reason=f"real data not found under {SHARED}",
)


def _read_float(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return np.ma.filled(src.read(masked=True).astype(np.float32), np.nan)


def _mosaic(stack: AlignedStack, block: int, halo: int = 0) -> np.ndarray:
    """Assemble a full array from windowed reads (with halos, keeping only the block)."""
    out = np.full((stack.count, stack.height, stack.width), -1.0, dtype=np.float32)
    for read, write, inner in iter_windows(stack.width, stack.height, block=block, halo=halo):
        data, _ = stack.read(read)
        rows, cols = write.toslices()
        out[:, rows, cols] = data[:, inner[0], inner[1]]
    return out


@pytest.fixture(scope="module")
def classes_010(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 4-class 10 m raster from the real masks: snow/cloud mask + 2 x test region."""
    with rasterio.open(SNOW) as snow, rasterio.open(TEST_ROI) as roi:
        classes = snow.read(1) + 2 * roi.read(1)
        profile = snow.profile
    profile.update(nodata=None)
    path = tmp_path_factory.mktemp("classes") / "classes_010.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(classes, 1)
    return path, classes


def test_gridspec_from_raster_and_bounds() -> None:
    grid = GridSpec.from_raster(DEM)
    assert (grid.width, grid.height) == (453, 779)
    assert grid.crs is not None and grid.crs.to_epsg() == 32648
    assert grid.res == pytest.approx((30.0, 30.0), rel=1e-3)
    rebuilt = GridSpec.from_bounds(grid.crs, grid.bounds, grid.res)
    assert (rebuilt.width, rebuilt.height) == (grid.width, grid.height)
    assert grid_differences(rebuilt, grid) is None
    with pytest.raises(InputError, match=r"does not exist"):
        GridSpec.from_raster(JIUZHAI / "nope.tif")


def test_same_grid_inputs_are_read_unchanged() -> None:
    sources = [FactorSource(DEM), FactorSource(SLOPE), FactorSource(HILLSHADE)]
    with AlignedStack(sources) as stack:
        assert stack.same_grid_report() == []
        assert stack.names == ["DEM_030", "DEM_030_SLOPE", "DEM_030_HILLSHADE"]
        assert (stack.count, stack.width, stack.height) == (3, 453, 779)
        assert stack.crs is not None and stack.crs.to_epsg() == 32648
        data, valid = stack.read()
    assert data.dtype == np.float32 and data.shape == (3, 779, 453)
    expected = np.concatenate([_read_float(p) for p in (DEM, SLOPE, HILLSHADE)])
    both = valid & np.all(np.isfinite(expected), axis=0)
    np.testing.assert_array_equal(valid, both)
    np.testing.assert_array_equal(data[:, valid], expected[:, valid])
    assert np.all(np.isnan(data[:, ~valid]))


def test_categorical_nearest_keeps_only_class_values(
    classes_010: tuple[Path, np.ndarray],
) -> None:
    # The real snow/cloud mask (value 1, nodata 0) on the 30 m DEM grid.
    with AlignedStack([FactorSource(DEM), FactorSource(SNOW, kind="categorical")]) as stack:
        (diff,) = stack.same_grid_report()
        assert Path(diff.path).name == SNOW.name
        assert diff.properties == ("resolution", "extent")
        data, valid = stack.read()
    mask = data[1]
    assert set(np.unique(mask[np.isfinite(mask)]).tolist()) == {1.0}
    assert 0.01 < valid.mean() < 0.5  # most of the mask is nodata

    # Four real classes: nearest picks the 10 m pixel under each 30 m centre.
    path, classes = classes_010
    with AlignedStack([FactorSource(DEM), FactorSource(path, kind="categorical")]) as stack:
        aligned, valid = stack.read()
    assert valid.all()
    assert set(np.unique(aligned[1]).tolist()) == {0.0, 1.0, 2.0, 3.0}
    np.testing.assert_array_equal(aligned[1], classes[1::3, 1::3].astype(np.float32))

    # The same raster as a continuous factor is interpolated: fractional "classes".
    with AlignedStack([FactorSource(DEM), FactorSource(path, kind="continuous")]) as stack:
        smooth, _ = stack.read()
    assert np.any(smooth[1] != np.round(smooth[1]))
    assert stack.kinds == ["continuous", "continuous"]


def test_bilinear_continuous_stays_within_source_range() -> None:
    # Upsampling: the 30 m DEM onto the 10 m grid of the snow mask.
    dem = _read_float(DEM)[0]
    with AlignedStack([FactorSource(DEM)], reference=SNOW) as stack:
        assert (stack.width, stack.height) == (1360, 2336)
        data, valid = stack.read()
    values = data[0, valid]
    assert np.nanmin(dem) <= values.min() and values.max() <= np.nanmax(dem)
    # Interpolated, not copied: most values are new (the DEM has many flat 0 m areas).
    assert np.mean(~np.isin(values, np.unique(dem))) > 0.3

    # Downsampling: the 10 m Ecuador factors onto a 30 m grid.
    ta = GridSpec.from_raster(TA)
    coarse = GridSpec.from_bounds(ta.crs, ta.bounds, 30.0)  # type: ignore[arg-type]
    original = _read_float(TA)
    with AlignedStack([FactorSource(TA)], reference=coarse) as stack:
        data, valid = stack.read()
    assert valid.mean() > 0.95
    for band in range(5):
        lo, hi = np.nanmin(original[band]), np.nanmax(original[band])
        got = data[band, valid]
        assert lo - 1e-4 * abs(lo) <= got.min() and got.max() <= hi + 1e-4 * abs(hi)


def test_reprojection_round_trip(tmp_path: Path) -> None:
    ta = GridSpec.from_raster(TA)
    geographic = ta.reprojected("EPSG:4326")
    assert geographic.crs is not None and geographic.crs.is_geographic
    warped = tmp_path / "ta_4326.tif"
    write_aligned_stack([FactorSource(TA)], geographic, warped)
    assert not list(tmp_path.glob(partial_glob(warped)))
    with rasterio.open(warped) as src:
        assert src.crs.to_epsg() == 4326
        assert src.count == 5 and src.dtypes[0] == "float32"
        assert src.descriptions == ("slope", "cplan", "cprof", "elev", "log10_carea")

    with AlignedStack([FactorSource(warped)], reference=TA) as stack:
        assert [d.properties for d in stack.same_grid_report()] == [("CRS", "resolution", "extent")]
        back, valid = stack.read()
    original = _read_float(TA)
    both = valid & np.all(np.isfinite(original), axis=0)
    assert both.mean() > 0.98
    elev_err = np.abs(back[3, both] - original[3, both])
    assert np.median(elev_err) < 1.0  # metres, on a 10 m grid with ~300 m relief
    correlations = [np.corrcoef(back[b, both], original[b, both])[0, 1] for b in range(5)]
    assert correlations[3] > 0.999  # elevation
    assert correlations[0] > 0.95  # slope
    assert min(correlations) > 0.8  # curvatures are the roughest fields


def test_windowed_reads_equal_full_read(classes_010: tuple[Path, np.ndarray]) -> None:
    path, _ = classes_010
    resample = [FactorSource(DEM), FactorSource(path, kind="categorical"), FactorSource(SNOW)]
    with AlignedStack(resample) as stack:
        full, _ = stack.read()
        np.testing.assert_array_equal(_mosaic(stack, block=100), full)
        np.testing.assert_array_equal(_mosaic(stack, block=128, halo=7), full)

    geographic = GridSpec.from_raster(TA).reprojected("EPSG:4326")
    with AlignedStack([FactorSource(TA)], reference=geographic) as stack:
        full, valid = stack.read()
        assert 0.5 < valid.mean() < 1.0  # the rotated footprint leaves nodata corners
        np.testing.assert_array_equal(_mosaic(stack, block=96), full)


def test_check_same_grid_names_the_raster_and_property(tmp_path: Path) -> None:
    check_same_grid([DEM, SLOPE, HILLSHADE])  # same grid: no error

    with pytest.raises(InputError) as info:
        check_same_grid([DEM, SLOPE, SNOW, TA])
    message = str(info.value)
    assert "'SNOW_CLOUD_MASK_010.tif'" in message and "'DEM_030.tif'" in message
    assert "resolution" in message and "CRS" not in message
    assert "ALIGN=true" in message

    # Same CRS and pixel size, shifted and cropped: only the extent differs.
    crop = tmp_path / "dem_crop.tif"
    with rasterio.open(DEM) as src:
        window = Window(10, 20, 100, 200)
        profile = src.profile
        profile.update(width=100, height=200, transform=src.window_transform(window), tiled=False)
        data = src.read(window=window)
    with rasterio.open(crop, "w", **profile) as dst:
        dst.write(data)
    with pytest.raises(InputError, match=r"'dem_crop.tif'.*\(extent differ: extent 100 x 200"):
        check_same_grid([DEM, crop])

    # Another CRS.
    with pytest.raises(InputError, match=r"'ta.tif'.*CRS EPSG:32717 instead of EPSG:32648"):
        check_same_grid([DEM, TA])

    with pytest.raises(InputError, match=r"does not exist"):
        check_same_grid([DEM, tmp_path / "missing.tif"])


def test_align_false_refuses_naming_the_raster() -> None:
    with pytest.raises(InputError, match=r"'SNOW_CLOUD_MASK_010.tif'.*'DEM_030.tif'.*ALIGN=true"):
        AlignedStack([FactorSource(DEM), FactorSource(SNOW)], align=False)
    with AlignedStack([FactorSource(DEM), FactorSource(SLOPE)], align=False) as stack:
        assert stack.count == 2


def test_band_expansion_and_unique_names(tmp_path: Path) -> None:
    with AlignedStack([FactorSource(TA)]) as stack:
        assert stack.names == ["slope", "cplan", "cprof", "elev", "log10_carea"]
    with AlignedStack([FactorSource(TA, band=4, name="elevation"), FactorSource(TA, band=1)]) as s:
        assert s.names == ["elevation", "slope"]
        data, _ = s.read(Window(0, 0, 50, 40))
        np.testing.assert_allclose(data[0], _read_float(TA)[3, :40, :50], equal_nan=True)
    with AlignedStack([FactorSource(TA, name="f")]) as stack:
        assert stack.names[:2] == ["f_slope", "f_cplan"]

    # A multi-band file without descriptions: <stem>_b<N>.
    three = tmp_path / "terrain3.tif"
    with rasterio.open(DEM) as src:
        profile = src.profile
        dem = src.read(1)
    profile.update(count=3)
    with rasterio.open(three, "w", **profile) as dst:
        dst.write(np.stack([dem, dem, dem]))
    with AlignedStack([FactorSource(three), FactorSource(DEM), FactorSource(DEM)]) as stack:
        assert stack.names == ["terrain3_b1", "terrain3_b2", "terrain3_b3", "DEM_030", "DEM_030_2"]

    # An automatic name never takes an explicit one.
    with AlignedStack([FactorSource(DEM), FactorSource(SLOPE, name="DEM_030")]) as stack:
        assert stack.names == ["DEM_030_2", "DEM_030"]
    with pytest.raises(InputError, match=r"both named 'x'"):
        AlignedStack([FactorSource(DEM, name="x"), FactorSource(SLOPE, name="x")])
    with pytest.raises(InputError, match=r"has 5 band.*no band 6"):
        AlignedStack([FactorSource(TA, band=6)])
    with pytest.raises(InputError, match=r"Unknown factor kind 'nominal'"):
        FactorSource(DEM, kind="nominal")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"No factor rasters"):
        AlignedStack([])


def test_missing_crs_cannot_be_reprojected(tmp_path: Path) -> None:
    nocrs = tmp_path / "nocrs.tif"
    with rasterio.open(DEM) as src:
        profile = src.profile
        dem = src.read(1)
    profile.update(crs=None)
    with rasterio.open(nocrs, "w", **profile) as dst:
        dst.write(dem, 1)
    # Same pixels, missing CRS label only: read directly.
    with AlignedStack([FactorSource(DEM), FactorSource(nocrs)]) as stack:
        assert stack.same_grid_report()[0].properties == ("CRS",)
        data, _ = stack.read(Window(0, 0, 30, 30))
        np.testing.assert_array_equal(data[0], data[1])
    with pytest.raises(InputError, match=r"'nocrs.tif'.*no coordinate reference system"):
        AlignedStack([FactorSource(nocrs)], reference=SNOW)


def test_write_aligned_stack_output_and_read_errors(tmp_path: Path) -> None:
    output = tmp_path / "stack.tif"
    sources = [FactorSource(DEM), FactorSource(SNOW, name="snow", kind="categorical")]
    fractions: list[float] = []
    write_aligned_stack(sources, None, output, block=256, progress=fractions.append)
    assert fractions[-1] == 1.0 and len(fractions) == 8  # 2 x 4 windows of 256
    assert not list(tmp_path.glob(partial_glob(output)))
    with AlignedStack(sources) as stack, rasterio.open(output) as src:
        assert src.descriptions == ("DEM_030", "snow")
        assert src.profile["tiled"] and src.compression is not None
        assert src.dtypes == ("float32", "float32")
        expected, _ = stack.read()
        np.testing.assert_array_equal(src.read(), expected)
        with pytest.raises(ValueError, match=r"outside"):
            stack.read(Window(400, 0, 100, 10))
    with pytest.raises(RuntimeError, match=r"not open"):
        stack.read(Window(0, 0, 1, 1))
