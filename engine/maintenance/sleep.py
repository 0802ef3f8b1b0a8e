"""The ``sleep`` job: writes an output slowly, so cancellation can be exercised.

An internal job for tests and scripts; it has no Processing algorithm.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from slidewise.contract.specs.sleep import SPEC as SLEEP_SPEC
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.outputs import atomic_output
from slidewise.engine.core.params import JobParams

#: Lines written per second.
STEPS_PER_SECOND = 10


@dataclass(frozen=True)
class SleepParams(JobParams):
    """Parameters of the ``sleep`` job (declared in ``contract/specs/sleep.py``).

    Attributes:
        output: Text file written one line per step.
        seconds: How long the job takes.
    """

    SPEC = SLEEP_SPEC

    output: str = ""
    seconds: float = 5.0


def run_sleep_job(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Write ``OUTPUT`` one line every tenth of a second for ``SECONDS`` seconds."""
    options = SleepParams.from_params(params)
    steps = max(1, int(options.seconds * STEPS_PER_SECOND))
    with atomic_output(options.output) as tmp, open(tmp, "w") as handle:
        for i in range(steps):
            handle.write(f"{i}\n")
            handle.flush()
            ctx.progress(100 * i / steps)
            time.sleep(options.seconds / steps)
    return JobResult(outputs={"OUTPUT": options.output}, manifest=False)
