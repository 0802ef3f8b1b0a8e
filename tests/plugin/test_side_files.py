"""Nothing is written beside the user's inputs (issue 15, item 5).

QGIS computes statistics when Processing loads an input raster, and GDAL keeps them in a
``.aux.xml`` side file next to the input (or warns when the folder is read-only). The
Slidewise algorithms load their input rasters with GDAL's PAM off in that thread
(``gdal_pam_off`` in ``algorithms/base.py``); the engine never writes one (see
``tests/engine/test_bad_inputs.py``). ``qgis_process`` opens the input rasters itself
before any Slidewise code runs, so a ``qgis_process run slidewise:...`` turns PAM off
when the provider loads (``pam_off_for_qgis_process``). Three routes are checked:
``qgis_process``, ``processing.run`` (Python console, models) and the background task
of the Toolbox dialog and the panel (``QgsProcessingAlgRunnerTask``).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from plugin_helpers import real_dem, run_qgis_process


@pytest.mark.parametrize("read_only", [False, True], ids=["writable", "read-only"])
def test_qgis_process_leaves_the_input_folder_alone(
    qgis_process_env, tmp_path: Path, read_only: bool
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    dem = Path(shutil.copy(real_dem(), inputs / "dem.tif"))
    out = tmp_path / "factors.tif"
    if read_only:
        inputs.chmod(0o555)
    try:
        proc = run_qgis_process(
            qgis_process_env,
            "--json",
            "run",
            "slidewise:terrainfactors",
            "--",
            f"INPUT={dem}",
            f"OUTPUT={out}",
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert sorted(p.name for p in inputs.iterdir()) == ["dem.tif"]
    finally:
        inputs.chmod(0o755)
    payload = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert payload["results"]["OUTPUT"] == str(out) and out.is_file()
    text = (proc.stdout + proc.stderr).lower()
    for word in ("aux.xml", "auxiliary", "warning 1:", "error 1:"):
        assert word not in text, f"{word!r} in qgis_process's output:\n{proc.stderr}"


def test_pyqgis_run_leaves_the_input_folder_alone(qgis_app, tmp_path: Path) -> None:
    import processing

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    dem = Path(shutil.copy(real_dem(), inputs / "dem.tif"))
    out = tmp_path / "factors.tif"
    processing.run("slidewise:terrainfactors", {"INPUT": str(dem), "OUTPUT": str(out)})
    assert out.is_file()
    assert sorted(p.name for p in inputs.iterdir()) == ["dem.tif"]


def test_background_task_run_leaves_the_input_folder_alone(qgis_app, tmp_path: Path) -> None:
    """The Toolbox dialog and the panel run the algorithm in a QgsProcessingAlgRunnerTask
    (prepared in the main thread, processed in a worker thread)."""
    from qgis.core import QgsApplication

    from slidewise.ui.panel.runner import StepRunner

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    dem = Path(shutil.copy(real_dem(), inputs / "dem.tif"))
    out = tmp_path / "factors.tif"
    runner = StepRunner("slidewise:terrainfactors", {"INPUT": str(dem), "OUTPUT": str(out)})
    ended: list[bool] = []
    runner.finished.connect(lambda ok, results: ended.append(ok))
    runner.start()
    deadline = time.monotonic() + 120
    while not ended and time.monotonic() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.05)
    assert ended == [True]
    del runner
    assert out.is_file()
    assert sorted(p.name for p in inputs.iterdir()) == ["dem.tif"]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["/usr/bin/qgis_process.bin", "run", "slidewise:terrainfactors", "--", "INPUT=a"], True),
        (["C:/OSGeo4W/bin/qgis_process.exe", "--json", "run", "slidewise:sleep"], True),
        (["/usr/bin/qgis_process.bin", "run", "native:buffer", "--", "INPUT=a"], False),
        (["/usr/bin/qgis_process.bin", "help", "slidewise:terrainfactors"], False),
        (["/usr/bin/qgis", "--code", "slidewise:run"], False),
        ([], False),
    ],
)
def test_pam_is_off_only_for_a_slidewise_qgis_process_run(
    arguments: list[str], expected: bool
) -> None:
    """Another provider's algorithm, or QGIS itself, keeps GDAL's PAM as it was."""
    from slidewise.processing_provider.algorithms.base import runs_slidewise_in_qgis_process

    assert runs_slidewise_in_qgis_process(arguments) is expected
