"""The engine worker: runs one job and reports over the JSON-lines protocol.

Run as ``python -m slidewise.engine.worker JOB.json`` (or with the job on
standard input). The job file holds ``{"job": name, "params": {...},
"options": {...}}``. The protocol goes to the original standard output; the
worker redirects file descriptor 1 to standard error first, so that anything a
library prints cannot corrupt the protocol.

The plugin starts the worker in a private folder (so that nothing in QGIS's
working directory lands first on ``sys.path``) and names its own working
directory in ``SLIDEWISE_CALLER_CWD``: the worker moves there once started, so
relative paths of a job keep their meaning. Python warnings of the libraries
become one protocol log line each (:func:`route_warnings`).

Exit codes: 0 success, 1 user error, 2 internal error, 3 cancelled (SIGTERM or
SIGINT, or its parent ended: see :mod:`slidewise.engine.lifeline`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from types import FrameType
from typing import IO, Any

from slidewise.contract.partials import manifest_path
from slidewise.engine import jobs
from slidewise.engine.core.errors import EngineError, ModelFileError
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.manifest import build_manifest, write_manifest
from slidewise.engine.core.placement import DATA_PARALLEL_JOBS, Placement, private_outputs
from slidewise.engine.core.protocol import Reporter
from slidewise.engine.core.runtime import RuntimeOptions
from slidewise.engine.lifeline import Lifeline, exit_now_if_cancelled

EXIT_OK, EXIT_USER, EXIT_INTERNAL, EXIT_CANCELLED = 0, 1, 2, 3
#: Set by the plugin's engine client: the folder relative job paths are meant in.
CALLER_CWD_VAR = "SLIDEWISE_CALLER_CWD"
#: How the last stderr line of a worker ends, by exit code.
ENDINGS = {EXIT_OK: "done", EXIT_CANCELLED: "cancelled", EXIT_USER: "failed"}
WARNING_CHARS = 400


class Cancelled(BaseException):
    """Raised in the worker when it is asked to stop (SIGTERM, SIGINT, parent gone)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Once: a second signal must not interrupt the clean-up of the first.
    for other in (signal.SIGTERM, signal.SIGINT):
        signal.signal(other, signal.SIG_IGN)
    raise Cancelled()


def cancel_on_signals() -> None:
    """SIGTERM (the plugin's Cancel, the parent's end) and SIGINT cancel the job cleanly."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _on_sigterm)


def protocol_stream() -> IO[str]:
    """Detach the protocol from file descriptor 1 and point fd 1 at stderr."""
    sys.stdout.flush()
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(proto_fd, "w", buffering=1, encoding="utf-8")


def warning_line(message: Warning | str, category: type[Warning]) -> str:
    """One log line for a Python warning: ``warning: <category>: <message>``."""
    text = " ".join(str(message).split())
    if len(text) > WARNING_CHARS:
        text = text[: WARNING_CHARS - 3] + "..."
    return f"warning: {category.__name__}: {text}"


def route_warnings(reporter: Reporter) -> None:
    """Send each Python warning as one clean log line (no file name, no source line).

    The usual filters still apply, so a warning from one place is shown once.
    """

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: IO[str] | None = None,
        line: str | None = None,
    ) -> None:
        reporter.log(warning_line(message, category))

    warnings.showwarning = show


def enter_caller_folder() -> None:
    """Move to the caller's working directory, where relative job paths are meant."""
    folder = os.environ.get(CALLER_CWD_VAR, "")
    if folder and os.path.isdir(folder):
        os.chdir(folder)


def load_job(argv: list[str]) -> dict[str, Any]:
    """Read the job description from a file argument or standard input."""
    text = Path(argv[0]).read_text(encoding="utf-8") if argv else sys.stdin.read()
    job = json.loads(text)
    if not isinstance(job, dict) or "job" not in job:
        raise EngineError("The job description must be a JSON object with a 'job' field.")
    return job


def apply_output_options(
    name: str, params: dict[str, Any], result: JobResult, ctx: JobContext
) -> None:
    """Apply the output options the job left to the worker (COG) to its raster outputs."""
    from slidewise.contract.spec import is_unset
    from slidewise.contract.specs import SPEC_MODULES, spec_of

    value = params.get("COG")
    if name not in SPEC_MODULES or "COG" not in spec_of(name).names or is_unset(value):
        return
    if not spec_of(name)["COG"].read(value):
        return
    from slidewise.engine.geo.cog import write_cog

    rasters = {p.name for p in spec_of(name).params if p.kind == "output_raster"}
    for output, path in result.outputs.items():
        if output in rasters and path:
            write_cog(path)
            ctx.log(f"{output} written as a Cloud-Optimized GeoTIFF: {path}")


def run(job: dict[str, Any], reporter: Reporter) -> int:
    """Run one job, reporting progress, logs, the result or an error.

    Returns:
        The process exit code.
    """
    try:
        name = str(job["job"])
        params = dict(job.get("params") or {})
        options = RuntimeOptions.from_dict(job.get("options"))
        func = jobs.resolve(name)
        ctx = JobContext(name=name, options=options, reporter=reporter)
        result = func(params, ctx)
        apply_output_options(name, params, result, ctx)
        payload: dict[str, Any] = {"outputs": result.outputs, "figures": result.figures}
        if result.manifest and result.outputs:
            first = next(iter(result.outputs.values()))
            record = build_manifest(
                algorithm=f"slidewise:{name}",
                parameters=params,
                inputs=result.inputs,
                outputs=result.outputs,
                device=result.device,
                seed=options.seed,
                started=ctx.started,
                figures=result.figures,
            )
            payload["manifest"] = str(write_manifest(manifest_path(first), record))
        reporter.progress(100)
        reporter.result(payload)
        return EXIT_OK
    except Cancelled:
        return EXIT_CANCELLED
    except (EngineError, json.JSONDecodeError) as exc:
        kind = "model" if isinstance(exc, ModelFileError) else "input"
        reporter.error(str(exc), kind=kind)
        return EXIT_USER
    except ImportError as exc:
        traceback.print_exc(file=sys.stderr)
        reporter.error(
            f"The engine environment ({sys.executable}) lacks the package "
            f"'{exc.name or exc}': repair it with Plugins › Slidewise › Set up engine… "
            "(Repair), or install the engine's packages into that environment with pip.",
            kind="environment",
        )
        return EXIT_USER
    except MemoryError:
        reporter.error(
            "The engine ran out of memory: use a smaller tile or batch size, or a smaller area.",
            kind="internal",
        )
        return EXIT_INTERNAL
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        reporter.error(
            f"Internal engine error ({type(exc).__name__}: {exc}). "
            "Please report it with the log of this run.",
            kind="internal",
        )
        return EXIT_INTERNAL


def run_placed(job: dict[str, Any], reporter: Reporter, placement: Placement) -> int:
    """Run ``job`` as one process, or as one process of a ``torchrun`` launch.

    Under ``torchrun`` every process joins the process group and runs the same
    training job; only rank 0 reports over the protocol and writes the user's
    outputs, the others write theirs into a private folder that is removed.

    Returns:
        The process exit code.
    """
    if not placement.parallel:
        return run(job, reporter)
    name = str(job.get("job"))
    if name not in DATA_PARALLEL_JOBS:
        reporter.error(
            f"The {name} job does not train data-parallel: run it without torchrun "
            f"(torchrun runs {', '.join(sorted(DATA_PARALLEL_JOBS))}).",
            kind="input",
        )
        return EXIT_USER
    from slidewise.engine.core.distributed import end_process_group, start_process_group

    device = str((job.get("options") or {}).get("device", "auto"))
    start_process_group(placement, device)
    try:
        if placement.writer:
            return run(job, reporter)
        with tempfile.TemporaryDirectory(prefix="slidewise-rank-") as folder:
            params = private_outputs(name, dict(job.get("params") or {}), folder)
            with open(os.devnull, "w", encoding="utf-8") as quiet:
                return run({**job, "params": params}, Reporter(quiet))
    finally:
        end_process_group()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m slidewise.engine.worker``."""
    argv = sys.argv[1:] if argv is None else argv
    cancel_on_signals()
    lifeline = Lifeline.from_environment(argv)
    try:
        return run_watched(argv, lifeline)
    except Cancelled:  # before or after the job itself
        with contextlib.suppress(OSError):
            print("slidewise worker: job cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        lifeline.clean()


def run_watched(argv: list[str], lifeline: Lifeline) -> int:
    """Read the job and run it while the lifeline watches the parent."""
    reporter = Reporter(protocol_stream())
    route_warnings(reporter)
    enter_caller_folder()
    started = time.time()
    try:
        job = load_job(argv)
    except (OSError, ValueError, EngineError) as exc:
        reporter.error(f"Could not read the job description: {exc}", kind="internal")
        return EXIT_INTERNAL
    lifeline.watch(list(job.get("outputs") or []))
    code = run_placed(job, reporter, Placement.from_environment())
    ending = ENDINGS.get(code, "ended with an internal error")
    with contextlib.suppress(OSError):  # the parent may be gone with the pipe
        seconds = time.time() - started
        print(f"slidewise worker: job {ending} after {seconds:.2f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(exit_now_if_cancelled(main()))
