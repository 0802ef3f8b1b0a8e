"""Tests of engine/raster.py: validation, windows, masked reads, atomic tiled outputs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import rasterio
from affine import Affine
from engine_helpers import SHARED
from rasterio.crs import CRS
from rasterio.windows import Window

from slidewise.contract.partials import PARTIAL_TAG
from slidewise.engine.core.errors import InputError
from slidewise.engine.geo.raster import (
    create_raster,
    iter_windows,
    open_raster,
    output_profile,
    read_masked,
    same_grid,
)

JIUZHAI = SHARED / "terrain" / "jiuzhaigou"
DEM = JIUZHAI / "DEM_030.tif"
TA = SHARED / "susceptibility" / "ecuador" / "ta.tif"
RHINE = SHARED / "terrain" / "rhine_elv0.tif"

needs_data = pytest.mark.skipif(
    not (DEM.exists() and TA.exists()), reason=f"real data not found under {SHARED}"
)


def _write(path: Path, array: np.ndarray, nodata: float | None = None, **extra: object) -> Path:
    """Write a small (bands, rows, cols) GeoTIFF in UTM 48N, 30 m pixels."""
    array = array if array.ndim == 3 else array[None]
    profile = {
        "driver": "GTiff",
        "width": array.shape[2],
        "height": array.shape[1],
        "count": array.shape[0],
        "dtype": array.dtype.name,
        "crs": CRS.from_epsg(32648),
        "transform": Affine(30, 0, 394000, 0, -30, 3690000),
        "nodata": nodata,
        **extra,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if PARTIAL_TAG in p.name]


# -- open_raster ----------------------------------------------------------------


@needs_data
def test_open_raster_describes_a_real_raster() -> None:
    info = open_raster(DEM, what="DEM")
    assert (info.width, info.height, info.count) == (453, 779, 1)
    assert info.crs is not None and info.crs.to_epsg() == 32648
    assert info.nodata == -9999 and info.dtype == "int16"
    assert info.res == pytest.approx((30.0, 30.0), rel=1e-3)
    assert not info.is_geographic
    assert info.band_names() == ["band_1"]
    assert open_raster(TA).band_names() == ["slope", "cplan", "cprof", "elev", "log10_carea"]
    if RHINE.exists():
        assert open_raster(RHINE).is_geographic


def test_open_raster_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"No DEM was given"):
        open_raster("", what="DEM")
    with pytest.raises(InputError, match=r"DEM '.*missing.tif' does not exist: check the path"):
        open_raster(tmp_path / "missing.tif", what="DEM")
    with pytest.raises(InputError, match=r"is a folder: choose a raster file inside it"):
        open_raster(tmp_path)

    text = tmp_path / "notes.tif"
    text.write_text("this is not a raster\n")
    with pytest.raises(InputError, match=r"'notes.tif' is not a raster GDAL can read.*GeoTIFF"):
        open_raster(text)

    empty_file = tmp_path / "zero_bytes.tif"
    empty_file.write_bytes(b"")
    with pytest.raises(InputError, match=r"not a raster GDAL can read"):
        open_raster(empty_file)


@needs_data
def test_open_raster_refuses_truncated_header(tmp_path: Path) -> None:
    truncated = tmp_path / "cut.tif"
    truncated.write_bytes(DEM.read_bytes()[:100])  # the first directory is cut
    with pytest.raises(InputError, match=r"'cut.tif' is not a raster GDAL can read"):
        open_raster(truncated)


@needs_data
def test_truncated_pixel_data_is_an_input_error(tmp_path: Path) -> None:
    truncated = tmp_path / "cut.tif"
    truncated.write_bytes(DEM.read_bytes()[:5000])
    with pytest.raises(InputError, match=r"cut.tif"):
        open_raster(truncated)
        with rasterio.open(truncated) as src:
            read_masked(src)


def test_open_raster_refuses_a_raster_without_bands(tmp_path: Path) -> None:
    # GDAL cannot create a 0 x 0 or 0-band GeoTIFF, but it opens an HDF5 container
    # (a common pick by mistake) as a dataset with 0 bands and only subdatasets.
    container = tmp_path / "container.h5"
    with h5py.File(container, "w") as handle:
        handle["image"] = np.zeros((8, 8), dtype=np.float32)
        handle["mask"] = np.ones((4, 4), dtype=np.uint8)
    with pytest.raises(InputError, match=r"'container.h5' is empty \(.*0 bands\)"):
        open_raster(container)


def test_all_nodata_raster_opens_but_has_no_valid_pixel(tmp_path: Path) -> None:
    # Decision: open_raster checks the file, not its values; a raster that is all
    # nodata is accepted and the job reports "no valid pixels" after reading.
    path = _write(tmp_path / "nodata.tif", np.full((20, 30), -9999, np.int16), nodata=-9999)
    info = open_raster(path)
    assert (info.width, info.height, info.count) == (30, 20, 1)
    with rasterio.open(path) as src:
        data, valid = read_masked(src)
    assert not valid.any() and np.isnan(data).all()


# -- iter_windows ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "block", "halo"),
    [
        (1, 1, 4, 0),
        (1, 1, 4, 3),
        (10, 7, 3, 2),
        (5, 5, 100, 3),
        (257, 256, 256, 1),
        (513, 300, 128, 16),
        (1000, 999, 256, 64),
    ],
)
def test_iter_windows_cover_every_pixel_once(
    width: int, height: int, block: int, halo: int
) -> None:
    count = np.zeros((height, width), dtype=np.int32)
    ids = np.arange(width * height).reshape(height, width)
    for read, write, inner in iter_windows(width, height, block=block, halo=halo):
        rr, rc = read.toslices()
        wr, wc = write.toslices()
        count[wr, wc] += 1
        assert write.width <= block and write.height <= block
        # The read window is the write window grown by the halo, clipped at the edges.
        assert read.row_off == max(0, write.row_off - halo)
        assert read.col_off == max(0, write.col_off - halo)
        assert read.row_off + read.height == min(height, write.row_off + write.height + halo)
        assert read.col_off + read.width == min(width, write.col_off + write.width + halo)
        # inner cuts exactly the write window out of what was read.
        np.testing.assert_array_equal(ids[rr, rc][inner], ids[wr, wc])
    assert count.min() == 1 and count.max() == 1


# -- read_masked ----------------------------------------------------------------


def test_read_masked_nan_for_nodata_and_non_finite(tmp_path: Path) -> None:
    ints = np.arange(48, dtype=np.int16).reshape(6, 8)
    ints[1, 2] = -9999
    int_path = _write(tmp_path / "ints.tif", ints, nodata=-9999)
    with rasterio.open(int_path) as src:
        data, valid = read_masked(src)
    assert data.dtype == np.float32 and data.shape == (1, 6, 8)
    assert np.isnan(data[0, 1, 2]) and not valid[1, 2]
    assert valid.sum() == 47
    np.testing.assert_array_equal(data[0, valid], ints[valid].astype(np.float32))

    floats = np.ones((2, 6, 8), dtype=np.float32)
    floats[0, 0, 0] = np.nan  # NaN without a nodata value
    floats[1, 5, 7] = np.inf
    floats[1, 3, 3] = -1.0  # the nodata value of the file
    float_path = _write(tmp_path / "floats.tif", floats, nodata=-1.0)
    with rasterio.open(float_path) as src:
        data, valid = read_masked(src)
        assert {(0, 0), (5, 7), (3, 3)} == set(zip(*np.nonzero(~valid), strict=True))
        # A pixel invalid in one band is NaN in every band.
        assert np.isnan(data[:, ~valid]).all() and np.isfinite(data[:, valid]).all()
        second, ok2 = read_masked(src, indexes=2, window=Window(2, 2, 6, 4))
        assert second.shape == (1, 4, 6) and ok2.sum() == 22
        # Boundless reads mark the outside as invalid.
        edge, ok3 = read_masked(src, window=Window(-2, -3, 5, 5), boundless=True)
        assert not ok3[:3].any() and not ok3[:, :2].any() and np.isnan(edge[:, :3]).all()


@needs_data
def test_read_masked_real_factors() -> None:
    with rasterio.open(TA) as src:
        raw = src.read()
        data, valid = read_masked(src)
    np.testing.assert_array_equal(valid, np.all(np.isfinite(raw), axis=0))
    assert 0.99 < valid.mean() < 1.0
    np.testing.assert_array_equal(data[:, valid], raw[:, valid])


# -- output_profile and create_raster --------------------------------------------


@needs_data
def test_output_profile_is_tiled_and_compressed(tmp_path: Path) -> None:
    info = open_raster(DEM)
    profile = output_profile(info, count=2)
    assert profile["tiled"] and profile["blockxsize"] == profile["blockysize"] == 256
    assert profile["compress"] == "deflate" and profile["predictor"] == 3
    assert np.isnan(profile["nodata"]) and profile["dtype"] == "float32"
    assert (profile["width"], profile["height"], profile["crs"]) == (453, 779, info.crs)

    int_profile = output_profile(info, count=1, dtype="uint8", nodata=255, block=128)
    assert int_profile["predictor"] == 2 and int_profile["nodata"] == 255
    assert int_profile["blockxsize"] == 128
    small = output_profile({**profile, "width": 10, "height": 10}, count=1)
    assert "tiled" not in small

    path = tmp_path / "out.tif"
    with create_raster(path, profile, band_names=["a", "b"]) as dst:
        dst.write(np.ones((2, 779, 453), dtype=np.float32))
    with rasterio.open(path) as src:
        assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
        assert src.compression is not None and src.compression.value == "DEFLATE"
        assert src.crs == info.crs and src.transform == info.transform
        assert np.isnan(src.nodata)


def _small_profile(count: int = 2) -> dict[str, object]:
    return output_profile(
        {
            "width": 64,
            "height": 48,
            "crs": CRS.from_epsg(32648),
            "transform": Affine(30, 0, 0, 0, -30, 0),
        },
        count=count,
        block=16,
    )


def test_create_raster_success_sets_descriptions(tmp_path: Path) -> None:
    path = tmp_path / "factors.tif"
    with create_raster(path, _small_profile(), band_names=["slope", "aspect"]) as dst:
        assert not path.exists()  # written under a temporary name until complete
        for _, write, _ in iter_windows(64, 48, block=16):
            dst.write(np.full((2, write.height, write.width), 7, np.float32), window=write)
    with rasterio.open(path) as src:
        assert src.descriptions == ("slope", "aspect")
        assert (src.read() == 7).all()
    assert _leftovers(tmp_path) == []


def test_create_raster_failure_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "factors.tif"
    with pytest.raises(ZeroDivisionError):
        with create_raster(path, _small_profile(), band_names=["a", "b"]) as dst:
            dst.write(np.ones((2, 16, 16), np.float32), window=Window(0, 0, 16, 16))
            _ = 1 / 0
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []

    # A failed rewrite keeps the previous complete file untouched.
    _write(path, np.zeros((3, 3), np.float32))
    before = path.read_bytes()
    with pytest.raises(KeyboardInterrupt), create_raster(path, _small_profile()) as dst:
        dst.write(np.ones((2, 48, 64), np.float32))
        raise KeyboardInterrupt
    assert path.read_bytes() == before and _leftovers(tmp_path) == []

    with pytest.raises(ValueError, match=r"band_names"):
        with create_raster(tmp_path / "other.tif", _small_profile(), band_names=["one"]):
            pass
    assert not (tmp_path / "other.tif").exists() and _leftovers(tmp_path) == []

    with pytest.raises(InputError, match=r"does not exist: create it"):
        with create_raster(tmp_path / "no" / "such" / "dir.tif", _small_profile()):
            pass


@needs_data
def test_same_grid() -> None:
    dem = open_raster(DEM)
    assert same_grid(dem, open_raster(JIUZHAI / "DEM_030_SLOPE.tif"))
    assert not same_grid(dem, open_raster(JIUZHAI / "SNOW_CLOUD_MASK_010.tif"))
    assert not same_grid(dem, open_raster(TA))


# -- memory bound -----------------------------------------------------------------

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from affine import Affine
    from rasterio.crs import CRS
    from slidewise.engine.geo.raster import create_raster, iter_windows, output_profile

    def rss_mb(key):
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024

    side, block, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    grid = {"width": side, "height": side, "crs": CRS.from_epsg(32648),
            "transform": Affine(30, 0, 0, 0, -30, 0)}
    profile = output_profile(grid, count=1)
    base = rss_mb("VmRSS")
    with create_raster(out, profile, band_names=["value"]) as dst:
        for i, (_, write, _) in enumerate(iter_windows(side, side, block=block)):
            data = np.full((1, write.height, write.width), i, np.float32)
            data[0, ::7, ::5] = 0.5  # some texture for the compressor
            dst.write(data, window=write)
    print(f"{rss_mb('VmHWM') - base:.1f}")
    """
)


def _rss_growth_mb(tmp_path: Path, side: int, block: int) -> float:
    out = tmp_path / "big.tif"
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(side), str(block), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with rasterio.open(out) as src:
        assert (src.width, src.height) == (side, side)
    out.unlink()
    return float(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_writing_a_huge_raster_block_by_block_keeps_memory_bounded(tmp_path: Path) -> None:
    # 20000 x 20000 float32 = 1.6 GB of pixels, written in 1024-px windows
    # (a multiple of the 256-px tiles: whole tiles go straight to the file).
    growth = _rss_growth_mb(tmp_path, side=20000, block=1024)
    assert growth < 200, f"peak RSS grew by {growth:.0f} MB"


def test_unaligned_write_windows_keep_memory_bounded(tmp_path: Path) -> None:
    growth = _rss_growth_mb(tmp_path, side=9000, block=1000)  # 324 MB of pixels
    assert growth < 200, f"peak RSS grew by {growth:.0f} MB"
