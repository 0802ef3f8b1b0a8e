"""Shared paths and helpers of the plugin tests (imported by conftest and tests).

These tests run with Debian's ``/usr/bin/python3`` (the only interpreter with
PyQGIS); the engine runs in the environment named by ``SLIDEWISE_PYTHON``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
TEST_DATA = REPO / "tests" / "data"
DEFAULT_ENGINE_PY = Path.home() / ".local/share/slidewise/engine-venv/bin/python"
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"


def _plugin_parent(root: Path) -> Path:
    """A folder in which ``slidewise`` names this checkout (whatever its folder name)."""
    if REPO.name == "slidewise":
        return REPO.parent
    root.mkdir(parents=True, exist_ok=True)
    link = root / "slidewise"
    if link.is_symlink() and link.resolve() != REPO.resolve():
        link.unlink()  # left by another checkout
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    return root


_CHECKOUT = hashlib.sha1(str(REPO.resolve()).encode()).hexdigest()[:10]
PLUGINS_DIR = _plugin_parent(
    Path(os.environ.get("TMPDIR", "/tmp"))
    / f"slidewise-tests-{os.getuid()}-{_CHECKOUT}"
    / "plugins"
)
sys.path.insert(0, str(PLUGINS_DIR))
os.environ.setdefault("SLIDEWISE_PYTHON", str(DEFAULT_ENGINE_PY))


def run_qgis_process(
    env: dict[str, str], *args: str, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """Run qgis_process.bin with ``args`` and return the completed process."""
    return subprocess.run(
        [QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def real_dem() -> Path:
    """A real DEM shipped with the repository."""
    return TEST_DATA / "ecuador" / "dem_10m.tif"
