"""The catalogue of engine jobs and the context each job runs with.

A job is a function ``run(params: dict, ctx: JobContext) -> JobResult``. The
catalogue maps job names (the same names as the Processing algorithms) to
``"module:function"`` strings so that only the chosen job's imports are paid.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slidewise.engine.errors import InputError
from slidewise.engine.protocol import Reporter
from slidewise.engine.runtime import RuntimeOptions

JOBS: dict[str, str] = {
    "checkengine": "slidewise.engine.checkengine:run_job",
    "terrainfactors": "slidewise.engine.terrain:run_job",
    "sleep": "slidewise.engine.checkengine:run_sleep_job",
    # Susceptibility (issue: block-wise few-shot susceptibility)
    "samplefactors": "slidewise.engine.susceptibility:run_sample_factors",
    "segmentblocks": "slidewise.engine.susceptibility:run_segment_blocks",
    "trainsusceptibility": "slidewise.engine.susceptibility:run_train",
    "predictsusceptibility": "slidewise.engine.susceptibility:run_predict",
    "evaluatesusceptibility": "slidewise.engine.susceptibility_eval:run_evaluate",
    # Mapping (issue: segmentation models, seam-free tiled mapping)
    "trainmapping": "slidewise.engine.mapping_train:run_train",
    "maplandslides": "slidewise.engine.mapping:run_map",
    "evaluatemapping": "slidewise.engine.mapping_eval:run_evaluate",
    # Continual per-region decoders and detection (issue: TSMU and detection)
    "addregion": "slidewise.engine.multiregion:run_add_region",
    "pretrainencoder": "slidewise.engine.pretrain:run_pretrain",
    "traindetection": "slidewise.engine.detection_train:run_train",
    "detectlandslides": "slidewise.engine.detection:run_detect",
}


@dataclass
class JobResult:
    """What a job returns.

    Attributes:
        outputs: Output name -> path written.
        figures: Scalar figures and small tables for the user.
        inputs: Input files whose hashes go into the run manifest.
        manifest: Write a manifest next to the first output.
        device: Device the job ran on (for the manifest).
    """

    outputs: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    manifest: bool = True
    device: str = "cpu"


@dataclass
class JobContext:
    """Everything a job may use to talk to the user.

    Attributes:
        name: Job name.
        options: Runtime options (device, seed, determinism).
        reporter: Protocol writer.
        started: Start time (seconds since the epoch).
    """

    name: str
    options: RuntimeOptions
    reporter: Reporter
    started: float = field(default_factory=time.time)

    def progress(self, value: float) -> None:
        """Report overall progress in percent."""
        self.reporter.progress(value)

    def log(self, message: str) -> None:
        """Report a log line."""
        self.reporter.log(message)

    def warn(self, message: str) -> None:
        """Report a warning line."""
        self.reporter.log(message, level="warning")

    def stage(self, start: float, end: float) -> Callable[[float], None]:
        """Return a callback mapping a fraction in [0, 1] to progress in [start, end]."""

        def report(fraction: float) -> None:
            self.reporter.progress(start + (end - start) * min(1.0, max(0.0, fraction)))

        return report


def resolve(name: str) -> Callable[[dict[str, Any], JobContext], JobResult]:
    """Import and return the function of job ``name``.

    Raises:
        InputError: there is no such job.
    """
    target = JOBS.get(name)
    if target is None:
        raise InputError(f"Unknown engine job '{name}': known jobs are {', '.join(sorted(JOBS))}.")
    module_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    func: Callable[[dict[str, Any], JobContext], JobResult] = getattr(module, func_name)
    return func


def require(params: dict[str, Any], *names: str) -> None:
    """Raise a clear error when required parameters are missing."""
    missing = [n for n in names if params.get(n) in (None, "")]
    if missing:
        raise InputError(f"Missing required parameter(s): {', '.join(missing)}.")


def check_known(params: dict[str, Any], known: set[str]) -> None:
    """Raise a clear error for parameters the job does not know."""
    unknown = sorted(set(params) - known)
    if unknown:
        raise InputError(
            f"Unknown parameter(s) {', '.join(unknown)}: this job takes {', '.join(sorted(known))}."
        )


def choice(params: dict[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    """Read a string parameter that must be one of ``allowed``."""
    value = str(params.get(name, default) or default).strip().lower()
    if value not in allowed:
        raise InputError(
            f"Unknown value '{params.get(name)}' for {name}: use one of {', '.join(allowed)}."
        )
    return value
