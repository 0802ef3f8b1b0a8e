"""Fixtures for plugin tests: real PyQGIS (headless) and qgis_process.

These tests run with Debian's ``/usr/bin/python3`` (the only interpreter with
PyQGIS); the engine runs in the environment named by ``SLIDEWISE_PYTHON``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plugin_helpers import BIJIE, PLUGINS_DIR, QGIS_PROCESS


@pytest.fixture(scope="session")
def engine_python() -> str:
    """The engine interpreter the tests use (must exist: run 'make install')."""
    python = os.environ["SLIDEWISE_PYTHON"]
    if not Path(python).is_file():
        pytest.fail(f"engine Python {python} missing: run 'make install' first")
    return python


@pytest.fixture(scope="session")
def qgis_app(tmp_path_factory: pytest.TempPathFactory):
    """A headless QgsApplication with Processing and the Slidewise provider."""
    config = tmp_path_factory.mktemp("qgis-config")
    os.environ["QGIS_CUSTOM_CONFIG_PATH"] = str(config)
    from qgis.core import QgsApplication

    app = QgsApplication([], False, str(config))
    QgsApplication.setPrefixPath("/usr", True)
    app.initQgis()
    sys.path.insert(0, "/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    from slidewise.processing_provider.provider import SlidewiseProvider

    provider = SlidewiseProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    yield app
    registered = QgsApplication.processingRegistry().providerById("slidewise")
    if registered is not None:
        QgsApplication.processingRegistry().removeProvider(registered)


@pytest.fixture(scope="session")
def qgis_process_env(
    tmp_path_factory: pytest.TempPathFactory, engine_python: str
) -> dict[str, str]:
    """Environment for qgis_process.bin with Slidewise installed in a throw-away profile."""
    config = tmp_path_factory.mktemp("qgis-process-config")
    env = dict(os.environ)
    env.update(
        QGIS_CUSTOM_CONFIG_PATH=str(config),
        QGIS_PLUGINPATH=str(PLUGINS_DIR),
        QT_QPA_PLATFORM="offscreen",
        SLIDEWISE_PYTHON=engine_python,
    )
    subprocess.run(
        [QGIS_PROCESS, "plugins", "enable", "slidewise"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return env


@pytest.fixture(scope="session")
def trained(qgis_app, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small model trained on the real pairs (1 epoch: mechanics, not accuracy)."""
    import processing

    out = tmp_path_factory.mktemp("mapping")
    result = processing.run(
        "slidewise:trainmapping",
        {
            "DATASET_TYPE": 0,
            "TRAIN_IMAGES": str(BIJIE / "train" / "images"),
            "TRAIN_MASKS": str(BIJIE / "train" / "masks"),
            "MASK_COLOR": "255,255,0",
            "ENCODER": "resnet18",
            "ENCODER_DEPTH": 3,
            "EPOCHS": 1,
            "CHIP_SIZE": 128,
            "BATCH_SIZE": 4,
            "OUTPUT": str(out / "model.safetensors"),
        },
    )
    return {"out": out, "result": result}
