"""What every engine job is given and returns: its context and its result.

A job is a function ``run(params: dict, ctx: JobContext) -> JobResult``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slidewise.engine.core.protocol import Reporter
from slidewise.engine.core.runtime import RuntimeOptions

#: A log callback: one line of text for the user.
Log = Callable[[str], None]
#: A warning callback: one message about something the user may want to fix.
Warn = Callable[[str], None]
#: A progress callback: the fraction done, 0 to 1.
Progress = Callable[[float], None]


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
