"""Run engine jobs in a separate Python process and relay what they report.

This module needs neither QGIS nor the engine's packages, and it does not import
``slidewise.engine`` (importing the engine configures GDAL for the engine's own
process): the protocol parser and the partial-file naming rule come from
:mod:`slidewise.contract`, which both sides share. The Processing
algorithms call :func:`run_job` with callbacks that forward progress and log
lines to ``QgsProcessingFeedback``, and tests can call it directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slidewise.contract.partials import remove_partials
from slidewise.contract.protocol import parse_line

PLUGIN_DIR = Path(__file__).resolve().parents[1]
ENV_VAR = "SLIDEWISE_PYTHON"
SETTINGS_KEY = "slidewise/engine_python"
DEFAULT_ENGINE_ENV = Path.home() / ".local" / "share" / "slidewise" / "engine-venv"
CANCEL_GRACE_S = 1.0


class EngineJobError(Exception):
    """An engine job failed; the message is meant for the user."""


class EngineUnavailableError(EngineJobError):
    """The engine environment is missing or broken."""


class EngineJobCancelled(EngineJobError):  # noqa: N818 - reads better than ...Error
    """The user cancelled the job and the worker was ended."""


def default_engine_python() -> Path:
    """The interpreter of the engine environment that ``make install`` creates."""
    if sys.platform == "win32":  # pragma: no cover - documented, not tested here
        return DEFAULT_ENGINE_ENV / "Scripts" / "python.exe"
    return DEFAULT_ENGINE_ENV / "bin" / "python"


def engine_python(setting: str | None = None) -> tuple[str, str]:
    """Resolve the engine interpreter.

    Order: the ``SLIDEWISE_PYTHON`` environment variable, the plugin setting,
    then the default environment.

    Returns:
        ``(path, origin)`` where origin says which of the three was used.
    """
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return env, f"environment variable {ENV_VAR}"
    if setting and setting.strip():
        return setting.strip(), "Slidewise settings"
    return str(default_engine_python()), "default engine environment"


def check_python(python: str, origin: str) -> None:
    """Fail with an actionable message when the interpreter does not exist."""
    path = Path(python)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise EngineUnavailableError(
            f"The Slidewise engine Python '{python}' (from the {origin}) was not found. "
            "Run 'make install' in the plugin folder to create the engine environment, "
            f"or set {ENV_VAR} (or Settings > Slidewise) to a Python with the engine's "
            "packages installed."
        )


def python_path_for_engine() -> str:
    """A ``PYTHONPATH`` entry under which ``import slidewise`` finds this plugin.

    When the plugin folder is named ``slidewise`` its parent folder is used;
    otherwise (a development checkout with another name) a small folder with a
    ``slidewise`` link to the plugin is created in the temporary directory.
    """
    if PLUGIN_DIR.name == "slidewise":
        return str(PLUGIN_DIR.parent)
    digest = hashlib.sha1(str(PLUGIN_DIR).encode()).hexdigest()[:10]
    shim = Path(tempfile.gettempdir()) / f"slidewise-shim-{digest}"
    link = shim / "slidewise"
    if not link.exists():
        shim.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(PLUGIN_DIR, target_is_directory=True)
        except FileExistsError:
            pass
    return str(shim)


@dataclass
class JobOutcome:
    """What a finished job returned."""

    outputs: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    manifest: str | None = None
    log: list[str] = field(default_factory=list)


def _pump(stream: Any, sink: queue.Queue[tuple[str, str | None]], tag: str) -> None:
    for raw in iter(stream.readline, ""):
        sink.put((tag, raw.rstrip("\n")))
    sink.put((tag, None))


def run_job(
    job: str,
    params: dict[str, Any],
    options: dict[str, Any] | None = None,
    *,
    python: str | None = None,
    origin: str = "caller",
    on_progress: Callable[[float], None] | None = None,
    on_log: Callable[[str, str], None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    outputs: list[str] | None = None,
    poll_s: float = 0.1,
) -> JobOutcome:
    """Run one engine job in a worker process.

    Args:
        job: Job name (for example ``terrainfactors``).
        params: Job parameters (plain JSON values).
        options: Runtime options (device, seed, deterministic, threads).
        python: Engine interpreter; resolved with :func:`engine_python` when ``None``.
        origin: Where ``python`` came from (for messages).
        on_progress: Called with progress in percent.
        on_log: Called with ``(message, level)``; level is info, warning or debug.
        is_cancelled: Polled; when it returns true the worker is ended.
        outputs: Output paths whose temporary files are removed after a cancel/crash.
        poll_s: Polling interval in seconds.

    Returns:
        The job's outputs, figures and manifest path.

    Raises:
        EngineUnavailableError: the engine environment is missing or broken.
        EngineJobCancelled: the job was cancelled.
        EngineJobError: the job failed; the message says why.
    """
    if python is None:
        python, origin = engine_python()
    check_python(python, origin)
    on_progress = on_progress or (lambda value: None)
    on_log = on_log or (lambda message, level: None)
    is_cancelled = is_cancelled or (lambda: False)

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (python_path_for_engine(), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONHOME", None)
    env.setdefault("MPLBACKEND", "Agg")
    with tempfile.NamedTemporaryFile(
        "w", suffix=".json", prefix="slidewise-job-", delete=False
    ) as handle:
        json.dump({"job": job, "params": params, "options": options or {}}, handle)
        job_file = handle.name
    try:
        proc = subprocess.Popen(
            [python, "-m", "slidewise.engine.worker", job_file],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        os.unlink(job_file)
        raise EngineUnavailableError(
            f"The Slidewise engine Python '{python}' (from the {origin}) could not be started "
            f"({exc}): run 'make install' again or point {ENV_VAR} to a working Python."
        ) from None

    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
    threads = [
        threading.Thread(target=_pump, args=(proc.stdout, lines, "out"), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, lines, "err"), daemon=True),
    ]
    for thread in threads:
        thread.start()

    stderr_tail: deque[str] = deque(maxlen=40)
    outcome = JobOutcome()
    error: dict[str, Any] | None = None
    open_streams = 2
    cancelled = False
    try:
        while open_streams:
            if not cancelled and is_cancelled():
                cancelled = True
                _stop(proc)
            try:
                tag, line = lines.get(timeout=poll_s)
            except queue.Empty:
                continue
            if line is None:
                open_streams -= 1
                continue
            if tag == "err":
                stderr_tail.append(line)
                on_log(line, "debug")
                continue
            message = parse_line(line)
            if message is None:
                on_log(line, "debug")
                continue
            kind = message.get("type")
            if kind == "progress":
                on_progress(float(message.get("value", 0)))
            elif kind == "log":
                text = str(message.get("message", ""))
                outcome.log.append(text)
                on_log(text, str(message.get("level", "info")))
            elif kind == "result":
                outcome.outputs = dict(message.get("outputs") or {})
                outcome.figures = dict(message.get("figures") or {})
                outcome.manifest = message.get("manifest")
            elif kind == "error":
                error = message
        code = proc.wait()
    finally:
        if proc.poll() is None:
            _stop(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        os.unlink(job_file)

    if cancelled:
        for path in outputs or []:
            remove_partials(path)
        raise EngineJobCancelled("The job was cancelled; no output was written.")
    if error is not None:
        raise EngineJobError(str(error.get("message")))
    if code != 0 or (not outcome.outputs and not outcome.figures):
        for path in outputs or []:
            remove_partials(path)
        raise _crash_error(code, list(stderr_tail), python, origin)
    return outcome


def _stop(proc: subprocess.Popen[str]) -> None:
    """End the worker: SIGTERM (it cleans up), then SIGKILL after a grace period."""
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=CANCEL_GRACE_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (OSError, AttributeError):
            proc.kill()
        proc.wait(timeout=5)


def _crash_error(code: int, stderr: list[str], python: str, origin: str) -> EngineJobError:
    text = "\n".join(stderr)
    if "No module named" in text:
        missing = next((ln for ln in reversed(stderr) if "No module named" in ln), "")
        return EngineUnavailableError(
            f"The Slidewise engine environment '{python}' (from the {origin}) is broken: "
            f"{missing.strip()}. Run 'make install' again, or point {ENV_VAR} to a Python "
            "with the engine's packages."
        )
    if code < 0:
        reason = f"was killed by signal {-code}"
        if -code == signal.SIGKILL:
            reason += " (often: out of memory; use a smaller tile, batch or area)"
    else:
        reason = f"stopped with exit code {code}"
    last = stderr[-1].strip() if stderr else "no message"
    return EngineJobError(
        f"The Slidewise engine worker {reason} without a result (last message: {last}). "
        "Nothing was written. See the log for details."
    )
