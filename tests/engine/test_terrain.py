"""Tests of the ``terrainfactors`` job (slidewise.engine.preparation.terrainfactors).

The reference values come from ``gdaldem`` (GDAL's command-line tool) run on the
real DEMs of ``shared/data/terrain``; tests that need either are skipped with the
reason when they are missing.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from engine_helpers import SHARED
from rasterio.transform import Affine
from scipy import ndimage

from slidewise.contract.protocol import parse_line
from slidewise.engine import worker
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.protocol import Reporter
from slidewise.engine.core.runtime import RuntimeOptions
from slidewise.engine.preparation.terrainfactors import (
    TERRAIN_BANDS,
    TerrainParams,
    metres_per_degree,
    run_job,
    terrain_block,
)

TERRAIN = SHARED / "terrain"
DEM_030 = TERRAIN / "jiuzhaigou" / "DEM_030.tif"
BIGTUJUNGA = TERRAIN / "bigtujunga_srtm30m.tif"
RHINE = TERRAIN / "rhine_elv0.tif"
GDALDEM = shutil.which("gdaldem")

BAND = {name: i for i, name in enumerate(TERRAIN_BANDS)}
LOCAL_BANDS = [i for i, name in enumerate(TERRAIN_BANDS) if name != "twi"]


def need(path: Path) -> Path:
    """Skip the test when a shared data file is absent."""
    if not path.exists():
        pytest.skip(f"shared test data {path} is not available (shared/data/terrain missing)")
    return path


def need_gdaldem() -> str:
    """Skip the test when the gdaldem tool is not installed."""
    if GDALDEM is None:
        pytest.skip("gdaldem (package gdal-bin) is not installed")
    return GDALDEM


def make_ctx(stream: io.StringIO | None = None) -> JobContext:
    """A job context that reports into a string buffer."""
    return JobContext(
        name="terrainfactors",
        options=RuntimeOptions(),
        reporter=Reporter(stream if stream is not None else io.StringIO()),
    )


def run_terrain(dem: Path, output: Path, **params: Any) -> JobResult:
    """Run the job in-process."""
    return run_job({"INPUT": str(dem), "OUTPUT": str(output), **params}, make_ctx())


def read_all(path: Path) -> np.ndarray:
    """All bands as float64."""
    with rasterio.open(path) as src:
        return src.read().astype(np.float64)


def gdaldem(tmp: Path, mode: str, dem: Path, *args: str) -> np.ndarray:
    """Run ``gdaldem MODE`` into ``tmp`` and return band 1 as float64."""
    out = tmp / f"gdaldem_{mode}_{dem.stem}.tif"
    subprocess.run([need_gdaldem(), mode, str(dem), str(out), "-q", *args], check=True)
    with rasterio.open(out) as src:
        return src.read(1).astype(np.float64)


def write_dem(
    path: Path,
    z: np.ndarray,
    transform: Affine | None = None,
    crs: str | None = "EPSG:32633",
    nodata: float | None = -9999.0,
) -> Path:
    """Write a single- or multi-band DEM GeoTIFF."""
    z = z if z.ndim == 3 else z[None]
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": z.shape[2],
        "height": z.shape[1],
        "count": z.shape[0],
        "dtype": str(z.dtype),
        "transform": transform or from_origin(500000.0, 5000000.0, 30.0, 30.0),
        "nodata": nodata,
    }
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(z)
    return path


def from_origin(west: float, north: float, xsize: float, ysize: float) -> Affine:
    """North-up transform (rasterio's helper warns about Affine's ``*``)."""
    return Affine(xsize, 0.0, west, 0.0, -ysize, north)


def circular_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Absolute difference of angles in degrees, in [0, 180]."""
    return np.abs((a - b + 180.0) % 360.0 - 180.0)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, JobResult]]:
    """The job's output on the two projected real DEMs, computed once."""
    folder = tmp_path_factory.mktemp("terrain")
    results = {}
    for dem in (DEM_030, BIGTUJUNGA):
        if dem.exists():
            out = folder / f"{dem.stem}_terrain.tif"
            results[dem.name] = (out, run_terrain(dem, out))
    return results


def output_of(outputs: dict[str, tuple[Path, JobResult]], dem: Path) -> Path:
    need(dem)
    return outputs[dem.name][0]


# ---------------------------------------------------------------------------
# (1) agreement with gdaldem
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dem", [DEM_030, BIGTUJUNGA], ids=["DEM_030", "bigtujunga"])
def test_matches_gdaldem(dem: Path, outputs: dict, tmp_path: Path) -> None:
    ours = read_all(output_of(outputs, dem))
    g_slope = gdaldem(tmp_path, "slope", dem)
    g_aspect = gdaldem(tmp_path, "aspect", dem)
    g_shade = gdaldem(tmp_path, "hillshade", dem)

    slope = ours[BAND["slope"]]
    # Same valid footprint: NaN exactly where gdaldem writes nodata (ring + nodata).
    assert np.array_equal(np.isfinite(slope), g_slope != -9999.0)
    valid = np.isfinite(slope)
    assert valid.sum() > 0.9 * (slope.shape[0] - 2) * (slope.shape[1] - 2)
    assert np.max(np.abs(slope[valid] - g_slope[valid])) < 0.1  # measured: 0.0

    aspect = ours[BAND["aspect"]]
    flat = valid & np.isnan(aspect)
    assert np.array_equal(flat, valid & (g_aspect == -9999.0))  # same flat cells
    sloped = valid & ~flat
    assert np.max(circular_diff(aspect[sloped], g_aspect[sloped])) < 0.1  # measured <= 0.0043
    assert np.all((aspect[sloped] >= 0.0) & (aspect[sloped] < 360.0))
    assert np.all(ours[BAND["aspect_sin"]][flat] == 0.0)
    assert np.all(ours[BAND["aspect_cos"]][flat] == 0.0)
    rad = np.radians(aspect[sloped])
    np.testing.assert_allclose(ours[BAND["aspect_sin"]][sloped], np.sin(rad), atol=1e-5)
    np.testing.assert_allclose(ours[BAND["aspect_cos"]][sloped], np.cos(rad), atol=1e-5)

    shade = ours[BAND["hillshade"]]
    lit = np.isfinite(shade) & (g_shade != 0.0)
    assert np.array_equal(np.isfinite(shade), lit)
    assert np.max(np.abs(shade[lit] - g_shade[lit])) <= 1.0  # measured: 0.5 (rounding)
    assert np.nanmin(shade) >= 1.0 and np.nanmax(shade) <= 255.0


def test_output_layout_and_figures(outputs: dict) -> None:
    need(DEM_030)
    path, result = outputs[DEM_030.name]
    with rasterio.open(path) as src:
        assert src.descriptions == TERRAIN_BANDS
        assert src.count == 8 and set(src.dtypes) == {"float32"}
        assert math.isnan(src.nodata)
        assert src.profile["tiled"]
        assert src.units[BAND["slope"]] == "degree"
        assert src.units[BAND["plan_curvature"]] == "1/m"
        with rasterio.open(DEM_030) as dem:
            assert src.crs == dem.crs and src.transform == dem.transform
            assert (src.width, src.height) == (dem.width, dem.height)
    assert result.outputs == {"OUTPUT": str(path)}
    assert result.inputs == [str(DEM_030)]
    bands = result.figures["bands"]
    assert list(bands) == list(TERRAIN_BANDS)
    data = read_all(path)
    for name, fig in bands.items():
        band = data[BAND[name]]
        finite = band[np.isfinite(band)]
        assert fig["valid_pixels"] == finite.size
        assert fig["nodata_pixels"] == band.size - finite.size
        assert fig["min"] == pytest.approx(finite.min())
        assert fig["max"] == pytest.approx(finite.max())
        assert fig["mean"] == pytest.approx(finite.mean(), rel=1e-6)
    assert result.figures["pixels"] == data[0].size
    assert 0 <= bands["slope"]["min"] and bands["slope"]["max"] < 90
    assert (
        bands["aspect"]["valid_pixels"]
        == bands["slope"]["valid_pixels"] - (result.figures["flat_pixels"])
    )


# ---------------------------------------------------------------------------
# (2) windows
# ---------------------------------------------------------------------------


def test_windowed_equals_single_block(tmp_path: Path) -> None:
    dem = need(DEM_030)
    small, large = tmp_path / "b64.tif", tmp_path / "b4096.tif"
    run_terrain(dem, small, BLOCK_SIZE=64)
    run_terrain(dem, large, BLOCK_SIZE=4096)
    a, b = read_all(small), read_all(large)
    for i, name in enumerate(TERRAIN_BANDS):  # TWI too: routing is global either way
        assert np.array_equal(a[i], b[i], equal_nan=True), name


# ---------------------------------------------------------------------------
# (3) nodata
# ---------------------------------------------------------------------------


def test_nodata_hole_spreads_one_pixel(tmp_path: Path, outputs: dict) -> None:
    reference = read_all(output_of(outputs, BIGTUJUNGA))
    with rasterio.open(BIGTUJUNGA) as src:
        z, profile = src.read(1), src.profile
    hole = np.zeros(z.shape, dtype=bool)
    hole[300:340, 500:530] = True  # a block
    hole[100, 200] = hole[450, 900] = True  # single pixels
    z = z.copy()
    z[hole] = profile["nodata"]
    holed = tmp_path / "holed.tif"
    with rasterio.open(holed, "w", **profile) as dst:
        dst.write(z, 1)
    result = read_all(run_terrain_output(holed, tmp_path / "holed_terrain.tif"))

    touched = ndimage.binary_dilation(hole, structure=np.ones((3, 3), dtype=bool))
    for i in LOCAL_BANDS:
        assert np.all(np.isnan(result[i][touched])), TERRAIN_BANDS[i]
        outside = ~touched
        assert np.array_equal(result[i][outside], reference[i][outside], equal_nan=True)
    twi = result[BAND["twi"]]
    assert np.all(np.isnan(twi[touched]))
    # Drainage into the hole changes TWI downstream, but never makes it NaN.
    assert np.array_equal(np.isfinite(twi[~touched]), np.isfinite(reference[BAND["twi"]][~touched]))


def run_terrain_output(dem: Path, output: Path, **params: Any) -> Path:
    run_terrain(dem, output, **params)
    return output


# ---------------------------------------------------------------------------
# (4) geographic CRS
# ---------------------------------------------------------------------------


def test_metres_per_degree_matches_wgs84_tables() -> None:
    east_west, north_south = metres_per_degree(np.array([0.0, 45.0, 60.0]))
    np.testing.assert_allclose(east_west, [111319.5, 78847.0, 55800.0], atol=1.0)
    np.testing.assert_allclose(north_south, [110574.3, 111131.7, 111412.3], atol=1.0)


def test_geographic_refused_by_default(tmp_path: Path) -> None:
    dem = need(RHINE)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(InputError) as info:
        run_terrain(dem, out_dir / "rhine.tif")
    message = str(info.value)
    assert "geographic CRS (degrees)" in message
    assert "reproject it to a projected CRS" in message and "Warp (reproject)" in message
    assert "GEOGRAPHIC=degrees_to_metres" in message
    assert list(out_dir.iterdir()) == []


def test_geographic_degrees_to_metres(tmp_path: Path) -> None:
    """Check degrees_to_metres against gdaldem in two ways.

    1. Row-exact: for a few rows, gdaldem slope on a copy of the DEM whose pixel
       size is set to that row's metres per degree (east-west and north-south)
       must match our slope on that row within 0.01 degree.
    2. Bracket over every interior pixel: ``gdaldem slope -s 111120`` uses 111 120
       m per degree on both axes, ignoring cos(latitude); our tan(slope) must lie
       between tan(its slope) * 111120 / M(lat) and tan(its slope) * 111120 /
       (N(lat) cos(lat)), the two extreme cases of a purely north-south and a
       purely east-west gradient.
    """
    dem = need(RHINE)
    out = run_terrain_output(dem, tmp_path / "rhine.tif", GEOGRAPHIC="degrees_to_metres")
    ours = read_all(out)
    slope = ours[BAND["slope"]]
    with rasterio.open(dem) as src:
        z, transform, nodata = src.read(1), src.transform, src.nodata
    latitude = transform.f + (np.arange(z.shape[0]) + 0.5) * transform.e
    east_west, north_south = metres_per_degree(latitude)

    for row in (120, 340, 560):  # about 51.0, 49.2 and 47.3 degrees north
        local = tmp_path / f"row{row}.tif"
        pixel = Affine(transform.a * east_west[row], 0, 0, 0, transform.e * north_south[row], 0)
        write_dem(local, z, transform=pixel, crs="EPSG:3857", nodata=nodata)
        reference = gdaldem(tmp_path, "slope", local)[row]
        ok = np.isfinite(slope[row]) & (reference != -9999.0)
        assert ok.sum() > 100
        assert np.max(np.abs(slope[row][ok] - reference[ok])) < 0.01

    g = gdaldem(tmp_path, "slope", dem, "-s", "111120")
    ok = np.isfinite(slope) & (g != -9999.0) & (g > 0.01)
    assert ok.sum() > 300_000
    ratio = np.tan(np.radians(slope[ok])) / np.tan(np.radians(g[ok]))
    rows = np.broadcast_to(np.arange(z.shape[0])[:, None], z.shape)[ok]
    assert np.all(ratio >= 111120.0 / north_south[rows] * (1 - 1e-4))
    assert np.all(ratio <= 111120.0 / east_west[rows] * (1 + 1e-4))
    assert 1.1 < np.median(ratio) < 1.4  # cos(latitude) matters: 46-52 degrees north
    twi = ours[BAND["twi"]]
    assert np.array_equal(np.isfinite(twi), np.isfinite(slope))


# ---------------------------------------------------------------------------
# (5) TWI
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dem", [DEM_030, BIGTUJUNGA], ids=["DEM_030", "bigtujunga"])
def test_twi_is_higher_in_valleys_than_on_ridges(dem: Path, outputs: dict) -> None:
    data = read_all(output_of(outputs, dem))
    twi, slope = data[BAND["twi"]], data[BAND["slope"]]
    plan = data[BAND["plan_curvature"]]
    assert np.array_equal(np.isfinite(twi), np.isfinite(slope))
    finite = np.isfinite(twi)
    # ln(cell size / tan(90 deg)) is the lowest possible value on 30 m pixels.
    assert np.nanmin(twi) > math.log(30.0 / math.tan(math.radians(89.9)))
    gentle = finite & (slope < 5.0)
    steep = finite & (slope > 30.0)
    assert gentle.sum() > 1000 and steep.sum() > 1000
    assert twi[gentle].mean() > twi[steep].mean() + 2.0
    # Convergent hollows and valleys (plan curvature < 0) against divergent noses.
    concave = finite & (plan < -0.005) & (slope > 5.0)
    convex = finite & (plan > 0.005) & (slope > 5.0)
    assert twi[concave].mean() > twi[convex].mean() + 1.0


def test_twi_along_a_valley(tmp_path: Path) -> None:
    """A V-shaped valley draining north: TWI grows downstream along the axis."""
    y, x = np.mgrid[0:60, 0:41].astype(np.float64)
    z = (1000.0 + 0.2 * np.abs(x - 20) * 30.0 - 0.05 * (59 - y) * 30.0).astype(np.float32)
    out = run_terrain_output(write_dem(tmp_path / "valley.tif", z), tmp_path / "v.tif")
    data = read_all(out)
    twi, slope = data[BAND["twi"]], data[BAND["slope"]]
    axis = twi[5:-5, 20][::-1]  # upstream (south) to downstream (north)
    assert np.all(np.diff(axis) > 0)
    assert np.nanmean(twi[5:-5, 20]) > np.nanmean(twi[5:-5, 5]) + 2
    # Units: a = (upslope cells x 900 m^2) / 30 m, so exp(twi) tan(beta) / 30 m counts
    # the upslope cells (the cell included): a whole number >= 1 on every cell.
    ok = np.isfinite(twi)
    cells = np.exp(twi[ok]) * np.maximum(np.tan(np.radians(slope[ok])), 1e-3) / 30.0
    assert cells.min() > 0.999
    np.testing.assert_allclose(cells, np.round(cells), rtol=1e-4)
    assert cells.max() > 500  # the valley axis near the outlet drains most of the DEM


# ---------------------------------------------------------------------------
# Synthetic surfaces: geometry, units, signs
# ---------------------------------------------------------------------------


def block_of(z: np.ndarray, dx: float, dy: float, **params: Any) -> np.ndarray:
    """terrain_block on a whole synthetic array (outer ring becomes NaN)."""
    h, w = z.shape[0] - 2, z.shape[1] - 2
    sca = np.full((h, w), 100.0, dtype=np.float32)
    return terrain_block(
        z.astype(np.float64), np.full((h, 1), dx), np.full((h, 1), dy), sca, TerrainParams(**params)
    )


@pytest.mark.parametrize(
    ("gx", "gy", "expected"),
    [(-0.1, 0.0, 90.0), (0.1, 0.0, 270.0), (0.0, 0.1, 180.0), (0.0, -0.1, 0.0), (-0.1, -0.1, 45.0)],
)
def test_plane_slope_aspect_non_square_pixels(gx: float, gy: float, expected: float) -> None:
    dx, dy = 10.0, -25.0  # north-up, non-square pixels
    rows, cols = np.mgrid[0:6, 0:7].astype(np.float64)
    z = 500.0 + gx * cols * dx + gy * rows * dy  # map x east, map y north
    out = block_of(z, dx, dy)
    np.testing.assert_allclose(out[BAND["slope"]], math.degrees(math.atan(math.hypot(gx, gy))))
    assert np.max(circular_diff(out[BAND["aspect"]], expected)) < 1e-4
    np.testing.assert_allclose(out[BAND["plan_curvature"]], 0.0, atol=1e-9)
    np.testing.assert_allclose(out[BAND["profile_curvature"]], 0.0, atol=1e-9)


def test_curvature_signs_and_units() -> None:
    radius, cell = 500.0, 10.0
    rows, cols = np.mgrid[0:21, 0:21].astype(np.float64)
    x, y = (cols - 10) * cell, (10 - rows) * cell  # east, north (north-up)
    # Convex ridge along x, sloping east at gradient 0.2: contour curvature 1/(R S).
    ridge = block_of(1000.0 - y**2 / (2 * radius) - 0.2 * x, cell, -cell)
    centre = (9, slice(2, -2))  # row y = 0 of the inner block
    np.testing.assert_allclose(ridge[BAND["plan_curvature"]][centre], 1 / (radius * 0.2), rtol=1e-5)
    # Convex-up profile (slope steepening eastwards, downhill): positive profile curvature.
    knee = block_of(1000.0 - (x + 200.0) ** 2 / (2 * radius), cell, -cell)
    p = (x + 200.0)[1:-1, 1:-1] / radius
    np.testing.assert_allclose(
        knee[BAND["profile_curvature"]], (1 / radius) / (1 + p**2) ** 1.5, rtol=1e-5
    )
    np.testing.assert_allclose(knee[BAND["plan_curvature"]], 0.0, atol=1e-9)
    # A bowl is concave in both directions (away from its flat centre).
    bowl = block_of((x**2 + y**2) / (2 * radius), cell, -cell)
    off_centre = np.hypot(x, y)[1:-1, 1:-1] > 2 * cell
    assert np.all(bowl[BAND["plan_curvature"]][off_centre] < 0)
    assert np.all(bowl[BAND["profile_curvature"]][off_centre] < 0)
    assert bowl[BAND["plan_curvature"]][9, 9] == 0.0  # flat centre: undefined, 0
    assert np.isnan(bowl[BAND["aspect"]][9, 9])


def test_south_up_raster_gives_the_same_factors(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    z = ndimage.gaussian_filter(rng.normal(size=(50, 40)), 3) * 400 + 1000
    north_up = write_dem(tmp_path / "n.tif", z, transform=from_origin(0, 1500, 20, 30))
    south_up = write_dem(tmp_path / "s.tif", z[::-1].copy(), transform=Affine(20, 0, 0, 0, 30, 0))
    a = read_all(run_terrain_output(north_up, tmp_path / "n_out.tif"))
    b = read_all(run_terrain_output(south_up, tmp_path / "s_out.tif"))[:, ::-1]
    for i in LOCAL_BANDS:
        np.testing.assert_allclose(a[i], b[i], rtol=1e-5, atol=1e-6, err_msg=TERRAIN_BANDS[i])


def test_crs_in_feet_and_z_factor(tmp_path: Path) -> None:
    """EPSG:2229 is in US survey feet: Z_FACTOR maps z to feet, results are in metres."""
    foot = 0.30480060960121924
    _, cols = np.mgrid[0:8, 0:9].astype(np.float64)
    plane = write_dem(  # z in feet, rising 10 ft per 100 ft eastwards
        tmp_path / "plane.tif",
        (100.0 + 0.1 * cols * 100.0).astype(np.float32),
        transform=from_origin(0, 1e5, 100, 100),
        crs="EPSG:2229",
    )
    out = read_all(run_terrain_output(plane, tmp_path / "plane_out.tif"))
    inner = (slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(out[BAND["slope"]][inner], math.degrees(math.atan(0.1)), rtol=1e-5)
    np.testing.assert_allclose(out[BAND["aspect"]][inner], 270.0, rtol=1e-6)
    out = read_all(run_terrain_output(plane, tmp_path / "plane_z3.tif", Z_FACTOR=3))
    np.testing.assert_allclose(out[BAND["slope"]][inner], math.degrees(math.atan(0.3)), rtol=1e-5)
    # Curvature in 1/m: z = -x^2 / (2 R) in feet has profile curvature
    # (1 / R) / (1 + p^2)^1.5 per foot, that is divided by 0.3048... per metre.
    radius = 2000.0  # feet
    x = cols * 100.0 + 300.0
    knee = write_dem(
        tmp_path / "knee.tif",
        1000.0 - x**2 / (2 * radius),
        transform=from_origin(0, 1e5, 100, 100),
        crs="EPSG:2229",
        nodata=None,
    )
    out = read_all(run_terrain_output(knee, tmp_path / "knee_out.tif"))
    p = x[inner] / radius
    expected = (1 / (radius * foot)) / (1 + p**2) ** 1.5
    np.testing.assert_allclose(out[BAND["profile_curvature"]][inner], expected, rtol=1e-5)


# ---------------------------------------------------------------------------
# (6) bad inputs
# ---------------------------------------------------------------------------


def _missing(folder: Path) -> Path:
    return folder / "nope.tif"


def _text(folder: Path) -> Path:
    path = folder / "notes.tif"
    path.write_text("this is not a raster\n")
    return path


def _zero_bytes(folder: Path) -> Path:
    path = folder / "zero.tif"
    path.write_bytes(b"")
    return path


def _all_nodata(folder: Path) -> Path:
    return write_dem(folder / "allnodata.tif", np.full((20, 20), -9999, dtype=np.int16))


def _no_crs(folder: Path) -> Path:
    return write_dem(folder / "nocrs.tif", np.ones((20, 20), dtype=np.float32), crs=None)


def _rotated(folder: Path) -> Path:
    return write_dem(
        folder / "rotated.tif",
        np.ones((20, 20), dtype=np.float32),
        transform=Affine.rotation(10) @ Affine.scale(30, -30),
    )


def _too_small(folder: Path) -> Path:
    return write_dem(folder / "tiny.tif", np.ones((2, 20), dtype=np.float32))


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (_missing, "does not exist"),
        (_text, "is not a raster GDAL can read"),
        (_zero_bytes, "is not a raster GDAL can read"),
        (_all_nodata, "no valid elevation"),
        (_no_crs, "has no coordinate reference system"),
        (_rotated, "rotated or sheared grid"),
        (_too_small, "at least 3 x 3"),
    ],
    ids=["missing", "text", "zero-bytes", "all-nodata", "no-crs", "rotated", "2-rows"],
)
def test_bad_inputs(make: Any, fragment: str, tmp_path: Path) -> None:
    inputs, out_dir = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out_dir.mkdir()
    dem = make(inputs)
    with pytest.raises(InputError, match=fragment) as info:
        run_terrain(dem, out_dir / "terrain.tif")
    assert dem.name in str(info.value)
    assert list(out_dir.iterdir()) == []  # no output, no partial file


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"SLOPE_UNITS": "percent"}, "Unknown parameter"),
        ({"Z_FACTOR": -1}, "Z_FACTOR must be between 1e-09 and"),
        ({"Z_FACTOR": "abc"}, "Z_FACTOR must be a number"),
        ({"ALTITUDE": 95}, "ALTITUDE must be between"),
        ({"BLOCK_SIZE": 8}, "BLOCK_SIZE must be"),
        ({"GEOGRAPHIC": "guess"}, "Unknown value 'guess' for GEOGRAPHIC"),
    ],
)
def test_bad_parameters(params: dict, fragment: str, tmp_path: Path) -> None:
    dem = write_dem(tmp_path / "dem.tif", np.ones((10, 10), dtype=np.float32))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(InputError, match=fragment):
        run_terrain(dem, out_dir / "t.tif", **params)
    assert list(out_dir.iterdir()) == []


def test_bad_output_paths(tmp_path: Path) -> None:
    dem = write_dem(tmp_path / "dem.tif", np.ones((10, 10), dtype=np.float32))
    with pytest.raises(InputError, match="does not exist"):
        run_terrain(dem, tmp_path / "missing_folder" / "t.tif")
    with pytest.raises(InputError, match="must be a GeoTIFF"):
        run_terrain(dem, tmp_path / "t.img")
    with pytest.raises(InputError, match=r"OUTPUT is the input INPUT .* never overwrites its own"):
        run_terrain(dem, dem)
    with pytest.raises(InputError, match="Missing required parameter"):
        run_job({"INPUT": str(dem)}, make_ctx())


# ---------------------------------------------------------------------------
# (7) through the worker and its protocol
# ---------------------------------------------------------------------------


def run_worker(job: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    stream = io.StringIO()
    code = worker.run(job, Reporter(stream))
    messages = [parse_line(line) for line in stream.getvalue().splitlines()]
    assert all(m is not None for m in messages)
    return code, [m for m in messages if m is not None]


def test_worker_protocol(tmp_path: Path) -> None:
    with rasterio.open(need(DEM_030)) as src:
        z, profile = src.read(window=((100, 300), (100, 260))), src.profile
        transform = src.transform @ Affine.translation(100, 100)
    profile.update(count=2, width=z.shape[2], height=z.shape[1], transform=transform)
    dem = tmp_path / "two_bands.tif"
    with rasterio.open(dem, "w", **profile) as dst:
        dst.write(np.concatenate([z, z // 2]))
    output = tmp_path / "out" / "factors.tif"
    output.parent.mkdir()
    code, messages = run_worker(
        {"job": "terrainfactors", "params": {"INPUT": str(dem), "OUTPUT": str(output)}}
    )
    assert code == worker.EXIT_OK
    kinds = [m["type"] for m in messages]
    assert kinds[-1] == "result" and "error" not in kinds
    progress = [m["value"] for m in messages if m["type"] == "progress"]
    assert len(progress) >= 3 and progress == sorted(progress) and progress[-1] == 100
    logs = [m for m in messages if m["type"] == "log"]
    assert any(m["level"] == "warning" and "band 1 is used" in m["message"] for m in logs)
    assert any("Flow routing" in m["message"] for m in logs)
    result = messages[-1]
    assert result["outputs"] == {"OUTPUT": str(output)}
    assert result["figures"]["bands"]["slope"]["valid_pixels"] == 198 * 158
    manifest = Path(result["manifest"])
    assert manifest == output.with_name("factors.manifest.json") and manifest.exists()
    record = json.loads(manifest.read_text())
    assert record["algorithm"] == "slidewise:terrainfactors"
    assert list(record["inputs"]) == [str(dem)] and record["inputs"][str(dem)]
    assert sorted(p.name for p in output.parent.iterdir()) == [
        "factors.manifest.json",
        "factors.tif",
    ]
    with rasterio.open(output) as src:
        assert src.descriptions == TERRAIN_BANDS


def test_worker_reports_input_errors(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, messages = run_worker(
        {
            "job": "terrainfactors",
            "params": {"INPUT": str(need(RHINE)), "OUTPUT": str(out_dir / "t.tif")},
        }
    )
    assert code == worker.EXIT_USER
    assert messages[-1]["type"] == "error" and messages[-1]["kind"] == "input"
    assert "geographic CRS" in messages[-1]["message"]
    assert list(out_dir.iterdir()) == []
