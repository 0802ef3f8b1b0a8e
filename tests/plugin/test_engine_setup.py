"""The engine setup's core logic (no Qt): Python discovery, GPU detection, pip commands, cancel.

Fake ``nvidia-smi`` and fake interpreters are small shell scripts on a temporary ``PATH``;
nothing here installs anything (the slow end-to-end test is ``test_engine_setup_slow.py``).
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from slidewise.processing_provider import engine_client, engine_setup
from slidewise.processing_provider.engine_setup import (
    GpuInfo,
    SetupCallbacks,
    SetupCancelled,
    SetupError,
    SetupPlan,
)


def script(path: Path, body: str) -> Path:
    """An executable shell script at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def fake_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``bin`` folder first on ``PATH`` (the rest of ``PATH`` stays: sh, python)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


# --- Python discovery ----------------------------------------------------------------------


def test_system_python_is_usable() -> None:
    info = engine_setup.probe_python("/usr/bin/python3")
    assert info.usable, info.describe()
    assert info.version >= (3, 10) and info.venv


def test_old_python_and_non_python_are_refused_with_a_reason(tmp_path: Path) -> None:
    old = script(tmp_path / "python3.8", 'echo "3 8 10"; echo 1')
    noenv = script(tmp_path / "python-novenv", 'echo "3 11 2"; echo 0')
    broken = script(tmp_path / "python-broken", "exit 3")
    chatty = script(tmp_path / "python-chatty", 'echo "Welcome to QGIS"; echo x y z w')
    assert "too old" in engine_setup.probe_python(str(old)).problem
    assert "venv" in engine_setup.probe_python(str(noenv)).problem
    assert "python3-venv" in engine_setup.probe_python(str(noenv)).problem
    assert "not a Python" in engine_setup.probe_python(str(broken)).problem
    assert "not a Python" in engine_setup.probe_python(str(chatty)).problem
    assert "does not run" in engine_setup.probe_python(str(tmp_path / "missing")).problem


def test_find_python_takes_the_first_usable_candidate(tmp_path: Path) -> None:
    old = script(tmp_path / "python3.8", 'echo "3 8 10"; echo 1')
    found = engine_setup.find_python(candidates=[str(old), "/usr/bin/python3"])
    assert found.path == "/usr/bin/python3"


def test_find_python_lists_what_it_tried_when_none_is_usable(tmp_path: Path) -> None:
    old = script(tmp_path / "python3.8", 'echo "3 8 10"; echo 1')
    with pytest.raises(SetupError) as info:
        engine_setup.find_python(candidates=[str(old)])
    message = str(info.value)
    assert "No Python 3.10 or newer" in message and str(old) in message and "too old" in message
    with pytest.raises(SetupError, match="cannot create"):
        engine_setup.find_python(explicit=str(old))


def test_candidates_skip_qgis_itself_and_find_python3_on_path(fake_path: Path) -> None:
    """QGIS's ``sys.executable`` is often the QGIS program: only pythons are candidates."""
    mine = script(fake_path / "python3", 'exec /usr/bin/python3 "$@"')
    found = engine_setup.candidate_pythons(executable="/usr/bin/qgis", prefix="/nonexistent")
    assert "/usr/bin/qgis" not in found
    assert found[0] == str(mine) and "/usr/bin/python3" in found
    assert len(found) == len(set(found))


def test_windows_layout_finds_the_bundled_python(tmp_path: Path) -> None:
    """OSGeo4W: sys.prefix is <root>/apps/Python312, python3.exe is in <root>/bin."""
    root = tmp_path / "OSGeo4W"
    prefix = root / "apps" / "Python312"
    prefix.mkdir(parents=True)
    exe = script(root / "bin" / "python3.exe", "exit 0")
    found = engine_setup.candidate_pythons(
        executable=str(root / "bin" / "qgis-bin.exe"), prefix=str(prefix)
    )
    assert str(exe) in found


# --- environment paths ---------------------------------------------------------------------


def test_default_environment_follows_the_engine_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(engine_client.ENV_VAR, raising=False)
    assert engine_setup.default_env_dir() == engine_client.DEFAULT_ENGINE_ENV
    assert engine_setup.default_env_dir("/opt/env/bin/python") == Path("/opt/env")
    monkeypatch.setenv(engine_client.ENV_VAR, "/srv/other/bin/python")
    assert engine_setup.default_env_dir("/opt/env/bin/python") == Path("/srv/other")
    assert engine_setup.env_python(Path("/srv/other")) == Path("/srv/other/bin/python")


# --- GPU detection and torch builds --------------------------------------------------------


def test_no_nvidia_smi_means_no_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert engine_setup.detect_gpus() == []


def test_gpu_is_read_from_nvidia_smi(fake_path: Path) -> None:
    script(
        fake_path / "nvidia-smi",
        'case "$*" in *--query-gpu=name,driver_version*--format=csv,noheader*) '
        'echo "NVIDIA GeForce RTX 3060, 550.54.14"; echo "Tesla T4, 550.54.14";; *) exit 9;; esac',
    )
    gpus = engine_setup.detect_gpus()
    assert gpus == [
        GpuInfo("NVIDIA GeForce RTX 3060", "550.54.14"),
        GpuInfo("Tesla T4", "550.54.14"),
    ]
    assert gpus[0].driver_major == 550


def test_failing_nvidia_smi_means_no_gpu(fake_path: Path) -> None:
    """nvidia-smi without a working driver prints an error and exits non-zero."""
    script(fake_path / "nvidia-smi", 'echo "NVIDIA-SMI has failed"; exit 9')
    assert engine_setup.detect_gpus() == []


def test_torch_build_follows_gpu_and_choice() -> None:
    new, mid, old, ancient = (GpuInfo("G", d) for d in ("575.1", "535.2", "470.3", "390.1"))
    index = engine_setup.TORCH_INDEX
    assert engine_setup.torch_index("auto", [])[0] == index + "cpu"
    assert engine_setup.torch_index("auto", [new])[0] == index + "cu128"
    assert engine_setup.torch_index("auto", [mid])[0] == index + "cu126"
    assert engine_setup.torch_index("cuda", [old])[0] == index + "cu118"
    assert engine_setup.torch_index("auto", [ancient])[0] == index + "cpu"
    assert engine_setup.torch_index("cpu", [new])[0] == index + "cpu"
    assert (
        engine_setup.torch_index("index", [], " https://mirror/simple ")[0]
        == "https://mirror/simple"
    )
    with pytest.raises(SetupError, match="No NVIDIA GPU"):
        engine_setup.torch_index("cuda", [])
    with pytest.raises(SetupError, match="too old"):
        engine_setup.torch_index("cuda", [ancient])
    with pytest.raises(SetupError, match="index URL"):
        engine_setup.torch_index("index", [], "")


# --- pip command lines ---------------------------------------------------------------------


def test_pip_commands_for_each_source() -> None:
    py, src = "/env/bin/python", Path("/tmp/x/slidewise")
    cpu = engine_setup.torch_command(py, engine_setup.TORCH_INDEX + "cpu")
    assert cpu[:4] == [py, "-m", "pip", "install"]
    assert cpu[-4:] == [
        "--index-url",
        "https://download.pytorch.org/whl/cpu",
        "torch",
        "torchvision",
    ]
    cuda = engine_setup.torch_command(py, engine_setup.TORCH_INDEX + "cu126")
    assert "https://download.pytorch.org/whl/cu126" in cuda
    given = engine_setup.torch_command(py, "https://mirror.example/simple")
    assert given[given.index("--index-url") + 1] == "https://mirror.example/simple"
    offline = engine_setup.torch_command(py, "", "/media/wheels")
    assert offline[-5:] == ["--no-index", "--find-links", "/media/wheels", "torch", "torchvision"]
    assert "--index-url" not in offline
    engine = engine_setup.engine_command(py, src)
    assert engine[-1] == str(src) and "--no-index" not in engine
    engine_offline = engine_setup.engine_command(py, src, "/media/wheels")
    assert engine_offline[-4:] == ["--no-index", "--find-links", "/media/wheels", str(src)]
    assert engine_setup.venv_command("/usr/bin/python3", Path("/e"), clear=True) == [
        "/usr/bin/python3",
        "-m",
        "venv",
        "--clear",
        "/e",
    ]


def test_wheelhouse_commands_pin_torch_to_the_downloaded_wheels() -> None:
    first, second = engine_setup.wheelhouse_commands(
        "/usr/bin/python3",
        Path("/w"),
        Path("/p"),
        "https://download.pytorch.org/whl/cpu",
        ["/w/torch-2.13.0+cpu.whl"],
    )
    assert first[2:4] == ["pip", "download"] and first[-2:] == ["torch", "torchvision"]
    assert "https://download.pytorch.org/whl/cpu" in first
    assert second[second.index("--find-links") + 1] == "/w"
    assert "/p" in second and "/w/torch-2.13.0+cpu.whl" in second
    assert "setuptools>=68" in second and "wheel" in second  # the engine's build needs them


def test_plugin_copy_has_pyproject_and_no_tests(tmp_path: Path) -> None:
    copy = engine_setup.copy_plugin(engine_setup.PLUGIN_DIR, tmp_path)
    assert (copy / "pyproject.toml").is_file() and (copy / "engine" / "worker.py").is_file()
    assert not (copy / "tests").exists() and not (copy / ".git").exists()
    with pytest.raises(SetupError, match=r"pyproject\.toml"):
        engine_setup.copy_plugin(tmp_path / "nothing", tmp_path / "other")


# --- running: log, progress, cancel --------------------------------------------------------


def test_output_is_relayed_line_by_line_with_progress(tmp_path: Path) -> None:
    lines: list[str] = []
    progress: list[float] = []
    log = engine_setup.Log(tmp_path / "logs" / "setup.log", lines.append)
    command = ["/bin/sh", "-c", "echo Collecting numpy; echo Collecting torch; echo done"]
    engine_setup.run_command(
        command, log, SetupCallbacks(on_progress=progress.append), span=(10, 50)
    )
    log.close()
    assert lines[1:] == ["Collecting numpy", "Collecting torch", "done"]
    assert progress[0] > 10 and progress[-1] == 50 and progress == sorted(progress)
    assert "Collecting torch" in (tmp_path / "logs" / "setup.log").read_text()


def test_failed_command_says_what_failed(tmp_path: Path) -> None:
    log = engine_setup.Log(tmp_path / "setup.log", lambda line: None)
    with pytest.raises(SetupError, match=r"exit code 2.*ERROR: no matching distribution"):
        engine_setup.run_command(
            ["/bin/sh", "-c", "echo 'ERROR: no matching distribution'; exit 2"],
            log,
            SetupCallbacks(),
        )


def test_cancel_kills_pip_and_its_children(tmp_path: Path) -> None:
    """Cancel ends the command (and what it started) at once, not when it finishes."""
    pids = tmp_path / "pids"
    command = ["/bin/sh", "-c", f"sleep 60 & echo $! > {pids}; echo started; wait"]
    cancel = threading.Event()
    log = engine_setup.Log(
        tmp_path / "setup.log", lambda line: cancel.set() if line == "started" else None
    )
    start = time.monotonic()
    with pytest.raises(SetupCancelled):
        engine_setup.run_command(command, log, SetupCallbacks(is_cancelled=cancel.is_set))
    assert time.monotonic() - start < 10
    child = int(pids.read_text())
    time.sleep(0.2)
    assert (
        not Path(f"/proc/{child}").exists()
        or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    )


def test_cancelled_install_removes_the_folder_it_created(tmp_path: Path, fake_path: Path) -> None:
    """A first install cancelled while pip runs leaves no half environment behind."""
    base = script(fake_path / "python3", 'echo "3 11 2"; echo 1')  # probe answers only
    env = tmp_path / "env"
    fake_venv = f"mkdir -p {env}/bin; touch {env}/pyvenv.cfg; cp {base} {env}/bin/python"
    script(
        base,
        f'case "$*" in "-m venv"*) {fake_venv};; "-m pip"*) echo Collecting torch; sleep 30;; '
        '*) echo "3 11 2"; echo 1;; esac',
    )
    cancel = threading.Event()
    callbacks = SetupCallbacks(
        on_log=lambda line: cancel.set() if line == "Collecting torch" else None,
        is_cancelled=cancel.is_set,
    )
    plan = SetupPlan("install", env, torch="cpu", python=str(base), log_file=tmp_path / "s.log")
    with pytest.raises(SetupCancelled):
        engine_setup.run_setup(plan, callbacks)
    assert not env.exists()
    assert "Removed the unfinished environment" in (tmp_path / "s.log").read_text()


# --- refusals and remove -------------------------------------------------------------------


def test_install_refuses_a_folder_it_does_not_own(tmp_path: Path) -> None:
    busy = tmp_path / "documents"
    busy.mkdir()
    (busy / "thesis.docx").write_text("x")
    plan = SetupPlan("install", busy, log_file=tmp_path / "s.log")
    with pytest.raises(SetupError, match="not empty and is not a Python environment"):
        engine_setup.run_setup(plan)
    assert (busy / "thesis.docx").is_file()
    with pytest.raises(SetupError, match="absolute"):
        engine_setup.run_setup(
            SetupPlan("install", Path("relative/env"), log_file=tmp_path / "s.log")
        )
    with pytest.raises(SetupError, match="holds no wheels"):
        engine_setup.run_setup(
            SetupPlan(
                "install", tmp_path / "new", wheelhouse=str(tmp_path), log_file=tmp_path / "s.log"
            )
        )


def test_remove_deletes_only_the_environment(tmp_path: Path) -> None:
    env = tmp_path / "data" / "engine-venv"
    (env / "bin").mkdir(parents=True)
    (env / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (env / "bin" / "python").write_text("")
    sibling = tmp_path / "data" / "models"
    sibling.mkdir()
    (sibling / "model.safetensors").write_text("keep")
    log = tmp_path / "logs" / "setup.log"
    assert engine_setup.run_setup(SetupPlan("remove", env, log_file=log)) == {}
    assert not env.exists()
    assert (sibling / "model.safetensors").read_text() == "keep"
    assert "Removed" in log.read_text()


def test_remove_refuses_qgis_own_python(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="QGIS's own Python"):
        engine_setup.run_setup(SetupPlan("remove", Path(sys.prefix), log_file=tmp_path / "s.log"))
    assert Path(sys.prefix).is_dir()


def test_remove_refuses_a_folder_that_is_not_an_environment(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(SetupError, match="not a Python environment"):
        engine_setup.run_setup(SetupPlan("remove", tmp_path, log_file=tmp_path / "l" / "s.log"))
    assert (tmp_path / "keep.txt").is_file()


# --- quick check and diagnostics -----------------------------------------------------------


def test_quick_check_of_missing_broken_and_working_engines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine_python: str
) -> None:
    monkeypatch.setenv(engine_client.ENV_VAR, str(tmp_path / "none" / "bin" / "python"))
    missing = engine_setup.quick_check()
    assert not missing.ok and "Set up engine" in missing.message
    monkeypatch.setenv(engine_client.ENV_VAR, "/usr/bin/python3")  # no torch
    broken = engine_setup.quick_check()
    assert not broken.ok and "broken" in broken.message and "torch" in broken.message
    monkeypatch.setenv(engine_client.ENV_VAR, engine_python)
    assert engine_setup.quick_check().ok


def test_diagnostics_report_names_everything_a_bug_report_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_setup, "LOG_DIR", tmp_path)
    (tmp_path / "setup.log").write_text("Collecting torch\nERROR: disk full\n")
    check = {"device": "cpu", "packages": {"torch": "2.13.0", "numpy": "2.4"}}
    text = engine_setup.diagnostics_report("3.22.16-Białowieża", "", check, ["boom"])
    for needle in (
        "QGIS: 3.22.16",
        "OS: ",
        sys.executable,
        "Engine Python:",
        "torch 2.13.0",
        "Engine device: cpu",
        "NVIDIA GPU:",
        "boom",
        "ERROR: disk full",
    ):
        assert needle in text, needle


def test_wheelhouse_action_downloads_the_chosen_torch_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Build an offline wheelhouse: torch's index as for an install, into the folder given."""
    calls: list[tuple] = []

    def fake_build(dest, index, python, plugin_dir, callbacks):
        calls.append((dest, index, python))
        return [dest / "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl"]

    monkeypatch.setattr(engine_setup, "build_wheelhouse", fake_build)
    monkeypatch.setattr(engine_setup, "detect_gpus", lambda: [GpuInfo("RTX", "560.1")])
    plan = SetupPlan(
        "wheelhouse", tmp_path / "no-env", wheelhouse=str(tmp_path / "w"), python="/usr/bin/python3"
    )
    assert engine_setup.run_setup(plan) == {"wheelhouse": str(tmp_path / "w"), "wheels": 1}
    assert calls == [(tmp_path / "w", engine_setup.TORCH_INDEX + "cu126", "/usr/bin/python3")]
    with pytest.raises(SetupError, match="wheelhouse folder"):
        engine_setup.run_setup(SetupPlan("wheelhouse", tmp_path / "no-env"))
