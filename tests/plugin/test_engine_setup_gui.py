"""The real QGIS desktop under Xvfb: no engine -> message bar -> Set up engine dialog.

QGIS starts with a fresh profile where only Slidewise is enabled, a fresh ``HOME``
(no engine environment) and no ``SLIDEWISE_PYTHON``; ``gui/setup_desktop.py`` runs
inside it, clicks the message bar's *Set up engine…* button and looks at the dialog.
The screenshots are saved under docs/images/ (setup_dialog.png, setup_message_bar.png).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from plugin_helpers import PLUGINS_DIR, REPO, qgis_desktop_command

IMAGES = REPO / "docs" / "images"
SCRIPT = Path(__file__).resolve().parent / "gui" / "setup_desktop.py"

pytestmark = pytest.mark.skipif(
    not (shutil.which("xvfb-run") and shutil.which("qgis")), reason="needs xvfb-run and qgis"
)


def run_desktop(tmp_path: Path, home: Path, engine_env: str) -> dict:
    """Start QGIS under Xvfb with the script; return what it found."""
    profile = tmp_path / "profiles" / "default" / "QGIS"
    profile.mkdir(parents=True)
    (profile / "QGIS3.ini").write_text("[PythonPlugins]\nslidewise=true\n[qgis]\nshowTips=false\n")
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("SLIDEWISE_PYTHON", "QT_QPA_PLATFORM")}
    env.update(
        HOME=str(home),
        SLIDEWISE_GUI_OUT=str(out),
        SLIDEWISE_GUI_ENGINE_ENV=engine_env,
        QGIS_PLUGINPATH=str(PLUGINS_DIR),
    )
    subprocess.run(
        qgis_desktop_command(tmp_path, SCRIPT),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
        check=False,
    )
    result = out / "result.json"
    assert result.is_file(), "the script did not run in QGIS"
    found = json.loads(result.read_text())
    found["out"] = out
    return found


@pytest.fixture
def home() -> Iterator[Path]:
    """A fresh, short HOME (it shows in the screenshot): no engine environment in it."""
    root = Path(tempfile.mkdtemp(prefix="sw-"))
    (root / "home").mkdir()
    yield root / "home"
    shutil.rmtree(root, ignore_errors=True)


def test_missing_engine_shows_message_bar_and_setup_dialog(
    tmp_path: Path, home: Path, engine_python: str
) -> None:
    engine_env = str(Path(engine_python).parent.parent)
    found = run_desktop(tmp_path, home, engine_env)
    assert "error" not in found, found.get("error")
    assert found["plugin_loaded"]
    assert found["message_bar"], "no Slidewise message with a Set up engine button"
    assert "not set up yet" in found["message_text"]
    assert found["dialog_open"], "the button did not open the Set up engine dialog"
    for text in ("Install", "Repair", "Remove", "Check", "Cancel"):
        assert text in found["dialog_buttons"], text
    assert found["dialog_env"] == str(home / ".local/share/slidewise/engine-venv")
    assert "No engine environment here yet" in found["dialog_status"]
    assert "GPU" in found["dialog_gpu"]
    # Check on an existing environment ran as a task: log, progress and status.
    assert found["check_started"]
    assert "The engine works" in found["check_status"], found["check_status"]
    assert "torch" in found["check_log"]
    assert "Delete the engine environment" in found["remove_question"]
    assert found["fake_env_removed"] and "removed" in found["remove_status"]
    assert not found["bar_after_setup"], "the message stayed after the engine was found working"
    # Diagnostics: QGIS, OS, engine packages from the check; Copy fills the clipboard.
    report = found["diagnostics"]
    for needle in ("QGIS: 3.", "OS: ", "Engine Python:", "torch 2.", "Engine device: cpu"):
        assert needle in report, needle
    assert found["clipboard"] == report
    assert "the engine works" in found["settings_status"], found["settings_status"]
    IMAGES.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(found["out"] / "diagnostics.png", IMAGES / "setup_diagnostics.png")
    shutil.copyfile(found["out"] / "settings.png", IMAGES / "setup_settings.png")
    shutil.copyfile(found["out"] / "setup_dialog_check.png", IMAGES / "setup_dialog_check.png")
    shutil.copyfile(found["out"] / "setup_dialog.png", IMAGES / "setup_dialog.png")
    shutil.copyfile(found["out"] / "message_bar.png", IMAGES / "setup_message_bar.png")
