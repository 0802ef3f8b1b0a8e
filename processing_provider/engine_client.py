"""Run engine jobs in a separate Python process and relay what they report.

This module needs neither QGIS nor the engine's packages, and it does not import
``slidewise.engine`` (importing the engine configures GDAL for the engine's own
process): the protocol parser and the partial-file naming rule come from
:mod:`slidewise.contract`, which both sides share. The Processing
algorithms call :func:`run_job` with :class:`JobCallbacks` that forward progress
and log lines to ``QgsProcessingFeedback``, and tests can call it directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slidewise.contract.checkpoints import checkpoint_epochs
from slidewise.contract.partials import (
    FileStamp,
    output_stamps,
    remove_partials,
    remove_unfinished_outputs,
    resumable,
)
from slidewise.contract.protocol import parse_line

PLUGIN_DIR = Path(__file__).resolve().parents[1]
ENV_VAR = "SLIDEWISE_PYTHON"
SETTINGS_KEY = "slidewise/engine_python"
DEFAULT_ENGINE_ENV = Path.home() / ".local" / "share" / "slidewise" / "engine-venv"
CANCEL_GRACE_S = 1.0
CALLER_CWD_VAR = "SLIDEWISE_CALLER_CWD"
#: Tells the worker whom to outlive not (``slidewise.engine.lifeline``; same name there).
PARENT_PID_VAR = "SLIDEWISE_PARENT_PID"
#: Where a user sets up the engine (the same words in every message).
SETUP_HINT = (
    "Set up the engine with Plugins › Slidewise › Set up engine… (or the Processing "
    "algorithm Slidewise › Engine › Set up engine)"
)
SETTINGS_HINT = "Plugins › Slidewise › Settings…"
TERMINATED_MESSAGE = (
    "Slidewise: the run was ended by SIGTERM; the engine worker was stopped and no "
    "output was written."
)
TERMINATED_AFTER_RESULT_MESSAGE = (
    "Slidewise: the run was ended by SIGTERM after its job had finished; the job's "
    "outputs were written."
)
INTERRUPTED_MESSAGE = "The job was cancelled (Ctrl-C); no output was written."


class EngineJobError(Exception):
    """An engine job failed; the message is meant for the user."""


class EngineUnavailableError(EngineJobError):
    """The engine environment is missing or broken."""


class EngineJobCancelled(EngineJobError):  # noqa: N818 - reads better than ...Error
    """The user cancelled the job and the worker was ended."""


def default_engine_python() -> Path:
    """The interpreter of the default engine environment (the one *Set up engine* creates)."""
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
            f"{SETUP_HINT} to create the engine environment, or set {ENV_VAR} (or "
            f"{SETTINGS_HINT}) to a Python with the engine's packages installed."
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


def _no_progress(value: float) -> None:
    """Default progress callback: ignore it."""


def _no_log(message: str, level: str) -> None:
    """Default log callback: ignore it."""


def _never_cancelled() -> bool:
    """Default cancel check: never."""
    return False


def _no_start(pid: int) -> None:
    """Default start callback: ignore the worker's process id."""


@dataclass(frozen=True)
class JobCallbacks:
    """How a running job reports back to its caller.

    Attributes:
        on_progress: Called with progress in percent.
        on_log: Called with ``(message, level)``; level is info, warning or debug.
        is_cancelled: Polled; when it returns true the worker is ended.
        poll_s: Polling interval of ``is_cancelled``, in seconds.
        on_start: Called with the worker's process id once it is started.
    """

    on_progress: Callable[[float], None] = _no_progress
    on_log: Callable[[str, str], None] = _no_log
    is_cancelled: Callable[[], bool] = _never_cancelled
    poll_s: float = 0.1
    on_start: Callable[[int], None] = _no_start


@dataclass
class StopRequest:
    """A stop asked of the caller's process by a signal while a job runs.

    Attributes:
        signum: SIGINT (cancels like the Cancel button) or SIGTERM (ends the run).
    """

    signum: int | None = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """While a job runs in the main thread, SIGINT and SIGTERM stop it cleanly.

    The handlers only record the signal (the relay loop then stops the worker);
    the previous handlers come back afterwards. A signal the process ignores
    (SIGINT of a background job) stays ignored. Off the main thread (QGIS runs
    algorithms in tasks) nothing is installed: the worker's lifeline covers that.
    """
    request = StopRequest()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def record(signum: int, frame: Any) -> None:
            request.signum = request.signum or signum

        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                with contextlib.suppress(ValueError, OSError):  # not the main interpreter
                    previous[signum] = signal.signal(signum, record)
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)


@dataclass
class WorkerRun:
    """What the relay loop gathered from a worker.

    Attributes:
        outcome: Outputs, figures, manifest and log lines of the job.
        stderr_tail: The last lines of the worker's stderr (for crash messages).
        error: The worker's error message, if it sent one.
        cancelled: The caller cancelled the job and the worker was stopped.
        interrupted: The cancel came from Ctrl-C (SIGINT).
        finished: The worker sent its result (a cancel after that is too late: ignored).
        code: The worker's exit status.
    """

    outcome: JobOutcome = field(default_factory=JobOutcome)
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    error: dict[str, Any] | None = None
    cancelled: bool = False
    interrupted: bool = False
    finished: bool = False
    code: int = 0


def run_job(
    job: str,
    params: dict[str, Any],
    options: dict[str, Any] | None = None,
    *,
    python: str | None = None,
    origin: str = "caller",
    callbacks: JobCallbacks | None = None,
    outputs: list[str] | None = None,
    kept: list[str] | None = None,
) -> JobOutcome:
    """Run one engine job in a worker process.

    Args:
        job: Job name (for example ``terrainfactors``).
        params: Job parameters (plain JSON values).
        options: Runtime options (device, seed, deterministic, threads).
        python: Engine interpreter; resolved with :func:`engine_python` when ``None``.
        origin: Where ``python`` came from (for messages).
        callbacks: Progress, log and cancel callbacks; none are called when ``None``.
        outputs: Output paths whose temporary files are removed after a cancel/crash,
            with the outputs the run created or replaced without finishing.
        kept: Outputs among ``outputs`` that are whole after every step of the job (a
            checkpoint, an inventory): a stopped run keeps them (their partials go).

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
    callbacks = callbacks or JobCallbacks()
    stamps = output_stamps([path for path in outputs or [] if path not in (kept or [])])
    job_file = write_job_file(job, params, options, outputs)
    with stop_on_signals() as request:
        try:
            proc = start_worker(python, origin, job_file)
            callbacks.on_start(proc.pid)
            try:
                run = relay(proc, callbacks, request)
            finally:
                close_worker(proc)
        finally:
            remove_job_file(job_file)
    note = "" if run.finished or run.error else kept_checkpoint_note(job, params)
    if request.signum == signal.SIGTERM:
        end_terminated(outputs or [], written=run.finished, note=note, stamps=stamps)
    try:
        return finish(run, outputs or [], python, origin, stamps)
    except EngineJobError as exc:
        if not note:
            raise
        raise type(exc)(f"{exc} {note}") from None


def kept_checkpoint_note(job: str, params: dict[str, Any]) -> str:
    """After a crash or a cancel: the training checkpoint that remains, and how to resume.

    A checkpoint is not a partial output: it is written whole after each epoch so that
    a training that ends early can go on. ``""`` when the job has no checkpoint file.
    """
    from slidewise.contract.specs import SPEC_MODULES, spec_of

    path = str(params.get("CHECKPOINT") or "")
    epochs = checkpoint_epochs(path) if path else None
    if epochs is None or job not in SPEC_MODULES or "RESUME" not in spec_of(job).names:
        return ""
    label = spec_of(job)["RESUME"].label
    return (
        f"The checkpoint '{path}' remains, with {epochs} epoch(s) done: to go on from it, "
        f"run the same command again with RESUME=true (in the dialog: tick '{label}' under "
        "Advanced parameters); delete it to start again from the beginning."
    )


def end_terminated(
    outputs: list[str],
    written: bool = False,
    note: str = "",
    stamps: dict[str, FileStamp | None] | None = None,
) -> None:
    """After SIGTERM stopped a job: say so, then end as SIGTERM would have.

    The worker is gone and the job folder removed by now; the partial outputs
    go here. The message goes straight to standard error (``qgis_process``
    prints nothing for a signal), then SIGTERM is raised again under the
    previous handler, so that a batch scheduler sees the usual status 143.

    Args:
        outputs: The job's output paths.
        written: The job had sent its result before the signal: its outputs stay.
        note: What else remains (a training checkpoint), added to the message.
        stamps: The outputs as they were before the run: what it renamed into place
            without finishing goes too (:func:`remove_unfinished_outputs`).

    Raises:
        EngineJobCancelled: when the process survives its previous handler.
    """
    if not written:
        remove_unfinished(outputs, stamps)
    message = TERMINATED_AFTER_RESULT_MESSAGE if written else TERMINATED_MESSAGE
    message = f"{message} {note}" if note else message
    with contextlib.suppress(OSError):
        os.write(2, f"{message}\n".encode())
    if threading.current_thread() is threading.main_thread():
        signal.raise_signal(signal.SIGTERM)
    raise EngineJobCancelled(message)


def worker_environment() -> dict[str, str]:
    """The worker's environment: this plugin on ``PYTHONPATH``, unbuffered, no ``PYTHONHOME``.

    ``SLIDEWISE_CALLER_CWD`` tells the worker the caller's working directory, in
    which relative paths of the job are meant (the worker itself starts in its
    job folder, see :func:`start_worker`).
    """
    env = dict(os.environ)
    inherited = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p not in ("", ".")]
    env["PYTHONPATH"] = os.pathsep.join([python_path_for_engine(), *inherited])
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONHOME", None)
    env.setdefault("MPLBACKEND", "Agg")
    env[PARENT_PID_VAR] = str(os.getpid())
    try:
        env[CALLER_CWD_VAR] = os.getcwd()
    except OSError:  # the caller's folder was deleted: relative paths mean nothing
        env.pop(CALLER_CWD_VAR, None)
    return env


def write_job_file(
    job: str,
    params: dict[str, Any],
    options: dict[str, Any] | None,
    outputs: list[str] | None = None,
) -> str:
    """Write the job description into a new private folder; return the file's path.

    The folder is the worker's working directory (:func:`start_worker`), so it
    holds nothing but the job file. ``outputs`` tells the worker which partial
    files to remove if it has to end abruptly after its parent went.
    """
    folder = tempfile.mkdtemp(prefix="slidewise-job-")
    path = os.path.join(folder, "job.json")
    description = {"job": job, "params": params, "options": options or {}}
    description["outputs"] = list(outputs or [])
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(description, handle)
    return path


def remove_job_file(job_file: str) -> None:
    """Remove the job file and the private folder :func:`write_job_file` made for it."""
    folder = os.path.dirname(job_file)
    if os.path.basename(folder).startswith("slidewise-job-"):
        shutil.rmtree(folder, ignore_errors=True)
    elif os.path.exists(job_file):
        os.unlink(job_file)


def start_worker(python: str, origin: str, job_file: str) -> subprocess.Popen[str]:
    """Start the worker on ``job_file`` in its own session, stdout and stderr piped.

    Its standard input is a pipe this process never writes to: when this process
    ends, however it ends, the worker reads the pipe's end and stops
    (``slidewise.engine.lifeline``). Its own session keeps a terminal's Ctrl-C
    away from it: the caller turns Ctrl-C into a clean cancel (:func:`stop_on_signals`).

    ``python -m`` puts the working directory first on ``sys.path``, so the worker
    starts in the job file's private folder: a stray ``inspect.py`` or
    ``json.py`` in QGIS's working directory cannot shadow the standard library.

    Raises:
        EngineUnavailableError: the interpreter could not be started.
    """
    try:
        return subprocess.Popen(
            [python, "-m", "slidewise.engine.worker", job_file],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=worker_environment(),
            cwd=os.path.dirname(job_file),
            start_new_session=True,
        )
    except OSError as exc:
        raise EngineUnavailableError(
            f"The Slidewise engine Python '{python}' (from the {origin}) could not be started "
            f"({exc}). {SETUP_HINT} and choose Repair, or point {ENV_VAR} to a working Python."
        ) from None


def _pump(stream: Any, sink: queue.Queue[tuple[str, str | None]], tag: str) -> None:
    for raw in iter(stream.readline, ""):
        sink.put((tag, raw.rstrip("\n")))
    sink.put((tag, None))


def drain_streams(proc: subprocess.Popen[str]) -> queue.Queue[tuple[str, str | None]]:
    """Read stdout and stderr concurrently (so neither pipe fills up) into one queue.

    Each item is ``(tag, line)`` with tag ``out`` or ``err``; ``line`` is ``None``
    once that stream has ended.
    """
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
    for stream, tag in ((proc.stdout, "out"), (proc.stderr, "err")):
        threading.Thread(target=_pump, args=(stream, lines, tag), daemon=True).start()
    return lines


def relay(
    proc: subprocess.Popen[str], callbacks: JobCallbacks, request: StopRequest | None = None
) -> WorkerRun:
    """Relay the worker's messages until both its streams end, stopping it on cancel.

    Args:
        proc: The worker.
        callbacks: Where progress and logs go; ``is_cancelled`` is polled.
        request: Set by a signal to the caller (:func:`stop_on_signals`): stops too.

    Returns:
        What the worker reported, and its exit status.
    """
    lines = drain_streams(proc)
    run = WorkerRun()
    request = request or StopRequest()
    open_streams = 2
    while open_streams:
        stop = request.signum is not None or callbacks.is_cancelled()
        if not run.cancelled and not run.finished and stop:
            run.interrupted = request.signum == signal.SIGINT
            run.cancelled = True
            _stop(proc)
        try:
            tag, line = lines.get(timeout=callbacks.poll_s)
        except queue.Empty:
            continue
        if line is None:
            open_streams -= 1
        elif tag == "err":
            run.stderr_tail.append(line)
            callbacks.on_log(line, "debug")
        else:
            relay_line(line, run, callbacks)
    run.code = proc.wait()
    return run


def relay_line(line: str, run: WorkerRun, callbacks: JobCallbacks) -> None:
    """Handle one stdout line: a protocol message, or stray output logged as debug."""
    message = parse_line(line)
    if message is None:
        callbacks.on_log(line, "debug")
        return
    kind = message.get("type")
    if kind == "progress":
        callbacks.on_progress(float(message.get("value", 0)))
    elif kind == "log":
        text = str(message.get("message", ""))
        run.outcome.log.append(text)
        callbacks.on_log(text, str(message.get("level", "info")))
    elif kind == "result":
        run.outcome.outputs = dict(message.get("outputs") or {})
        run.outcome.figures = dict(message.get("figures") or {})
        run.outcome.manifest = message.get("manifest")
        run.finished = True
    elif kind == "error":
        run.error = message


def close_worker(proc: subprocess.Popen[str]) -> None:
    """Stop the worker if it still runs, and close its pipes."""
    if proc.poll() is None:
        _stop(proc)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def finish(
    run: WorkerRun,
    outputs: list[str],
    python: str,
    origin: str,
    stamps: dict[str, FileStamp | None] | None = None,
) -> JobOutcome:
    """The job's outcome, or the error it ended with (what it left unfinished removed).

    Args:
        run: What the worker reported.
        outputs: The job's output paths.
        python: The engine interpreter (for messages).
        origin: Where ``python`` came from (for messages).
        stamps: The outputs as they were before the run (:func:`output_stamps`).

    Raises:
        EngineJobCancelled: the job was cancelled.
        EngineJobError: the job sent an error, or the worker ended without a result.
    """
    if run.cancelled:
        remove_unfinished(outputs, stamps)
        if run.interrupted:
            raise EngineJobCancelled(INTERRUPTED_MESSAGE)
        raise EngineJobCancelled("The job was cancelled; no output was written.")
    if run.error is not None:
        remove_unfinished(outputs, stamps)
        raise EngineJobError(str(run.error.get("message")))
    outcome = run.outcome
    if run.code != 0 or (not outcome.outputs and not outcome.figures):
        if not resumable(outputs):  # a killed resumable run keeps them, to resume
            remove_unfinished(outputs, stamps)
        raise _crash_error(run.code, list(run.stderr_tail), python, origin)
    return outcome


def remove_unfinished(outputs: list[str], stamps: dict[str, FileStamp | None] | None) -> None:
    """Remove the partial files of ``outputs`` and what the run renamed into place.

    A run that did not send its result wrote nothing: an output it completed just
    before the stop, without its manifest, goes as well as the partial files.
    """
    for path in outputs:
        remove_partials(path)
    if stamps is not None:
        remove_unfinished_outputs(stamps)


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
            f"{missing.strip()}. {SETUP_HINT} and choose Repair, or point {ENV_VAR} to a "
            "Python with the engine's packages."
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
