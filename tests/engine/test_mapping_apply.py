"""The maplandslides job: outputs, polygons across strips, bands, AOI, bad inputs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from engine_helpers import SHARED, job_context, write_geotiff
from scipy import ndimage

from slidewise.engine.core.errors import InputError, ModelFileError
from slidewise.engine.core.job import JobContext
from slidewise.engine.geo.polygons import StripLabeller, pixel_areas, polygonise_mask
from slidewise.engine.geo.raster import open_raster
from slidewise.engine.imagery.bands import match_bands
from slidewise.engine.mapping.apply import rechunk, run_map

CHATTOGRAM = SHARED / "mapping" / "chattogram_s2"
BANDS = ["red", "green", "blue", "nir"]
CRS = "EPSG:32646"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ctx() -> tuple[JobContext, io.StringIO]:
    return job_context("maplandslides")


def _messages(stream: io.StringIO, level: str = "warning") -> list[str]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [m["message"] for m in lines if m.get("type") == "log" and m.get("level") == level]


def _write_raster(
    path: Path,
    image: np.ndarray,
    names: list[str] | None = None,
    nodata: float | None = None,
    crs: str = CRS,
) -> str:
    return write_geotiff(path, image, crs, 10.0, (400000, 2500000), nodata, names)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> str:
    """A small randomly initialised LinkNet (mechanics only), saved as a mapping model."""
    import torch

    from slidewise.engine.imagery.segmodels import SegModelConfig, build_model, save_mapping_model

    torch.manual_seed(0)
    config = SegModelConfig(architecture="linknet", encoder="mobilenet_v2", in_channels=4)
    model = build_model(config).eval()
    path = tmp_path_factory.mktemp("model") / "unet.safetensors"
    norm = {"kind": "fit", "mean": [0.1, 0.1, 0.1, 0.2], "std": [0.05, 0.05, 0.05, 0.1]}
    save_mapping_model(path, model, config, BANDS, norm, tile_size=128)
    return str(path)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> str:
    """A Chattogram Sentinel-2 tile (4 bands) with band names, on a projected grid."""
    src = CHATTOGRAM / "images" / "000000000003.tif"
    if not src.exists():
        pytest.skip(f"real data not found: {src}")
    with rasterio.open(src) as ds:
        image = ds.read().astype(np.float32)
    return _write_raster(tmp_path_factory.mktemp("img") / "s2.tif", image, BANDS)


def _read(path: str) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as ds:
        return ds.read(1), ds.profile


def test_outputs_are_consistent(model_file, image_file, tmp_path) -> None:
    ctx, _ = _ctx()
    prob_path = str(tmp_path / "prob.tif")
    run_map({"INPUT": image_file, "MODEL": model_file, "OUTPUT_PROBABILITY": prob_path}, ctx)
    prob, profile = _read(prob_path)
    assert profile["dtype"] == "float32" and prob.shape == (256, 256)
    assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1
    threshold = float(np.quantile(prob, 0.8))  # a random model: take its top fifth

    mask_path, poly_path = str(tmp_path / "mask.tif"), str(tmp_path / "slides.gpkg")
    result = run_map(
        {
            "INPUT": image_file,
            "MODEL": model_file,
            "OUTPUT_MASK": mask_path,
            "OUTPUT_POLYGONS": poly_path,
            "THRESHOLD": threshold,
            # Pixel outlines of every component (no post-processing), to compare with the mask.
            "MIN_AREA": 0,
            "MAX_HOLE_AREA": 0,
            "OPENING_RADIUS": 0,
            "CLOSING_RADIUS": 0,
            "SIMPLIFY_TOLERANCE": 0,
        },
        _ctx()[0],
    )
    mask, mprofile = _read(mask_path)
    assert mprofile["dtype"] == "uint8" and mprofile["nodata"] == 255
    np.testing.assert_array_equal(mask, (prob >= threshold).astype(np.uint8))
    info = pyogrio.read_info(poly_path)
    _, n_components = ndimage.label(mask == 1)
    assert info["features"] == n_components == result.figures["polygons"]
    assert {"area_m2", "mean_probability", "max_probability"} <= set(info["fields"])
    _, _, geometry, fields = pyogrio.raw.read(poly_path)
    names = list(info["fields"])
    area = fields[names.index("area_m2")]
    assert area.sum() == pytest.approx(mask.sum() * 100.0)  # 10 m pixels
    np.testing.assert_allclose(shapely.area(shapely.from_wkb(geometry)), area)
    mean_p = fields[names.index("mean_probability")]
    max_p = fields[names.index("max_probability")]
    assert np.all(mean_p >= threshold - 1e-6) and np.all(max_p >= mean_p - 1e-9)
    assert result.figures["landslide_pixels"] == int(mask.sum())


def test_nodata_and_polygons_across_strip_borders(model_file, tmp_path) -> None:
    """THRESHOLD 0 makes one object of the raster: it must come out as one polygon.

    The raster is 600 rows high, so the object crosses the 256-row strips the job
    writes; the nodata hole becomes a hole of the polygon and nodata in the rasters.
    """
    rng = np.random.default_rng(0)
    image = rng.uniform(0.05, 0.3, size=(4, 600, 90)).astype(np.float32)
    image[:, 300:320, 40:50] = -1.0
    path = _write_raster(tmp_path / "tall.tif", image, BANDS, nodata=-1.0)
    out = {
        k: str(tmp_path / n)
        for k, n in (
            ("OUTPUT_PROBABILITY", "p.tif"),
            ("OUTPUT_MASK", "m.tif"),
            ("OUTPUT_POLYGONS", "s.gpkg"),
        )
    }
    result = run_map({"INPUT": path, "MODEL": model_file, "THRESHOLD": 0, **out}, _ctx()[0])
    prob, _ = _read(out["OUTPUT_PROBABILITY"])
    mask, _ = _read(out["OUTPUT_MASK"])
    hole = np.zeros((600, 90), bool)
    hole[300:320, 40:50] = True
    np.testing.assert_array_equal(np.isnan(prob), hole)
    np.testing.assert_array_equal(mask == 255, hole)
    assert np.all(mask[~hole] == 1)
    _, _, geometry, _ = pyogrio.raw.read(out["OUTPUT_POLYGONS"])
    geoms = shapely.from_wkb(geometry)
    assert len(geoms) == 1 == result.figures["polygons"]
    assert geoms[0].geom_type == "Polygon" and len(geoms[0].interiors) == 1
    assert geoms[0].area == pytest.approx((600 * 90 - 200) * 100.0)


def test_polygons_dissolve_across_strips_and_min_area() -> None:
    mask = np.zeros((40, 30), bool)
    mask[2:38, 5:8] = True  # a long object crossing every strip border
    mask[35:38, 5:25] = True  # ... with a foot: one U-shaped object
    mask[2:20, 22:25] = True
    mask[20:35, 22:25] = True  # joins the foot through the strips
    mask[10:12, 12:14] = True  # a small object of 4 pixels
    prob = np.linspace(0, 1, mask.size).reshape(mask.shape)
    transform = Affine(10, 0, 1000, 0, -10, 5000)
    for strip in (1, 3, 7, 40):
        geoms, fields = polygonise_mask(mask, prob, transform, CRS, strip_rows=strip)
        assert len(geoms) == 2, strip
        big = int(np.argmax(fields["pixels"]))
        assert geoms[big].geom_type == "Polygon"
        assert fields["pixels"][big] == mask.sum() - 4
        assert geoms[big].area == pytest.approx(fields["area_m2"][big])
    geoms, fields = polygonise_mask(mask, prob, transform, CRS, min_area=500.0, strip_rows=7)
    assert len(geoms) == 1 and fields["pixels"][0] == mask.sum() - 4
    small = mask.copy()
    small[:, :] = False
    small[10:12, 12:14] = True
    lab, _ = ndimage.label(mask)
    sel = lab == lab[10, 12]
    geoms, fields = polygonise_mask(small, prob, transform, CRS)
    assert fields["mean_probability"][0] == pytest.approx(prob[sel].mean())
    assert fields["max_probability"][0] == pytest.approx(prob[sel].max())


def test_labeller_joins_objects_that_meet_below() -> None:
    """Two branches that only meet in a later strip end as one component."""
    mask = np.zeros((9, 7), bool)
    mask[0:8, 1] = True
    mask[0:8, 5] = True
    mask[8, 1:6] = True
    labeller = StripLabeller(7, sums=("v",))
    comps = [
        labeller.add(r, mask[r : r + 2], {"v": np.ones((len(mask[r : r + 2]), 7))})
        for r in range(0, 9, 2)
    ]
    comps.append(labeller.finish())
    pixels = np.concatenate([c.pixels for c in comps])
    assert pixels.tolist() == [int(mask.sum())]


def test_pixel_areas_geographic_rows() -> None:
    from rasterio.crs import CRS as RCRS

    t = Affine(0.001, 0, 91.0, 0, -0.001, 22.5)
    areas = pixel_areas(t, RCRS.from_epsg(4326), 0, 3)
    # ~111.2 m x ~102.8 m at 22.5 N
    assert areas[0] == pytest.approx(
        111195 * 0.001 * 111195 * 0.001 * np.cos(np.radians(22.4995)), rel=1e-3
    )


def test_rechunk_regroups_rows() -> None:
    from rasterio.windows import Window

    strips = [
        (Window(0, r, 5, h), np.full((h, 5), r, float))
        for r, h in ((0, 100), (100, 300), (400, 37))
    ]
    out = list(rechunk(iter(strips), rows=256))
    assert [(int(w.row_off), int(w.height)) for w, _ in out] == [(0, 256), (256, 181)]
    np.testing.assert_array_equal(
        np.concatenate([d for _, d in out])[:, 0], np.concatenate([d for _, d in strips])[:, 0]
    )


def test_band_checks(tmp_path) -> None:
    image = np.zeros((3, 8, 8), np.float32)
    three = open_raster(_write_raster(tmp_path / "three.tif", image, ["red", "green", "blue"]))
    with pytest.raises(InputError, match="red, green, blue, nir"):
        match_bands(three, BANDS)
    four = np.zeros((4, 8, 8), np.float32)
    swapped = open_raster(
        _write_raster(tmp_path / "bgrn.tif", four, ["blue", "green", "red", "nir"])
    )
    with pytest.raises(InputError, match=r"BANDS=3,2,1,4"):
        match_bands(swapped, BANDS)
    assert match_bands(swapped, BANDS, "3,2,1,4").indexes == [3, 2, 1, 4]
    assert match_bands(swapped, BANDS, "red,green,blue,nir").indexes == [3, 2, 1, 4]
    with pytest.raises(InputError, match="needs 4"):
        match_bands(swapped, BANDS, "1,2")
    unnamed = open_raster(_write_raster(tmp_path / "unnamed.tif", four))
    choice = match_bands(unnamed, BANDS)
    assert choice.indexes == [1, 2, 3, 4] and "only the band count" in choice.warning
    five = open_raster(_write_raster(tmp_path / "five.tif", np.zeros((5, 8, 8), np.float32)))
    with pytest.raises(InputError, match="has 5 band"):
        match_bands(five, BANDS)


def test_band_mismatch_refused_by_the_job(model_file, tmp_path) -> None:
    path = _write_raster(
        tmp_path / "rgb.tif", np.ones((3, 64, 64), np.float32), ["red", "green", "blue"]
    )
    out = tmp_path / "p.tif"
    with pytest.raises(InputError, match=r"expects 4 band.*red, green, blue, nir"):
        run_map({"INPUT": path, "MODEL": model_file, "OUTPUT_PROBABILITY": str(out)}, _ctx()[0])
    assert not out.exists() and not list(tmp_path.glob(".p.partial-*"))


def test_unnamed_bands_warn_and_stored_threshold(model_file, tmp_path) -> None:
    from slidewise.engine.imagery.segmodels import (
        SegModelConfig,
        load_mapping_model,
        save_mapping_model,
    )

    model, meta = load_mapping_model(model_file)
    tuned = tmp_path / "tuned.safetensors"
    save_mapping_model(
        tuned,
        model,
        SegModelConfig(**meta.config),
        meta.bands,
        meta.normalisation,
        tile_size=128,
        extra={"threshold": 0.3},
    )
    path = _write_raster(tmp_path / "u.tif", np.full((4, 40, 50), 0.1, np.float32))
    ctx, stream = _ctx()
    result = run_map(
        {"INPUT": path, "MODEL": str(tuned), "OUTPUT_MASK": str(tmp_path / "m.tif")}, ctx
    )
    assert any("only the band count" in m for m in _messages(stream))
    assert result.figures["threshold"] == 0.3
    result = run_map(
        {
            "INPUT": path,
            "MODEL": str(tuned),
            "OUTPUT_MASK": str(tmp_path / "m2.tif"),
            "THRESHOLD": 0.5,
        },
        _ctx()[0],
    )
    assert result.figures["threshold"] == 0.5


def test_aoi_vector_and_raster(model_file, tmp_path) -> None:
    image = np.full((4, 64, 80), 0.1, np.float32)
    path = _write_raster(tmp_path / "img.tif", image, BANDS)
    # Vector AOI: the left half (x < 400400), written in another CRS (WGS 84).
    from rasterio.warp import transform_geom

    box = shapely.box(400000, 2500000 - 640, 400400, 2500000)
    wgs = shapely.geometry.shape(transform_geom(CRS, "EPSG:4326", shapely.geometry.mapping(box)))
    from slidewise.engine.geo.vectors import write_vector

    aoi = write_vector(tmp_path / "aoi.gpkg", [wgs], {"name": np.array(["a"])}, "EPSG:4326")
    out = str(tmp_path / "m.tif")
    run_map({"INPUT": path, "MODEL": model_file, "OUTPUT_MASK": out, "AOI": str(aoi)}, _ctx()[0])
    mask, _ = _read(out)
    assert np.all(mask[:, :38] != 255) and np.all(mask[:, 42:] == 255)
    # Raster AOI: non-zero = inside.
    aoi_raster = np.zeros((1, 64, 80), np.uint8)
    aoi_raster[0, 10:30, 20:60] = 1
    aoi_path = _write_raster(tmp_path / "aoi.tif", aoi_raster)
    out2 = str(tmp_path / "p.tif")
    run_map(
        {"INPUT": path, "MODEL": model_file, "OUTPUT_PROBABILITY": out2, "AOI": aoi_path}, _ctx()[0]
    )
    prob, _ = _read(out2)
    np.testing.assert_array_equal(np.isfinite(prob), aoi_raster[0] == 1)
    # A point layer is no AOI: refused with the fix, before any output is written.
    points = write_vector(
        tmp_path / "points.gpkg", [shapely.Point(400100, 2499900)], {"n": np.array([1])}, CRS
    )
    out3 = tmp_path / "refused.tif"
    with pytest.raises(
        InputError, match=r"AOI layer 'points.gpkg' must hold polygons.*mask raster"
    ):
        run_map(
            {"INPUT": path, "MODEL": model_file, "OUTPUT_MASK": str(out3), "AOI": str(points)},
            _ctx()[0],
        )
    assert not out3.exists()


def test_bad_inputs(model_file, tmp_path) -> None:
    path = _write_raster(tmp_path / "img.tif", np.full((4, 32, 32), 0.1, np.float32), BANDS)
    out = str(tmp_path / "p.tif")
    with pytest.raises(InputError, match="does not exist"):
        run_map(
            {"INPUT": str(tmp_path / "missing.tif"), "MODEL": model_file, "OUTPUT_MASK": out},
            _ctx()[0],
        )
    with pytest.raises(InputError, match="No output"):
        run_map({"INPUT": path, "MODEL": model_file}, _ctx()[0])
    with pytest.raises(InputError, match="THRESHOLD"):
        run_map({"INPUT": path, "MODEL": model_file, "OUTPUT_MASK": out, "THRESHOLD": 2}, _ctx()[0])
    with pytest.raises(InputError, match="same path"):
        run_map(
            {"INPUT": path, "MODEL": model_file, "OUTPUT_MASK": out, "OUTPUT_PROBABILITY": out},
            _ctx()[0],
        )
    with pytest.raises(InputError, match="Unknown parameter"):
        run_map({"INPUT": path, "MODEL": model_file, "OUTPUT_MASK": out, "TILES": 3}, _ctx()[0])
    with pytest.raises(InputError, match="OVERLAP"):
        run_map(
            {
                "INPUT": path,
                "MODEL": model_file,
                "OUTPUT_MASK": out,
                "TILE_SIZE": 64,
                "OVERLAP": 40,
            },
            _ctx()[0],
        )
    with pytest.raises(InputError, match="TTA"):
        run_map({"INPUT": path, "MODEL": model_file, "OUTPUT_MASK": out, "TTA": "maybe"}, _ctx()[0])
    for name, value, message in (
        ("TILE_SIZE", 9000, "TILE_SIZE must be between 32 and 8192"),
        ("BATCH_SIZE", 2.5, "BATCH_SIZE must be a whole number"),
        ("MIN_AREA", -1, "MIN_AREA must be at least 0, got -1"),
    ):
        with pytest.raises(InputError, match=message):
            run_map(
                {"INPUT": path, "MODEL": model_file, "OUTPUT_MASK": out, name: value}, _ctx()[0]
            )
    # A model file for another task.
    import torch

    from slidewise.engine.core.modelfile import ModelMetadata, save_model

    other = tmp_path / "susc.safetensors"
    save_model(
        other, {"w": torch.zeros(2)}, ModelMetadata(task="susceptibility", architecture="mlp")
    )
    with pytest.raises(ModelFileError, match="susceptibility"):
        run_map({"INPUT": path, "MODEL": str(other), "OUTPUT_MASK": out}, _ctx()[0])
    assert not Path(out).exists()


def test_parameters_come_from_the_contract() -> None:
    """Defaults are the engine's; the tile's help names the default tile; numbers are checked."""
    from slidewise.contract.specs.maplandslides import SPEC
    from slidewise.engine.imagery.tiling import DEFAULT_OVERLAP, DEFAULT_TILE
    from slidewise.engine.mapping.apply import MapParams

    assert SPEC["OVERLAP"].default == DEFAULT_OVERLAP == MapParams.overlap
    assert str(DEFAULT_TILE) in SPEC["TILE_SIZE"].full_help()
    options = MapParams.from_params({"INPUT": "a.tif", "MODEL": "m", "OUTPUT_MASK": "o.tif"})
    assert options == MapParams(input="a.tif", model="m", output_mask="o.tif")
    assert options.outputs() == {
        "OUTPUT_PROBABILITY": "",
        "OUTPUT_MASK": "o.tif",
        "OUTPUT_POLYGONS": "",
        "OUTPUT_UNCERTAINTY": "",
    }
    given = {"INPUT": "a.tif", "MODEL": "m", "TTA": "yes", "BATCH_SIZE": "4"}
    assert MapParams.from_params(given).batch_size == 4
    with pytest.raises(InputError, match="OVERLAP must be between 0 and 4096, got 5000"):
        MapParams.from_params({"INPUT": "a.tif", "MODEL": "m", "OVERLAP": 5000})
