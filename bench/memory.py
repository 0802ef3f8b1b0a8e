"""Memory and child-process helpers shared by the benchmarks.

Peak memory is only meaningful for a process that did nothing else, so the
memory benchmarks run the measured job in a fresh interpreter
(:func:`run_child`) that prints its figures as one JSON line.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any


def status_mb(key: str) -> float:
    """A ``/proc/self/status`` field in MB (``VmHWM`` peak, ``VmRSS`` now); NaN if absent."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (VmHWM, else getrusage)."""
    peak = status_mb("VmHWM")
    if peak == peak:
        return peak
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / (1024.0 * 1024.0) if sys.platform == "darwin" else value / 1024.0


def rss_mb() -> float:
    """Resident memory of this process now, in MB (NaN where /proc is missing)."""
    return status_mb("VmRSS")


def quiet_context(name: str, threads: int = 0, seed: int = 0) -> Any:
    """A CPU :class:`~slidewise.engine.core.job.JobContext` whose reports are discarded."""
    from slidewise.engine.core.job import JobContext
    from slidewise.engine.core.protocol import Reporter
    from slidewise.engine.core.runtime import RuntimeOptions

    return JobContext(
        name=name,
        options=RuntimeOptions(device="cpu", seed=seed, threads=threads),
        reporter=Reporter(io.StringIO()),
    )


def run_child(module: str, args: list[str]) -> dict[str, Any]:
    """Run ``python -m module args`` and return the JSON object on its last stdout line.

    Raises:
        RuntimeError: the child failed (with the end of its stderr).
    """
    cmd = [sys.executable, "-m", module, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{module} child failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
