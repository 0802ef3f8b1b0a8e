"""Map landslides' OUTPUT_UNCERTAINTY from qgis_process, and its style in QGIS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from plugin_helpers import BIJIE, run_qgis_process, styled_ramp

TEST_IMAGE = BIJIE / "test" / "images" / "10105.png"


def _algorithm():
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("slidewise:maplandslides")
    assert alg is not None
    return alg


def _crop(path: Path) -> str:
    """A 160 x 192 crop of the held-out Bijie image 10105 (a landslide and its edges)."""
    from osgeo import gdal

    gdal.Translate(
        str(path), str(TEST_IMAGE), srcWin=[96, 300, 192, 160], outputBounds=[0, 0, 192, -160]
    )
    return str(path)


@pytest.mark.slow
def test_qgis_process_writes_the_uncertainty(qgis_process_env, tmp_path: Path) -> None:
    proc = run_qgis_process(
        qgis_process_env,
        "--json",
        "run",
        "slidewise:maplandslides",
        "--",
        f"INPUT={_crop(tmp_path / 'crop.tif')}",
        "BACKEND=1",  # torch: no backend probing in a test
        f"OUTPUT_UNCERTAINTY={tmp_path / 'uncertainty.tif'}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TTA is turned on" in proc.stdout + proc.stderr
    results = json.loads(proc.stdout[proc.stdout.index("{") :])["results"]
    from osgeo import gdal

    spread = gdal.Open(results["OUTPUT_UNCERTAINTY"]).ReadAsArray()
    assert spread.shape == (160, 192)
    assert np.isfinite(spread).all()
    assert 0.0 <= spread.min() < spread.max() <= 0.5
    assert "OUTPUT_PROBABILITY" not in results  # only what was asked for is written


def test_uncertainty_is_optional_and_styled(qgis_app, tmp_path: Path) -> None:
    alg = _algorithm()
    param = alg.parameterDefinition("OUTPUT_UNCERTAINTY")
    assert param is not None and not param.createByDefault()  # 8 times slower: asked for
    items = styled_ramp(alg, "OUTPUT_UNCERTAINTY", tmp_path, top=0.25)
    # landslide_uncertainty.qml: light (the 8 members agree) to dark purple over 0-0.1.
    assert [round(i.value, 3) for i in items] == [0.0, 0.01, 0.025, 0.05, 0.1]
    assert items[-1].color.name() == "#4d004b"
