"""What a stopped run keeps (a scene inventory, a training checkpoint) and says.

(The qgis_process run of mapscenes is tests/plugin/test_postgis_inventory.py's round trip.)
"""

from __future__ import annotations

from pathlib import Path

import pytest


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
    assert sorted(outputs) == sorted([str(folder), str(inventory)])  # their partials go
    assert alg.kept_outputs(params) == [str(inventory)]


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


def test_a_stopped_training_keeps_its_checkpoint(qgis_app) -> None:
    """The checkpoint is written whole every epoch: a cancel keeps it, to resume from."""
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().createAlgorithmById("slidewise:trainmapping")
    params = {"OUTPUT": "/tmp/model.safetensors", "CHECKPOINT": "/tmp/epochs.safetensors"}
    assert alg.kept_outputs(params) == ["/tmp/epochs.safetensors"]
