"""slidewise:setupengine through qgis_process and processing.run (cheap actions only)."""

from __future__ import annotations

import json
from pathlib import Path

from plugin_helpers import run_qgis_process


def isolated(env: dict, tmp_path: Path) -> dict:
    """qgis_process's environment with its own HOME (the setup log goes there, not to yours)."""
    (tmp_path / "home").mkdir(exist_ok=True)
    return {**env, "HOME": str(tmp_path / "home")}


def fake_environment(folder: Path) -> Path:
    """A folder that looks like a virtual environment (what Remove accepts)."""
    (folder / "bin").mkdir(parents=True)
    (folder / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (folder / "bin" / "python").write_text("")
    return folder


def test_remove_through_qgis_process(qgis_process_env: dict, tmp_path: Path) -> None:
    env = fake_environment(tmp_path / "engine-venv")
    (tmp_path / "keep.txt").write_text("x")
    done = run_qgis_process(
        isolated(qgis_process_env, tmp_path),
        "run",
        "slidewise:setupengine",
        "--json",
        "--",
        "ACTION=2",
        f"ENV_PATH={env}",
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(done.stdout)["results"]
    assert results["PYTHON"] == ""
    assert results["LOG"] == str(tmp_path / "home" / ".local/share/slidewise/logs/setup.log")
    assert "Removed" in Path(results["LOG"]).read_text()
    assert not env.exists() and (tmp_path / "keep.txt").is_file()


def test_install_into_a_foreign_folder_is_refused_clearly(
    qgis_process_env: dict, tmp_path: Path
) -> None:
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.docx").write_text("x")
    done = run_qgis_process(
        isolated(qgis_process_env, tmp_path),
        "run",
        "slidewise:setupengine",
        "--",
        "ACTION=0",
        f"ENV_PATH={folder}",
        "TORCH=1",
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "is not empty and is not a Python environment" in output
    assert "Traceback" not in output
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.docx"]


def test_help_lists_the_parameters(qgis_process_env: dict) -> None:
    done = run_qgis_process(qgis_process_env, "help", "slidewise:setupengine", timeout=120)
    assert done.returncode == 0, done.stderr
    for name in ("ACTION", "ENV_PATH", "TORCH", "INDEX_URL", "WHEELHOUSE", "PYTHON"):
        assert name in done.stdout, name


def test_cuda_without_gpu_is_refused_in_processing(qgis_app, tmp_path: Path, monkeypatch) -> None:
    """processing.run: the CUDA build on a machine without nvidia-smi says what to choose."""
    import processing
    import pytest
    from qgis.core import QgsProcessingException

    from slidewise.processing_provider import engine_setup

    monkeypatch.setattr(engine_setup, "detect_gpus", lambda: [])
    monkeypatch.setattr(engine_setup, "LOG_DIR", tmp_path / "logs")
    with pytest.raises(QgsProcessingException, match="No NVIDIA GPU"):
        processing.run(
            "slidewise:setupengine",
            {"ACTION": 0, "ENV_PATH": str(tmp_path / "new-env"), "TORCH": 2},
        )
    assert not (tmp_path / "new-env").exists()
