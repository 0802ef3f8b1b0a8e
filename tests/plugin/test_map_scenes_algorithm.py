"""qgis_process runs slidewise:mapscenes on a footprint layer of two real Bijie crops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugin_helpers import run_qgis_process, two_scene_footprints


@pytest.mark.slow
def test_qgis_process_maps_footprints_into_one_inventory(qgis_process_env, tmp_path: Path) -> None:
    from osgeo import ogr

    footprints = two_scene_footprints(tmp_path)
    inventory = tmp_path / "inventory.gpkg"
    proc = run_qgis_process(
        qgis_process_env,
        "--json",
        "run",
        "slidewise:mapscenes",
        "--",
        f"FOOTPRINTS={footprints}",
        "TILE_SIZE=256",
        f"OUTPUT_FOLDER={tmp_path / 'scenes'}",
        f"INVENTORY={inventory}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout[proc.stdout.index("{") :])["results"]
    assert (results["SCENES_MAPPED"], results["INVENTORY_SCENES"]) == (2, 2)
    assert (tmp_path / "scenes" / "west_probability.tif").is_file()
    dataset = ogr.Open(results["INVENTORY"])
    layer = dataset.GetLayerByName("landslide_inventory")
    rows = [(f["scene"], f["date_first"], f["date_last"], f["region"]) for f in layer]
    assert len(rows) == results["INVENTORY_POLYGONS"] > 0
    assert ("west;middle", "2020-08-01", "2021-07-15", "bijie") in rows  # merged, not twice
    scenes = [f["scene"] for f in dataset.GetLayerByName("mapped_scenes")]
    assert scenes == ["west", "middle"]


def test_a_cancel_or_crash_keeps_the_inventory(qgis_app, tmp_path: Path) -> None:
    """The inventory is whole after every scene: it is no unfinished output to remove.

    The engine client removes the outputs a stopped run created or replaced; the
    inventory, rewritten in one rename after each scene, would go with the scenes
    finished before (and those of earlier runs) if it were among them.
    """
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingFeedback

    alg = QgsApplication.processingRegistry().createAlgorithmById("slidewise:mapscenes")
    inventory, folder = tmp_path / "inventory.gpkg", tmp_path / "scenes"
    parameters = {"SCENE_FOLDER": str(tmp_path), "OUTPUT_FOLDER": str(folder)}
    parameters["INVENTORY"] = str(inventory)
    params, outputs = alg.job_parameters(
        parameters, QgsProcessingContext(), QgsProcessingFeedback()
    )
    assert params["INVENTORY"] == str(inventory)
    assert outputs == [str(folder)]


def test_a_cancel_says_what_the_inventory_kept(
    qgis_app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback

    from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm

    def cancelled(*args: object) -> None:
        raise QgsProcessingException("Cancelled: no output was written.")

    monkeypatch.setattr(SlidewiseAlgorithm, "run_engine", cancelled)
    alg = QgsApplication.processingRegistry().createAlgorithmById("slidewise:mapscenes")
    feedback = QgsProcessingFeedback()
    feedback.cancel()
    inventory = tmp_path / "inventory.gpkg"
    params = {"INVENTORY": str(inventory)}
    with pytest.raises(QgsProcessingException, match="no output was written"):
        alg.run_engine(params, {}, [], feedback)  # no inventory yet: nothing was kept
    inventory.write_bytes(b"GPKG")
    with pytest.raises(QgsProcessingException, match="keeps the scenes finished before"):
        alg.run_engine(params, {}, [], feedback)
