"""The engine worker: runs one job and reports over the JSON-lines protocol.

Run as ``python -m slidewise.engine.worker JOB.json`` (or with the job on
standard input). The job file holds ``{"job": name, "params": {...},
"options": {...}}``. The protocol goes to the original standard output; the
worker redirects file descriptor 1 to standard error first, so that anything a
library prints cannot corrupt the protocol.

Exit codes: 0 success, 1 user error, 2 internal error, 3 cancelled (SIGTERM).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import IO, Any

from slidewise.engine import jobs
from slidewise.engine.core.errors import EngineError, ModelFileError
from slidewise.engine.core.job import JobContext
from slidewise.engine.core.manifest import build_manifest, manifest_path, write_manifest
from slidewise.engine.core.protocol import Reporter
from slidewise.engine.core.runtime import RuntimeOptions

EXIT_OK, EXIT_USER, EXIT_INTERNAL, EXIT_CANCELLED = 0, 1, 2, 3


class Cancelled(BaseException):
    """Raised in the worker when the plugin asks it to stop (SIGTERM)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Cancelled()


def protocol_stream() -> IO[str]:
    """Detach the protocol from file descriptor 1 and point fd 1 at stderr."""
    sys.stdout.flush()
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(proto_fd, "w", buffering=1, encoding="utf-8")


def load_job(argv: list[str]) -> dict[str, Any]:
    """Read the job description from a file argument or standard input."""
    text = Path(argv[0]).read_text(encoding="utf-8") if argv else sys.stdin.read()
    job = json.loads(text)
    if not isinstance(job, dict) or "job" not in job:
        raise EngineError("The job description must be a JSON object with a 'job' field.")
    return job


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
            f"'{exc.name or exc}': run 'make install' in the plugin folder, or install the "
            "engine's packages into that environment with pip.",
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m slidewise.engine.worker``."""
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, _on_sigterm)
    reporter = Reporter(protocol_stream())
    started = time.time()
    try:
        job = load_job(argv)
    except (OSError, ValueError, EngineError) as exc:
        reporter.error(f"Could not read the job description: {exc}", kind="internal")
        return EXIT_INTERNAL
    code = run(job, reporter)
    print(f"slidewise worker: job done in {time.time() - started:.2f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
