"""Create, repair and remove the engine environment from inside QGIS (no Qt, no root, no terminal).

The *Set up engine* dialog and the ``slidewise:setupengine`` algorithm both call
:func:`run_setup` with a :class:`SetupPlan`:

1. find a Python 3.10+ that can make virtual environments (:func:`find_python`: the QGIS
   Python's ``sys.executable`` is often QGIS itself);
2. create the environment in a user-writable folder (default: the one
   :func:`engine_client.default_engine_python` expects);
3. install torch (CPU build, the CUDA build matching the NVIDIA driver that
   ``nvidia-smi`` reports, a package index the user gives, or the wheels of an
   offline *wheelhouse*), then the engine from the plugin folder itself
   (``pip install <plugin folder>``: ``pyproject.toml`` maps ``slidewise`` to it);
4. run the engine check (``checkengine``) in the new environment.

pip's output is relayed line by line to a log callback and to a log file; a cancel
callback kills pip. :func:`diagnostics_report` gathers what a bug report needs.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slidewise.processing_provider import engine_client

PLUGIN_DIR = engine_client.PLUGIN_DIR
DATA_DIR = engine_client.DEFAULT_ENGINE_ENV.parent
LOG_DIR = DATA_DIR / "logs"
MARKER = ".slidewise-installed"
MIN_PYTHON = (3, 10)
ACTIONS = ("install", "repair", "remove", "wheelhouse")
TORCH_CHOICES = ("auto", "cpu", "cuda", "index")
TORCH_INDEX = "https://download.pytorch.org/whl/"
#: Oldest NVIDIA driver (major version) for each CUDA build of torch, newest first.
CUDA_BUILDS = ((570, "cu128"), (525, "cu126"), (450, "cu118"))
#: What the engine's quick check imports.
QUICK_IMPORTS = "import slidewise.engine, torch"
#: Folders of the plugin that the engine install does not need.
COPY_IGNORE = (".git", "tests", "docs", "dist", "build", "__pycache__", "*.pyc", "*.egg-info")
#: The last errors of setup, checks and quick checks in this QGIS session (for diagnostics).
RECENT_ERRORS: deque[str] = deque(maxlen=10)
#: No console window for each command on Windows (0 elsewhere).
NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)
PIP_STEPS = ("Collecting", "Processing", "Downloading", "Building", "Installing", "Successfully")
PIP = ("-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off")


class SetupError(Exception):
    """Setup could not go on; the message says why and what to do."""


class SetupCancelled(SetupError):  # noqa: N818 - reads better than ...Error
    """The user cancelled setup and pip was stopped."""


# --- callbacks ---------------------------------------------------------------------------


def _no_progress(value: float) -> None:
    """Default progress callback: ignore it."""


def _no_log(message: str) -> None:
    """Default log callback: ignore it."""


def _never() -> bool:
    """Default cancel check: never."""
    return False


@dataclass(frozen=True)
class SetupCallbacks:
    """How setup reports back: progress in percent, log lines, and a polled cancel check."""

    on_progress: Callable[[float], None] = _no_progress
    on_log: Callable[[str], None] = _no_log
    is_cancelled: Callable[[], bool] = _never
    poll_s: float = 0.1


# --- Python discovery --------------------------------------------------------------------


@dataclass(frozen=True)
class PythonInfo:
    """One candidate interpreter and what it can do.

    Attributes:
        path: The executable.
        version: ``(major, minor, micro)``; empty when it did not run.
        venv: It has the ``venv`` and ``ensurepip`` modules.
        problem: Why it is not suitable ('' when it is).
    """

    path: str
    version: tuple[int, ...] = ()
    venv: bool = False
    problem: str = ""

    @property
    def usable(self) -> bool:
        """Python 3.10 or newer that can create environments with pip."""
        return not self.problem

    def describe(self) -> str:
        """``/usr/bin/python3 (3.11.2)`` or ``... : why not``."""
        version = ".".join(str(v) for v in self.version) or "?"
        text = f"{self.path} ({version})"
        return f"{text}: {self.problem}" if self.problem else text


def clean_environment() -> dict[str, str]:
    """The environment for other interpreters: QGIS's PYTHONHOME/PYTHONPATH left out."""
    env = dict(os.environ)
    for name in (
        "PYTHONHOME",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "VIRTUAL_ENV",
        "PIP_REQUIRE_VIRTUALENV",
    ):
        env.pop(name, None)
    env["PYTHONNOUSERSITE"] = "1"
    return env


def candidate_pythons(executable: str = sys.executable, prefix: str = sys.prefix) -> list[str]:
    """Interpreters to try, best first, without duplicates (existing files only).

    The QGIS Python itself when ``executable`` is a python (Linux), the python beside
    QGIS's Python prefix (Windows OSGeo4W / standalone, macOS bundle), then
    ``python3`` on ``PATH`` and ``/usr/bin/python3``.
    """
    base = Path(prefix)
    names: list[Path] = []
    if Path(executable).name.lower().startswith("python"):
        names.append(Path(executable))
    minor = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    names += [
        base / "bin" / minor,
        base / "bin" / "python3",
        base / "python3.exe",
        base / "python.exe",
    ]
    names += [base.parent.parent / "bin" / "python3.exe", base.parent.parent / "bin" / "python.exe"]
    for name in ("python3", "python"):
        found = shutil.which(name)
        if found:
            names.append(Path(found))
    names.append(Path("/usr/bin/python3"))
    seen: set[str] = set()
    out: list[str] = []
    for path in names:
        key = str(path)
        if key not in seen and path.is_file():
            seen.add(key)
            out.append(key)
    return out


def probe_python(path: str, timeout: float = 30.0) -> PythonInfo:
    """Run ``path`` and say whether it can create the engine environment."""
    script = (
        "import sys; print(*sys.version_info[:3]); "
        "import importlib.util as u; "
        "print(int(all(u.find_spec(m) for m in ('venv', 'ensurepip'))))"
    )
    try:
        done = subprocess.run(
            [path, "-I", "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_environment(),
            cwd=tempfile.gettempdir(),
            check=False,
            creationflags=NO_WINDOW,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return PythonInfo(path, problem=f"does not run ({exc})")
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) < 4 or not all(v.isdigit() for v in lines[-4:]):
        return PythonInfo(path, problem="is not a Python interpreter or does not run")
    version = tuple(int(v) for v in lines[-4:-1])
    has_venv = lines[-1] == "1"
    if version < MIN_PYTHON:
        return PythonInfo(path, version, has_venv, "too old (the engine needs 3.10 or newer)")
    if not has_venv:
        hint = (
            " (on Debian/Ubuntu install the package python3-venv)"
            if sys.platform.startswith("linux")
            else ""
        )
        return PythonInfo(path, version, False, "has no venv/ensurepip module" + hint)
    return PythonInfo(path, version, True)


def find_python(explicit: str = "", candidates: Sequence[str] | None = None) -> PythonInfo:
    """The Python that creates the environment: ``explicit`` if given, else the first usable.

    Raises:
        SetupError: none is usable; the message lists what was tried and why not.
    """
    if explicit:
        info = probe_python(explicit)
        if info.usable:
            return info
        raise SetupError(f"The Python '{info.describe()}' cannot create the engine environment.")
    tried = [
        probe_python(path) for path in (candidate_pythons() if candidates is None else candidates)
    ]
    for info in tried:
        if info.usable:
            return info
    listing = "; ".join(info.describe() for info in tried) or "none found"
    raise SetupError(
        "No Python 3.10 or newer with venv and pip was found to create the engine environment "
        f"(tried: {listing}). Install Python 3.10+ (python.org, or your system's python3 and "
        "python3-venv packages) and give its path as 'Python used to create the environment'."
    )


# --- environment paths -------------------------------------------------------------------


def env_python(env_dir: str | Path) -> Path:
    """The interpreter inside environment ``env_dir``."""
    if sys.platform == "win32":  # pragma: no cover - documented, not tested here
        return Path(env_dir) / "Scripts" / "python.exe"
    return Path(env_dir) / "bin" / "python"


def env_dir_of(python: str | Path) -> Path:
    """The environment folder of an engine interpreter (``<env>/bin/python`` -> ``<env>``)."""
    return Path(python).parent.parent


def default_env_dir(setting: str = "") -> Path:
    """The environment the engine client would use, in its order (variable, setting, default)."""
    python, _ = engine_client.engine_python(setting)
    return env_dir_of(python)


def is_environment(env_dir: str | Path) -> bool:
    """``env_dir`` holds a Python virtual environment (it has a ``pyvenv.cfg``)."""
    return (Path(env_dir) / "pyvenv.cfg").is_file()


def default_log_file() -> Path:
    """Where the last setup's log is written."""
    return LOG_DIR / "setup.log"


# --- GPU and torch -----------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    """An NVIDIA GPU as ``nvidia-smi`` reports it."""

    name: str
    driver: str

    @property
    def driver_major(self) -> int:
        """The driver's major version (0 when unreadable)."""
        match = re.match(r"\d+", self.driver)
        return int(match.group()) if match else 0


def detect_gpus(timeout: float = 15.0) -> list[GpuInfo]:
    """NVIDIA GPUs from ``nvidia-smi`` on ``PATH``; empty when it is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        done = subprocess.run(
            [exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            creationflags=NO_WINDOW,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    gpus = []
    for line in done.stdout.splitlines():
        name, _, driver = line.rpartition(",")
        if name.strip():
            gpus.append(GpuInfo(name.strip(), driver.strip()))
    return gpus


def cuda_build(gpu: GpuInfo) -> str:
    """The CUDA build of torch for the GPU's driver (``cu128``...); '' if the driver is too old."""
    for oldest, build in CUDA_BUILDS:
        if gpu.driver_major >= oldest:
            return build
    return ""


def torch_index(torch: str, gpus: Sequence[GpuInfo], index_url: str = "") -> tuple[str, str]:
    """The package index torch comes from, and a sentence saying why.

    Args:
        torch: ``auto`` (CUDA when an NVIDIA GPU is found, else CPU), ``cpu``, ``cuda`` or
            ``index`` (``index_url``).
        gpus: What :func:`detect_gpus` found.
        index_url: The user's package index (``index``).

    Raises:
        SetupError: ``index`` without a URL, or ``cuda`` with no usable GPU driver.
    """
    if torch == "index":
        if not index_url.strip():
            raise SetupError("Torch from a package index needs the index URL.")
        return index_url.strip(), f"torch from the package index {index_url.strip()}"
    if torch in ("auto", "cuda") and gpus:
        build = cuda_build(gpus[0])
        if build:
            why = f"CUDA build {build} for {gpus[0].name} (driver {gpus[0].driver})"
            return TORCH_INDEX + build, why
        if torch == "cuda":
            raise SetupError(
                f"The NVIDIA driver {gpus[0].driver} is too old for torch's CUDA builds: "
                "update the driver, or choose the CPU build."
            )
    elif torch == "cuda":
        raise SetupError("No NVIDIA GPU was found (nvidia-smi): choose the CPU build.")
    if torch not in TORCH_CHOICES:
        raise SetupError(f"Unknown torch build '{torch}': one of {', '.join(TORCH_CHOICES)}.")
    return (
        TORCH_INDEX + "cpu",
        "CPU build of torch (no NVIDIA GPU found)" if torch == "auto" else "CPU build of torch",
    )


# --- the plan and its commands -----------------------------------------------------------


@dataclass(frozen=True)
class SetupPlan:
    """What to do.

    Attributes:
        action: ``install``, ``repair`` (recreate the environment, then install) or
            ``remove`` (delete the environment folder).
        env_dir: The environment folder.
        torch: ``auto``, ``cpu``, ``cuda`` or ``index`` (see :func:`torch_index`).
        index_url: Package index of torch when ``torch`` is ``index``.
        wheelhouse: Folder of wheels to install from, with no network ('' = online).
        python: Python that creates the environment ('' = :func:`find_python`).
        plugin_dir: The plugin folder the engine is installed from.
        log_file: Where the log is written.
    """

    action: str
    env_dir: Path
    torch: str = "auto"
    index_url: str = ""
    wheelhouse: str = ""
    python: str = ""
    plugin_dir: Path = PLUGIN_DIR
    log_file: Path = field(default_factory=default_log_file)


def venv_command(python: str, env_dir: Path, clear: bool = False) -> list[str]:
    """Create the environment (``--clear`` empties an existing one first)."""
    return [python, "-m", "venv", *(["--clear"] if clear else []), str(env_dir)]


def torch_command(env_py: str, index: str, wheelhouse: str = "") -> list[str]:
    """Install torch and torchvision from ``index``, or only from ``wheelhouse``."""
    source = ["--no-index", "--find-links", wheelhouse] if wheelhouse else ["--index-url", index]
    return [env_py, *PIP, *source, "torch", "torchvision"]


def engine_command(env_py: str, source_dir: Path, wheelhouse: str = "") -> list[str]:
    """Install the engine from the plugin folder (torch, already there, is kept)."""
    source = ["--no-index", "--find-links", wheelhouse] if wheelhouse else []
    return [env_py, *PIP, *source, str(source_dir)]


def wheelhouse_commands(
    python: str,
    dest: Path,
    plugin_dir: Path,
    index: str = "",
    torch_files: Sequence[str] = (),
    torch_spec: str = "torch",
) -> list[list[str]]:
    """The ``pip download`` commands that fill a wheelhouse, in order.

    The first fetches torch and torchvision (from ``index`` when given), the second
    everything else the engine and its build need, with torch pinned to the wheels
    already fetched (``torch_files``, found after the first command ran). ``torch_spec``
    pins torch (``torch==2.13.0``) where the index holds several builds.
    """
    download = [python, "-m", "pip", "download", "--disable-pip-version-check", "--dest", str(dest)]
    first = [*download, *(["--index-url", index] if index else []), torch_spec, "torchvision"]
    second = [*download, "--find-links", str(dest), str(plugin_dir), *torch_files]
    second += ["setuptools>=68", "wheel", "pip"]
    return [first, second]


# --- running commands --------------------------------------------------------------------


class Log:
    """Setup's log: every line to the callback and to the log file."""

    def __init__(self, path: Path, on_log: Callable[[str], None]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.on_log = on_log
        self.handle = path.open("w", encoding="utf-8")

    def __call__(self, line: str) -> None:
        self.handle.write(line + "\n")
        self.handle.flush()
        self.on_log(line)

    def close(self) -> None:
        self.handle.close()


def _pump(stream: Any, sink: queue.Queue[str | None]) -> None:
    for raw in iter(stream.readline, ""):
        sink.put(raw.rstrip("\r\n"))
    sink.put(None)


def run_command(
    command: Sequence[str],
    log: Callable[[str], None],
    callbacks: SetupCallbacks,
    span: tuple[float, float] | None = None,
) -> None:
    """Run ``command``, relaying its output line by line; kill it on cancel.

    With ``span``, progress moves from its start towards its end with each package pip
    reports (and reaches the end when the command is done).

    Raises:
        SetupCancelled: the user cancelled (the process was killed).
        SetupError: the command could not start or failed.
    """
    log("$ " + " ".join(command))
    try:
        proc = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=clean_environment(),
            cwd=tempfile.gettempdir(),
            start_new_session=sys.platform != "win32",
            creationflags=NO_WINDOW,
        )
    except OSError as exc:
        raise SetupError(f"Could not start {command[0]}: {exc}") from None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    tail: list[str] = []
    steps = 0
    while True:
        if callbacks.is_cancelled():
            kill(proc)
            raise SetupCancelled("Setup was cancelled.")
        try:
            line = lines.get(timeout=callbacks.poll_s)
        except queue.Empty:
            continue
        if line is None:
            break
        tail = [*tail[-19:], line]
        log(line)
        if span and line.lstrip().startswith(PIP_STEPS):
            steps += 1
            callbacks.on_progress(span[0] + (span[1] - span[0]) * (1 - 0.9**steps))
    code = proc.wait()
    proc.stdout.close()
    if code != 0:
        last = next(
            (ln for ln in reversed(tail) if "error" in ln.lower()), tail[-1] if tail else ""
        )
        what = " ".join([Path(command[0]).name, *command[1:3]])
        raise SetupError(f"{what} failed (exit code {code}): {last.strip()}")
    if span:
        callbacks.on_progress(span[1])


def kill(proc: subprocess.Popen[str]) -> None:
    """Stop ``proc`` and its children (pip's build processes) at once."""
    if proc.poll() is None:
        try:
            if sys.platform == "win32":  # pragma: no cover
                proc.kill()
            else:
                os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


# --- the steps -----------------------------------------------------------------------------


def copy_plugin(plugin_dir: Path, dest: Path) -> Path:
    """A copy of the plugin to build from (pip builds in place: keep the plugin folder clean).

    Raises:
        SetupError: the folder has no ``pyproject.toml``.
    """
    if not (plugin_dir / "pyproject.toml").is_file():
        raise SetupError(
            f"The plugin folder {plugin_dir} has no pyproject.toml: reinstall the plugin from "
            "its zip."
        )
    target = dest / "slidewise"
    shutil.copytree(plugin_dir, target, ignore=shutil.ignore_patterns(*COPY_IGNORE), symlinks=False)
    return target


def check_target(plan: SetupPlan) -> None:
    """Refuse a target folder that setup may not use or delete.

    Raises:
        SetupError: the folder is a file, a non-empty folder that is not an environment,
            not writable, or (remove) not an environment.
    """
    env_dir = Path(plan.env_dir)
    if not str(plan.env_dir).strip() or not env_dir.is_absolute():
        raise SetupError(f"The environment folder '{plan.env_dir}' must be an absolute path.")
    if env_dir.exists() and not env_dir.is_dir():
        raise SetupError(f"The environment folder {env_dir} is a file: choose a folder.")
    if env_dir.exists() and env_dir.resolve() in {
        Path(sys.prefix).resolve(),
        Path.home().resolve(),
    }:
        raise SetupError(f"{env_dir} is QGIS's own Python or your home folder: choose another.")
    if plan.action == "remove":
        if not is_environment(env_dir):
            raise SetupError(
                f"{env_dir} is not a Python environment (no pyvenv.cfg): nothing was removed."
            )
        return
    if env_dir.is_dir() and any(env_dir.iterdir()) and not is_environment(env_dir):
        raise SetupError(
            f"The folder {env_dir} is not empty and is not a Python environment: choose a new "
            "or empty folder (setup never writes into other folders)."
        )
    existing = next((p for p in (env_dir, *env_dir.parents) if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK):
        raise SetupError(f"The folder {existing or env_dir} is not writable: choose another one.")
    if plan.wheelhouse and not any(Path(plan.wheelhouse).glob("*.whl")):
        raise SetupError(f"The wheelhouse {plan.wheelhouse} holds no wheels (*.whl).")


def remove_environment(env_dir: Path, log: Callable[[str], None]) -> None:
    """Delete the environment folder (and nothing else)."""
    log(f"Removing the engine environment {env_dir}")
    shutil.rmtree(env_dir)
    log("Removed.")


def run_setup(plan: SetupPlan, callbacks: SetupCallbacks | None = None) -> dict[str, Any]:
    """Carry out ``plan``; return the engine check's report (empty for ``remove``).

    Raises:
        SetupCancelled: the user cancelled.
        SetupError: a step failed; the message says which and why, the log has the rest.
    """
    callbacks = callbacks or SetupCallbacks()
    if plan.action not in ACTIONS:
        raise SetupError(f"Unknown action '{plan.action}': one of {', '.join(ACTIONS)}.")
    if plan.action == "wheelhouse":
        return make_wheelhouse(plan, callbacks)
    check_target(plan)
    log = Log(Path(plan.log_file), callbacks.on_log)
    try:
        when = time.strftime("%Y-%m-%d %H:%M:%S")
        log(f"Slidewise engine setup: {plan.action} {plan.env_dir} ({when})")
        if plan.action == "remove":
            remove_environment(Path(plan.env_dir), log)
            callbacks.on_progress(100)
            return {}
        return install(plan, log, callbacks)
    except SetupError as exc:
        log(f"ERROR: {exc}")
        RECENT_ERRORS.append(str(exc))
        raise
    finally:
        log.close()


def install(plan: SetupPlan, log: Log, callbacks: SetupCallbacks) -> dict[str, Any]:
    """Install, removing a folder this run created when it is cancelled or fails early."""
    env_dir = Path(plan.env_dir)
    created = not env_dir.exists()
    try:
        return install_steps(plan, log, callbacks)
    except SetupError as exc:
        if (
            created
            and env_dir.is_dir()
            and (isinstance(exc, SetupCancelled) or not is_environment(env_dir))
        ):
            shutil.rmtree(env_dir, ignore_errors=True)
            log(f"Removed the unfinished environment {env_dir}.")
        raise


def install_steps(plan: SetupPlan, log: Log, callbacks: SetupCallbacks) -> dict[str, Any]:
    """Create (or, for repair, recreate) the environment, install torch and the engine, check."""
    env_dir = Path(plan.env_dir)
    if plan.wheelhouse:
        index, why = "", "torch from the wheelhouse " + plan.wheelhouse
    else:
        gpus = detect_gpus() if plan.torch in ("auto", "cuda") else []
        index, why = torch_index(plan.torch, gpus, plan.index_url)
    log("Torch: " + why)
    py = env_python(env_dir)
    if plan.action == "repair" or not py.is_file():
        base = find_python(plan.python)
        log("Creating the environment with " + base.describe())
        command = venv_command(base.path, env_dir, clear=plan.action == "repair")
        run_command(command, log, callbacks, span=(0, 10))
    run_command(torch_command(str(py), index, plan.wheelhouse), log, callbacks, span=(10, 50))
    with tempfile.TemporaryDirectory(prefix="slidewise-setup-") as tmp:
        source = copy_plugin(Path(plan.plugin_dir), Path(tmp))
        command = engine_command(str(py), source, plan.wheelhouse)
        run_command(command, log, callbacks, span=(50, 90))
    report = check_engine(str(py), log, callbacks)
    marker = {key: str(value) for key, value in asdict(plan).items()}
    marker["when"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    (env_dir / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
    callbacks.on_progress(100)
    log(f"The engine is ready: {py} (device {report.get('device', '?')}).")
    return report


def check_engine(
    python: str, log: Callable[[str], None], callbacks: SetupCallbacks
) -> dict[str, Any]:
    """Run the engine check (``checkengine``) in ``python``; return its report.

    Raises:
        SetupCancelled: the user cancelled.
        SetupError: the check failed.
    """
    log("Checking the engine…")
    try:
        outcome = engine_client.run_job(
            "checkengine",
            {},
            python=python,
            origin="new engine environment",
            callbacks=engine_client.JobCallbacks(
                on_log=lambda message, level: log(message) if level != "debug" else None,
                is_cancelled=callbacks.is_cancelled,
            ),
        )
    except engine_client.EngineJobCancelled:
        raise SetupCancelled("Setup was cancelled during the engine check.") from None
    except engine_client.EngineJobError as exc:
        raise SetupError(f"The engine check failed in the new environment: {exc}") from None
    return outcome.figures


# --- wheelhouse ----------------------------------------------------------------------------


def build_wheelhouse(
    dest: Path,
    index: str = "",
    python: str = sys.executable,
    plugin_dir: Path = PLUGIN_DIR,
    callbacks: SetupCallbacks | None = None,
    torch_spec: str = "torch",
) -> list[Path]:
    """Download every wheel the engine needs into ``dest`` (for an offline setup).

    Run it on a machine with network and the same OS and Python version as the
    offline one; ``index`` is torch's package index ('' = pip's configuration).

    Returns:
        The wheels in ``dest``.
    """
    callbacks = callbacks or SetupCallbacks()
    dest.mkdir(parents=True, exist_ok=True)
    log = Log(dest / "wheelhouse.log", callbacks.on_log)
    try:
        first, _ = wheelhouse_commands(python, dest, plugin_dir, index, torch_spec=torch_spec)
        run_command(first, log, callbacks, span=(0, 40))
        torch_files = sorted(
            str(p)
            for p in dest.glob("torch*-*.whl")
            if p.name.split("-")[0] in ("torch", "torchvision")
        )
        with tempfile.TemporaryDirectory(prefix="slidewise-wheelhouse-") as tmp:
            source = copy_plugin(plugin_dir, Path(tmp))
            _, second = wheelhouse_commands(python, dest, source, index, torch_files)
            run_command(second, log, callbacks, span=(40, 100))
    finally:
        log.close()
    callbacks.on_progress(100)
    return sorted(dest.glob("*.whl"))


def make_wheelhouse(plan: SetupPlan, callbacks: SetupCallbacks) -> dict[str, Any]:
    """The ``wheelhouse`` action: fill ``plan.wheelhouse`` with the engine's wheels.

    pip runs in the engine environment when it works, else in the Python setup would use.

    Raises:
        SetupError: no wheelhouse folder was given, or pip failed.
    """
    if not plan.wheelhouse.strip():
        raise SetupError("Building a wheelhouse needs the wheelhouse folder to fill.")
    gpus = detect_gpus() if plan.torch in ("auto", "cuda") else []
    index, _ = torch_index(plan.torch, gpus, plan.index_url)
    py = env_python(plan.env_dir)
    python = str(py) if py.is_file() and probe_python(str(py)).usable else ""
    python = python or find_python(plan.python).path
    wheels = build_wheelhouse(
        Path(plan.wheelhouse), index, python, Path(plan.plugin_dir), callbacks
    )
    return {"wheelhouse": plan.wheelhouse, "wheels": len(wheels)}


# --- quick check and diagnostics -----------------------------------------------------------


@dataclass(frozen=True)
class QuickCheck:
    """Whether the engine can start: ``ok``, the interpreter, where it came from, and why not."""

    ok: bool
    python: str
    origin: str
    message: str = ""
    missing: bool = False


def quick_check(setting: str = "", timeout: float = 120.0, python: str = "") -> QuickCheck:
    """Does the engine interpreter exist and import the engine and torch? (a few seconds)

    Args:
        setting: The Slidewise setting (resolved in the engine client's order).
        timeout: Seconds the import may take.
        python: Check this interpreter instead of the resolved one.
    """
    if python:
        origin = "path given"
    else:
        python, origin = engine_client.engine_python(setting)
    try:
        engine_client.check_python(python, origin)
    except engine_client.EngineUnavailableError as exc:
        return QuickCheck(False, python, origin, str(exc), missing=True)
    try:
        done = subprocess.run(
            [python, "-c", QUICK_IMPORTS],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=engine_client.worker_environment(),
            cwd=tempfile.gettempdir(),
            check=False,
            creationflags=NO_WINDOW,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return QuickCheck(False, python, origin, f"The engine Python '{python}' did not run: {exc}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return QuickCheck(
            False,
            python,
            origin,
            f"The engine environment '{python}' (from the {origin}) is broken: {last}",
        )
    return QuickCheck(True, python, origin)


def log_tail(path: Path, lines: int = 40) -> list[str]:
    """The last ``lines`` lines of a log file (empty when there is none)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def diagnostics_report(
    qgis_version: str = "",
    setting: str = "",
    check: dict[str, Any] | None = None,
    errors: Sequence[str] | None = None,
) -> str:
    """A plain-text report for a bug report: QGIS, OS, Pythons, engine, device, last logs.

    Args:
        qgis_version: QGIS's version string (the caller has QGIS).
        setting: The engine Python setting.
        check: The engine check's report, when it ran.
        errors: Error messages to include (default: :data:`RECENT_ERRORS`).
    """
    errors = list(RECENT_ERRORS) if errors is None else errors
    python, origin = engine_client.engine_python(setting)
    lines = [
        "Slidewise diagnostics",
        f"Slidewise plugin: {plugin_version()} ({PLUGIN_DIR})",
        f"QGIS: {qgis_version or '?'}",
        f"OS: {platform.platform()} ({platform.machine()})",
        f"QGIS Python: {sys.executable} ({platform.python_version()})",
        f"Engine Python: {python} (from the {origin}; exists: {Path(python).is_file()})",
    ]
    gpus = detect_gpus()
    lines.append(
        "NVIDIA GPU: " + (", ".join(f"{g.name} (driver {g.driver})" for g in gpus) or "none found")
    )
    if check:
        lines.append(
            f"Engine device: {check.get('device', '?')} {check.get('gpu_name') or ''}".rstrip()
        )
        lines.append(
            f"Engine Python version: {check.get('python_version', check.get('python', '?'))}"
        )
        lines.append("Engine packages:")
        lines += [
            f"  {name} {version}" for name, version in sorted((check.get("packages") or {}).items())
        ]
    else:
        lines.append("Engine check: not run or failed")
    if errors:
        lines.append("Last errors:")
        lines += [f"  {e}" for e in errors]
    tail = log_tail(default_log_file())
    lines.append(f"Last setup log ({default_log_file()}):" if tail else "Last setup log: none")
    lines += [f"  {line}" for line in tail]
    return "\n".join(lines)


def plugin_version() -> str:
    """The plugin's version from metadata.txt."""
    try:
        text = (PLUGIN_DIR / "metadata.txt").read_text(encoding="utf-8")
    except OSError:
        return "?"
    match = re.search(r"^version=(.+)$", text, re.M)
    return match.group(1).strip() if match else "?"
