"""qgis_process maps landslides on a local Dask cluster (WORKERS=2), as one process would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from plugin_helpers import BIJIE, run_qgis_process

TEST_IMAGE = BIJIE / "test" / "images" / "10105.png"


def _read(path: str) -> np.ndarray:
    from osgeo import gdal

    dataset = gdal.Open(path)  # kept alive while its band is read
    return dataset.GetRasterBand(1).ReadAsArray()


@pytest.mark.slow
def test_qgis_process_maps_with_two_workers(trained, qgis_process_env, tmp_path: Path) -> None:
    common = {"INPUT": str(TEST_IMAGE), "MODEL": trained["result"]["OUTPUT"], "TILE_SIZE": 128}
    proc = run_qgis_process(
        qgis_process_env,
        "--json",
        "run",
        "slidewise:maplandslides",
        "--",
        *(f"{k}={v}" for k, v in common.items()),
        "WORKERS=2",
        f"OUTPUT_PROBABILITY={tmp_path / 'two.tif'}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "local Dask cluster of 2 worker" in proc.stdout + proc.stderr
    results = json.loads(proc.stdout[proc.stdout.index("{") :])["results"]
    probability = _read(results["OUTPUT_PROBABILITY"])
    assert probability.shape == (720, 512)  # the whole image, written by the job's process
    assert np.isfinite(probability).all()
    assert 0.0 <= probability.min() < probability.max() <= 1.0
    # Equality with the one-process path: tests/engine/test_mapping_cluster.py.
