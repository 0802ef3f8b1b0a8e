"""The landslide model shipped with Slidewise maps an image from qgis_process with no MODEL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from plugin_helpers import BIJIE, run_qgis_process

TEST_IMAGE = BIJIE / "test" / "images" / "10105.png"
TEST_MASK = BIJIE / "test" / "masks" / "10105.png"
SHIPPED = Path(__file__).resolve().parents[2] / "resources" / "models" / "landslide_rgb.safetensors"


@pytest.mark.slow
def test_qgis_process_maps_with_the_shipped_model(qgis_process_env, tmp_path: Path) -> None:
    assert SHIPPED.is_file(), f"the shipped model {SHIPPED} is missing"
    proc = run_qgis_process(
        qgis_process_env,
        "--json",
        "run",
        "slidewise:maplandslides",
        "--",
        f"INPUT={TEST_IMAGE}",
        f"OUTPUT_MASK={tmp_path / 'mask.tif'}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "shipped landslide model" in proc.stdout + proc.stderr
    results = json.loads(proc.stdout[proc.stdout.index("{") :])["results"]
    from osgeo import gdal
    from PIL import Image

    mask = gdal.Open(results["OUTPUT_MASK"]).ReadAsArray()
    truth = np.asarray(Image.open(TEST_MASK).convert("L")) > 127
    assert mask.shape == truth.shape
    hit = (mask == 1) & truth
    # The mask is neither empty nor everything, and its precision on the reference mask is
    # at least twice the landslide share of the image (better than marking pixels at random).
    assert 0.005 < (mask == 1).mean() < 0.6
    assert hit.sum() / max((mask == 1).sum(), 1) > 2 * truth.mean()
