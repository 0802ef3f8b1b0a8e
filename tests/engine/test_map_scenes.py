"""mapscenes: three scenes of a real Bijie image into one merged inventory; skips; resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from engine_helpers import REPO, job_context, log_messages, progress_values

# One thread, as in the killed child process: the same probabilities bit for bit.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

BIJIE = REPO / "tests" / "data" / "bijie" / "test" / "images" / "10105.png"
#: Scene name -> (first column of the crop, CRS written, date, region).
SCENES = {
    "a_west": (0, "EPSG:32648", "2020-08-01", "bijie"),
    "b_middle": (128, "EPSG:32648", "2021-07-15", "bijie"),
    "c_east": (256, "EPSG:3857", "2019-06-30", "guizhou"),
}


def write_scenes(folder: Path) -> dict[str, str]:
    """Three 256 x 256 georeferenced crops of one Bijie image (1 m pixels, UTM 48N).

    a_west and b_middle overlap by half; c_east overlaps b_middle by half and is
    warped to Web Mercator (another CRS).
    """
    from rasterio.transform import array_bounds, from_origin
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(BIJIE) as src:
        image = src.read()[:, 200:456]
    paths = {}
    for name, (col, crs, _, _) in SCENES.items():
        data = image[:, :, col : col + 256]
        transform = from_origin(430000.0 + col, 3019800.0, 1.0, 1.0)
        profile = {"driver": "GTiff", "count": 3, "dtype": "uint8", "crs": "EPSG:32648"}
        if crs != "EPSG:32648":
            bounds = array_bounds(256, 256, transform)
            to, w, h = calculate_default_transform("EPSG:32648", crs, 256, 256, *bounds)
            warped = np.zeros((3, h, w), np.uint8)
            reproject(data, warped, src_transform=transform, src_crs="EPSG:32648",
                      dst_transform=to, dst_crs=crs, resampling=Resampling.nearest)  # fmt: skip
            data, transform, profile = warped, to, {**profile, "crs": crs, "nodata": 0}
        paths[name] = str(folder / f"{name}.tif")
        with rasterio.open(paths[name], "w", width=data.shape[2], height=data.shape[1],
                           transform=transform, **profile) as dst:  # fmt: skip
            dst.write(data)
    return paths


def _params(out: Path, **source: str) -> dict[str, Any]:
    return {
        **source,
        "TILE_SIZE": 256,
        "OVERLAP": 32,
        "OUTPUT_FOLDER": str(out / "scenes"),
        "INVENTORY": str(out / "inventory.gpkg"),
    }


def _run(params: dict[str, Any], progress: list[float] | None = None) -> tuple[dict, list[str]]:
    from slidewise.engine.mapping.scenes_batch import run_map_scenes

    ctx, stream = job_context("mapscenes")
    figures = run_map_scenes(params, ctx).figures
    if progress is not None:
        progress.extend(progress_values(stream))
    return figures, log_messages(stream)


def _read(path: Path, layer: str | None = None) -> tuple[np.ndarray, dict[str, np.ndarray], Any]:
    import pyogrio
    import shapely

    meta, _, wkb, values = pyogrio.raw.read(str(path), layer=layer)
    fields = dict(zip(meta["fields"], values, strict=True))
    geoms = shapely.from_wkb(wkb) if wkb is not None else np.empty(0, dtype=object)
    return geoms, fields, meta["crs"]


@pytest.fixture(scope="module")
def mapped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The three scenes and an unreadable one, listed in a CSV with regions and dates."""
    root = tmp_path_factory.mktemp("scenes")
    paths = write_scenes(root / "rasters")
    (root / "rasters" / "broken.tif").write_bytes(b"not a raster")
    lines = ["path,region,date"]
    lines += [f"rasters/{n}.tif,{region},{date}" for n, (_, _, date, region) in SCENES.items()]
    lines.insert(2, "rasters/broken.tif,bijie,2021-01-01")
    (root / "scenes.csv").write_text("\n".join(lines) + "\n")
    params = _params(root / "out", SCENE_LIST=str(root / "scenes.csv"))
    progress: list[float] = []
    figures, logs = _run(params, progress)
    return {
        "root": root,
        "paths": paths,
        "params": params,
        "figures": figures,
        "logs": logs,
        "progress": progress,
    }


def test_overlapping_scenes_make_one_merged_inventory(mapped: dict[str, Any]) -> None:
    import shapely

    from slidewise.engine.core.manifest import file_sha256
    from slidewise.engine.core.modelfile import read_metadata
    from slidewise.engine.geo.vectors import reproject_geometries
    from slidewise.engine.mapping.shipped import shipped_model_path

    out = Path(mapped["params"]["OUTPUT_FOLDER"])
    figures = mapped["figures"]
    assert figures["scenes_mapped"] == 3
    assert list(figures["scenes_failed"]) == ["broken"]  # named; the others went on
    progress = mapped["progress"]  # 4 scenes: each maps into its quarter, in order
    assert progress == sorted(progress)
    for quarter in (0, 2, 3):  # the broken scene (2nd) fails at once
        assert len([v for v in progress if 25 * quarter < v < 25 * (quarter + 1)]) >= 3
    geoms, fields, crs = _read(Path(mapped["params"]["INVENTORY"]))
    assert "32648" in crs  # the first scene's CRS
    # Every scene's own outputs, then the same polygons merged where they overlap.
    parts = []
    for name in SCENES:
        assert (out / f"{name}_probability.tif").is_file()
        scene_geoms, _, scene_crs = _read(out / f"{name}_polygons.gpkg")
        assert len(scene_geoms) > 3
        parts += list(reproject_geometries(scene_geoms, scene_crs, crs))
    union = shapely.get_parts(shapely.union_all(shapely.make_valid(np.asarray(parts))))
    assert len(geoms) == len(union) < len(parts)
    assert shapely.area(geoms).sum() == pytest.approx(shapely.area(union).sum(), rel=1e-6)
    tree = shapely.STRtree(geoms)  # no two inventory polygons overlap
    pairs = tree.query(geoms, predicate="intersects")
    pairs = pairs[:, pairs[0] < pairs[1]]
    assert not np.any(shapely.area(shapely.intersection(geoms[pairs[0]], geoms[pairs[1]])) > 1e-6)
    # Attributes: scenes, dates, regions, model; merged polygons list their scenes.
    sha = file_sha256(shipped_model_path())[:12]
    assert set(fields["model_sha256"]) == {sha}
    assert set(fields["model"]) == {"landslide_rgb.safetensors"}
    assert set(fields["decoder"]) == {"resunet"}
    merged = fields["scene_count"] > 1
    assert merged.any() and (~merged).any()
    for scenes, first, last, count in zip(
        fields["scene"],
        fields["date_first"],
        fields["date_last"],
        fields["scene_count"],
        strict=True,
    ):
        dates = sorted(SCENES[s][2] for s in scenes.split(";"))
        assert (first, last, count) == (dates[0], dates[-1], len(dates))
    assert np.all(fields["max_probability"] >= fields["mean_probability"])
    threshold = read_metadata(shipped_model_path()).extra["threshold"]
    assert np.all(fields["max_probability"] >= threshold)  # every polygon holds a mapped pixel
    assert np.allclose(fields["area_m2"], shapely.area(geoms), rtol=1e-6)  # UTM: m²


def test_a_second_run_skips_every_scene(mapped: dict[str, Any]) -> None:
    inventory = Path(mapped["params"]["INVENTORY"])
    before = inventory.read_bytes()
    figures, logs = _run(mapped["params"])
    assert (figures["scenes_mapped"], figures["scenes_skipped"]) == (0, 3)
    assert sum("already in the inventory with these parameters, skipped" in m for m in logs) == 3
    assert inventory.read_bytes() == before  # not even rewritten
    _, table, _ = _read(inventory, layer="mapped_scenes")
    assert list(table["scene"]) == list(SCENES)
    assert list(table["date"]) == [d for _, _, d, _ in SCENES.values()]


def _killed_run(params: dict[str, Any], after: int) -> None:
    """Run the job in a child process that SIGKILLs itself after ``after`` scenes."""
    from slidewise.engine.mapping.scenes_batch import KILL_AFTER_SCENES_ENV

    code = (
        "import json, sys; sys.path.insert(0, sys.argv[2])\n"
        "from engine_helpers import job_context\n"
        "from slidewise.engine.mapping.scenes_batch import run_map_scenes\n"
        "run_map_scenes(json.loads(sys.argv[1]), job_context('mapscenes')[0])\n"
    )
    env = {**os.environ, KILL_AFTER_SCENES_ENV: str(after), "OMP_NUM_THREADS": "1"}
    here = str(Path(__file__).parent)
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(params), here], env=env, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


@pytest.mark.slow
def test_a_run_killed_between_scenes_resumes(mapped: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    import shapely

    folder = tmp_path / "rasters"
    folder.mkdir()
    for path in mapped["paths"].values():
        shutil.copy(path, folder)
    params = _params(tmp_path, SCENE_FOLDER=str(folder))
    _killed_run(params, after=1)
    geoms, _, _ = _read(Path(params["INVENTORY"]))
    _, table, _ = _read(Path(params["INVENTORY"]), layer="mapped_scenes")
    assert list(table["scene"]) == ["a_west"]  # the first scene, committed whole

    figures, _ = _run(params)
    assert (figures["scenes_skipped"], figures["scenes_mapped"]) == (1, 2)
    resumed, _, _ = _read(Path(params["INVENTORY"]))
    whole, _, _ = _read(Path(mapped["params"]["INVENTORY"]))
    assert len(resumed) == len(whole) > len(geoms)
    assert sorted(shapely.area(resumed)) == pytest.approx(sorted(shapely.area(whole)), rel=1e-9)
    assert not list(tmp_path.glob(".*partial*"))  # no partial inventory left
    assert len(list((tmp_path / "scenes").glob("*"))) == 6  # 3 probabilities, 3 polygon sets


class _Cancelled(BaseException):
    """What the worker raises on Cancel (SIGTERM), raised here from the progress callback."""


def test_a_cancel_inside_a_scene_keeps_the_scenes_before(
    mapped: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slidewise.engine.core.protocol import Reporter
    from slidewise.engine.mapping.scenes_batch import run_map_scenes

    def cancel_in_second_scene(self: Reporter, value: float) -> None:
        if 40.0 < value < 66.0:  # scene 2 of 3 runs from 33 % to 67 %
            raise _Cancelled

    folder = tmp_path / "rasters"
    folder.mkdir()
    for name, path in mapped["paths"].items():
        (folder / f"{name}.tif").write_bytes(Path(path).read_bytes())
    params = _params(tmp_path, SCENE_FOLDER=str(folder))
    monkeypatch.setattr(Reporter, "progress", cancel_in_second_scene)
    with pytest.raises(_Cancelled):
        run_map_scenes(params, job_context("mapscenes")[0])
    _, table, _ = _read(Path(params["INVENTORY"]), layer="mapped_scenes")
    assert list(table["scene"]) == ["a_west"]
    left = sorted(p.name for p in (tmp_path / "scenes").iterdir())
    assert left == ["a_west_polygons.gpkg", "a_west_probability.tif"]  # nothing of b_middle
    assert not list(tmp_path.glob(".*partial*"))


def test_a_chain_of_overlaps_is_one_polygon_and_touching_is_not_overlapping(
    tmp_path: Path,
) -> None:
    import shapely

    from slidewise.engine.mapping.inventory import Inventory, SceneTags, open_inventory

    inventory = Inventory(tmp_path / "inventory.gpkg", "landslide_inventory")
    first = np.asarray([shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10)], dtype=object)
    values = {"mean_probability": np.array([0.6, 0.7]), "max_probability": np.array([0.8, 0.9])}
    tags = SceneTags("one", "2021-05-01", "r1", "unet", "m.safetensors", "abc")
    assert inventory.add_scene(first, values, "EPSG:32648", tags) == 0
    # A bridge over both old polygons, and a box that only touches the second one.
    second = np.asarray([shapely.box(5, 2, 25, 8), shapely.box(30, 0, 40, 10)], dtype=object)
    values = {"mean_probability": np.array([0.5, 0.55]), "max_probability": np.array([0.95, 0.6])}
    tags = SceneTags("two", "2020-01-01", "r2", "unet", "m.safetensors", "abc")
    assert inventory.add_scene(second, values, "EPSG:32648", tags) == 1
    inventory.commit()
    again = open_inventory(str(inventory.path), "landslide_inventory", None)
    assert len(again) == 2
    merged = int(np.flatnonzero(again.attributes["scene_count"] == 2)[0])
    assert again.geometries[merged].area == pytest.approx(100 + 100 + 20 * 6 - 2 * 5 * 6)
    row = {k: v[merged] for k, v in again.attributes.items()}
    assert (row["scene"], row["region"], row["date_first"], row["date_last"]) == (
        "one;two", "r1;r2", "2020-01-01", "2021-05-01",
    )  # fmt: skip
    assert (row["mean_probability"], row["max_probability"]) == (0.7, 0.95)  # the largest


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"SCENE_LIST": "__LIST__"}, "exactly one source of scenes"),
        ({"INVENTORY": "__ROOT__/inventory.shp"}, "must be a GeoPackage"),
        ({"SCENE_FOLDER": "__ROOT__/none"}, "does not exist"),
        ({"SCENE_FOLDER": None, "SCENE_LIST": "__BADDATE__"}, "not an ISO 8601 date"),
        ({"SCENE_FOLDER": None, "FOOTPRINTS": "__NOPATH__"}, "set PATH_FIELD"),
        ({"POSTGIS": "slides"}, "used by the Processing algorithm slidewise:mapscenes"),
        ({"OUTPUT_FOLDER": "__ROOT__"}, "OUTPUT_FOLDER is the SCENE_FOLDER"),
    ],
)
def test_bad_sources_are_refused_with_the_fix(
    tmp_path: Path, change: dict[str, Any], needle: str
) -> None:
    import shapely

    from slidewise.engine.core.errors import InputError
    from slidewise.engine.geo.vectors import write_vector

    (tmp_path / "list.txt").write_text("a.tif\n")
    (tmp_path / "a.tif").write_bytes(b"")  # a scene for SCENE_FOLDER
    (tmp_path / "dates.csv").write_text("path,date\na.tif,31/07/2024\n")
    write_vector(
        tmp_path / "fp.gpkg", [shapely.box(0, 0, 1, 1)], {"file": np.array(["a.tif"])}, "EPSG:4326"
    )
    names = {"__LIST__": "list.txt", "__BADDATE__": "dates.csv", "__NOPATH__": "fp.gpkg"}
    params = _params(tmp_path, SCENE_FOLDER=str(tmp_path))
    for key, value in change.items():
        if value is None:
            params.pop(key)
            continue
        value = str(tmp_path / names[value]) if value in names else value
        params[key] = value.replace("__ROOT__", str(tmp_path))
    with pytest.raises(InputError, match=needle):
        _run(params)
    assert not (tmp_path / "inventory.gpkg").exists()
    assert not (tmp_path / "scenes").exists()  # nothing written for a refused run
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.tif",
        "dates.csv",
        "fp.gpkg",
        "list.txt",
    ]


def test_a_multi_region_model_maps_each_scene_with_its_region_decoder(
    mapped: dict[str, Any], tmp_path: Path
) -> None:
    """Scenes of a model region use its decoder; a scene of another region needs REGION."""
    import torch

    from slidewise.engine.imagery.regions import MultiRegionModel, save_multiregion
    from slidewise.engine.imagery.segmodels import SegModelConfig

    torch.manual_seed(0)
    config = SegModelConfig("unet", "resnet18", 3, 3, extra={"decoder_channels": [16, 8, 8]})
    model = MultiRegionModel(config, ["bijie"])
    model.add_region("guizhou", init_from="bijie")
    norm = {"kind": "fit", "mean": [90.0] * 3, "std": [40.0] * 3}
    record = {"bands": ["red", "green", "blue"], "normalisation": norm, "tile_size": 256}
    model.records = {"bijie": {**record, "threshold": 0.5}, "guizhou": {**record, "threshold": 0.5}}
    path = save_multiregion(tmp_path / "regions.safetensors", model)
    lines = ["path,region", f"{mapped['paths']['a_west']},bijie"]
    lines += [f"{mapped['paths']['b_middle']},yunnan", f"{mapped['paths']['c_east']},guizhou"]
    (tmp_path / "scenes.csv").write_text("\n".join(lines) + "\n")
    params = {**_params(tmp_path, SCENE_LIST=str(tmp_path / "scenes.csv")), "MODEL": str(path)}
    figures, _ = _run({**params, "THRESHOLD": 0.0, "COG": True})  # one polygon per scene
    assert list(figures["scenes_failed"]) == ["b_middle"]
    assert "REGION" in figures["scenes_failed"]["b_middle"]  # the model's regions, the fix
    _, fields, _ = _read(Path(params["INVENTORY"]))
    assert sorted(";".join(fields["decoder"]).split(";")) == ["bijie", "guizhou"]
    assert sorted(";".join(fields["region"]).split(";")) == ["bijie", "guizhou"]
    from slidewise.engine.geo.cog import is_cog

    assert is_cog(tmp_path / "scenes" / "a_west_probability.tif")  # COG applies to each scene


def test_the_inventory_benchmark_runs_and_merges_half_the_scene(tmp_path: Path) -> None:
    """docs/benchmarks.md quotes ``python -m slidewise.bench.inventory``: its command line works."""
    from slidewise.bench.inventory import main

    main(["--sizes", "200", "--scene", "20", "--json", str(tmp_path / "out.json")])
    (run,) = json.loads((tmp_path / "out.json").read_text())["runs"]
    assert (run["inventory_polygons"], run["scene_polygons"], run["merged"]) == (200, 20, 10)
