"""End to end: the packaged zip sets up a working engine in a fresh folder, offline.

``make package``'s zip is unzipped into a fresh plugins folder; a wheelhouse is built
from it as ``make wheelhouse`` / Build an offline wheelhouse does (``pip download`` from
this machine's configured indexes; ``SLIDEWISE_TEST_WHEELHOUSE`` may name one already
built to save a minute); then the setup core creates an environment in a fresh
folder from the unzipped plugin with ``--no-index --find-links`` (no network), and the
engine check passes in it. No ``--system-site-packages``: the environment is complete.
qgis_process then runs *Terrain factors* with the unzipped plugin and the new engine;
Repair mends the environment after torch is deleted from it, and Remove deletes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from plugin_helpers import REPO, qgis_desktop_command, real_dem, run_qgis_process

from slidewise.processing_provider import engine_setup
from slidewise.processing_provider.engine_setup import SetupCallbacks, SetupPlan

pytestmark = pytest.mark.slow
IMAGES = REPO / "docs" / "images"

#: The torch build this machine's indexes hold for CPUs (as the Makefile's TORCH_SPEC).
TORCH_SPEC = os.environ.get("SLIDEWISE_TEST_TORCH_SPEC", "torch==2.13.0")


@pytest.fixture(scope="module")
def unzipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin as a user gets it: ``make package``'s zip unzipped into a plugins folder."""
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "package.sh")], capture_output=True, text=True, check=True
    )
    zip_path = out.stdout.strip().splitlines()[-1]
    plugins = tmp_path_factory.mktemp("profile") / "python" / "plugins"
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        archive.extractall(plugins)
    assert "slidewise/pyproject.toml" in names and "slidewise/README.md" in names
    assert not [n for n in names if n.startswith(("slidewise/tests/", "slidewise/Makefile"))]
    return plugins / "slidewise"


@pytest.fixture(scope="module")
def wheelhouse(unzipped: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every wheel the engine needs, from this machine's configured indexes."""
    given = os.environ.get("SLIDEWISE_TEST_WHEELHOUSE", "")
    if given and any(Path(given).glob("torch-*.whl")):
        return Path(given)
    dest = tmp_path_factory.mktemp("wheelhouse")
    wheels = engine_setup.build_wheelhouse(
        dest, python=sys.executable, plugin_dir=unzipped, torch_spec=TORCH_SPEC
    )
    names = {w.name.split("-")[0].lower() for w in wheels}
    assert {"torch", "torchvision", "numpy", "rasterio", "setuptools", "wheel"} <= names
    return dest


@pytest.fixture(scope="module")
def installed(unzipped: Path, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Set up the engine from the unzipped plugin into a fresh folder, offline."""
    root = tmp_path_factory.mktemp("fresh")
    env = root / "engine-venv"
    lines: list[str] = []
    progress: list[float] = []
    plan = SetupPlan(
        "install",
        env,
        wheelhouse=str(wheelhouse),
        python="/usr/bin/python3",
        plugin_dir=unzipped,
        log_file=root / "logs" / "setup.log",
    )
    report = engine_setup.run_setup(
        plan, SetupCallbacks(on_progress=progress.append, on_log=lines.append)
    )
    return {"plan": plan, "env": env, "report": report, "lines": lines, "progress": progress}


def test_setup_from_the_zip_creates_a_working_engine_offline(
    installed: dict, unzipped: Path, tmp_path: Path
) -> None:
    env, report, plan = installed["env"], installed["report"], installed["plan"]
    assert report["device"] == "cpu"
    assert report["python"].startswith(str(env))
    assert {"torch", "numpy", "rasterio"} <= set(report["packages"])
    progress = installed["progress"]
    assert progress[-1] == 100 and progress == sorted(progress)
    assert any(line.startswith("Successfully installed") for line in installed["lines"])
    assert (env / engine_setup.MARKER).is_file()
    text = plan.log_file.read_text(encoding="utf-8")
    assert "--no-index" in text and "The engine is ready" in text
    # The plugin folder stays as it was: pip built from a copy.
    assert not list(unzipped.glob("*.egg-info")) and not (unzipped / "build").exists()
    # The engine is installed in the environment (importable away from the plugin folder).
    where = subprocess.run(
        [
            str(engine_setup.env_python(env)),
            "-c",
            "import slidewise.engine.cli as c; print(c.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert str(env) in where.stdout


def test_the_zip_and_its_engine_run_terrain_factors(
    installed: dict, unzipped: Path, tmp_path: Path
) -> None:
    """make package -> the zip in a fresh profile -> set up engine -> terrain factors."""
    config = tmp_path / "profile"
    env = dict(os.environ)
    env.update(
        QGIS_CUSTOM_CONFIG_PATH=str(config),
        QGIS_PLUGINPATH=str(unzipped.parent),
        QT_QPA_PLATFORM="offscreen",
        SLIDEWISE_PYTHON=str(engine_setup.env_python(installed["env"])),
    )
    run_qgis_process(env, "plugins", "enable", "slidewise", timeout=120)
    out = tmp_path / "factors.tif"
    done = run_qgis_process(
        env,
        "--json",
        "run",
        "slidewise:terrainfactors",
        "--",
        f"INPUT={real_dem()}",
        f"OUTPUT={out}",
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert out.is_file() and json.loads(done.stdout)["results"]["OUTPUT"] == str(out)


def test_repair_mends_a_broken_environment_and_remove_deletes_it(
    installed: dict, wheelhouse: Path
) -> None:
    env, plan = installed["env"], installed["plan"]
    python = str(engine_setup.env_python(env))
    torch_dir = next(env.glob("lib/python3*/site-packages/torch"))
    shutil.rmtree(torch_dir)
    broken = engine_setup.quick_check(python=python)
    assert not broken.ok and "torch" in broken.message
    report = engine_setup.run_setup(replace(plan, action="repair"))
    assert report["device"] == "cpu"
    assert engine_setup.quick_check(python=python).ok
    engine_setup.run_setup(replace(plan, action="remove"))
    assert not env.exists() and env.parent.is_dir()


def test_the_dialog_installs_offline_and_cancels_cleanly(
    unzipped: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    """In the QGIS desktop (Xvfb), the dialog of the unzipped plugin: Cancel, then Install."""
    if not (shutil.which("xvfb-run") and shutil.which("qgis")):
        pytest.skip("needs xvfb-run and qgis")
    profile = tmp_path / "profiles" / "default" / "QGIS"
    profile.mkdir(parents=True)
    (profile / "QGIS3.ini").write_text("[PythonPlugins]\nslidewise=true\n[qgis]\nshowTips=false\n")
    out, home = tmp_path / "out", Path(tempfile.mkdtemp(prefix="sw-")) / "home"
    out.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("SLIDEWISE_PYTHON", "QT_QPA_PLATFORM")}
    env.update(
        HOME=str(home),
        SLIDEWISE_GUI_OUT=str(out),
        SLIDEWISE_GUI_WHEELHOUSE=str(wheelhouse),
        QGIS_PLUGINPATH=str(unzipped.parent),
    )
    script = Path(__file__).resolve().parent / "gui" / "setup_install_desktop.py"
    try:
        subprocess.run(
            qgis_desktop_command(tmp_path, script),
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=1500,
            check=False,
        )
        found = json.loads((out / "result.json").read_text())
        assert "error" not in found, found.get("error")
        assert found["env_dir"] == str(home / ".local/share/slidewise/engine-venv")
        assert not found["torch_enabled_offline"]
        assert found["cancel_while_running"]
        assert "cancelled" in found["after_cancel_status"].lower()
        assert not found["after_cancel_env_exists"], "a cancelled first install left a folder"
        assert found["engine_ready"], found["status"] + found["log"]
        assert "The engine works" in found["status"] and found["progress"] == 100
        assert found["offline"], "pip was not run with --no-index only"
        python = str(engine_setup.env_python(home / ".local/share/slidewise/engine-venv"))
        assert engine_setup.quick_check(python=python).ok
        shutil.copyfile(out / "setup_dialog_installed.png", IMAGES / "setup_dialog_installed.png")
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)
