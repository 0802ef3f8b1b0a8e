"""Resumable runs: a window-by-window job killed half-way continues where it stopped.

A job that writes its raster outputs window by window, in order, can write them
through :func:`resumable_rasters` instead of
:func:`~slidewise.engine.geo.raster.create_raster`. The partial files then get
a name fixed by the run's key (:func:`run_key`: a hash of the job's parameters
and of its inputs' sizes and modification times) instead of a random one, and
a small JSON state file next to them records how many windows are safely on
disk. It is updated at checkpoints (every tenth of the run, at least once a
minute): the datasets are closed (GDAL flushes its blocks and the TIFF
directory) and reopened for update.

* A hard kill (SIGKILL, the machine restarting) leaves the partial files and
  the state. Started again with the same parameters and inputs, the job reopens
  the partials and skips the finished windows ("Resuming from window N of M");
  the windows after the last checkpoint are computed again. The final files
  hold the same values as an uninterrupted run.
* A different key (other parameters, an input changed) starts afresh and says so.
* An error or a Cancel removes the partials and the state, like
  :func:`~slidewise.engine.core.outputs.atomic_output`: the state file follows
  the partial naming rule (:func:`slidewise.contract.partials.partial_glob`), so
  the lifeline and the plugin remove it with the partials.
* Success renames the partials to the outputs and removes the state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slidewise.contract.partials import (
    partial_glob,
    partial_path,
    remove_partials,
    resume_state_path,
)
from slidewise.engine.core.outputs import check_writable

#: Test hook: the job SIGKILLs itself after writing this many windows (tests only).
KILL_AFTER_ENV = "SLIDEWISE_TEST_KILL_AFTER_WINDOWS"
#: Checkpoints per run (at least), and the longest time between two.
CHECKPOINTS = 10
CHECKPOINT_SECONDS = 60.0
#: Parameters that choose where a run computes, not what it writes (left out of the key).
SCALE_OUT_FIELDS = ("workers", "scheduler")


def run_key(options: Any, inputs: Sequence[str], ignore: Sequence[str] = ()) -> str:
    """A hash of a job's parameters (a dataclass) and of its input files' sizes and times.

    Args:
        options: The job's parameters.
        inputs: Input paths (missing ones and non-files count by name only).
        ignore: Fields that do not change the outputs (e.g. ``workers``).
    """
    params = {k: v for k, v in dataclasses.asdict(options).items() if k not in ignore}
    files = []
    for path in inputs:
        p = Path(path)
        stat = p.stat() if p.is_file() else None
        files.append(
            [str(p.resolve()), stat.st_size if stat else 0, stat.st_mtime_ns if stat else 0]
        )
    text = json.dumps({"params": params, "inputs": files}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def state_path(output: str | os.PathLike[str]) -> Path:
    """The state file of a resumable run writing ``output``: ``.<stem>.partial-resume.json``."""
    return resume_state_path(output)


@dataclass(frozen=True)
class ResumeRequest:
    """Ask a window-by-window writer to make its run resumable.

    Attributes:
        key: The run's key (:func:`run_key`).
        log: Where to say that the run resumes or starts afresh.
    """

    key: str
    log: Callable[[str], None]


@dataclass
class Checkpoints:
    """Where a resumable run stands: windows on disk, and the job's own running figures.

    Attributes:
        outputs: Final output paths (the state lives next to the first).
        key: The run's key (:func:`run_key`).
        total: Windows of the run.
        done: Windows written and checkpointed (the run resumes after them).
        extra: The job's running figures at the last checkpoint (JSON-able).
    """

    outputs: list[str]
    key: str
    total: int
    done: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    key_token: str = ""
    saved_at: float = field(default_factory=time.monotonic, repr=False)

    @classmethod
    def start(
        cls, outputs: Sequence[str], key: str, total: int, log: Callable[[str], None]
    ) -> Checkpoints:
        """The state of an earlier run with this key, or a fresh start (stale partials removed)."""
        run = cls([str(p) for p in outputs], key, total)
        state = state_path(run.outputs[0])
        try:
            saved = json.loads(state.read_text())
        except (OSError, ValueError):
            saved = None
        partials_exist = all(run.partial(p).is_file() for p in run.outputs)
        if saved and saved.get("key") == key and saved.get("total") == total and partials_exist:
            run.done, run.extra = int(saved.get("done", 0)), dict(saved.get("extra", {}))
            log(f"Resuming a stopped run: from window {run.done + 1} of {total}.")
            return run
        if saved is not None or any(Path(o).parent.glob(partial_glob(o)) for o in run.outputs):
            log(
                "Partial files of another run (other parameters or inputs) were found next to "
                "the output: starting afresh."
            )
        for output in run.outputs:
            remove_partials(output)
        return run

    @classmethod
    def disabled(cls, outputs: Sequence[str], total: int) -> Checkpoints:
        """A run that is not resumable: random partial names, no checkpoint."""
        import uuid

        return cls([str(p) for p in outputs], "", total, key_token=uuid.uuid4().hex[:12])

    def partial(self, output: str) -> Path:
        """The partial file of ``output`` for this run (named by the key)."""
        return partial_path(output, self.key_token or self.key[:12])

    def due(self, written: int) -> bool:
        """True when a checkpoint is due after ``written`` windows (never when not resumable)."""
        if not self.key:
            return False
        every = max(1, self.total // CHECKPOINTS)
        late = time.monotonic() - self.saved_at >= CHECKPOINT_SECONDS
        return written < self.total and (written % every == 0 or late)

    def save(self, written: int, extra: dict[str, Any]) -> None:
        """Record ``written`` windows as on disk (call after the data is flushed)."""
        self.done, self.extra, self.saved_at = written, extra, time.monotonic()
        state = state_path(self.outputs[0])
        tmp = state.with_name(state.name + ".tmp")
        doc = {"key": self.key, "total": self.total, "done": written, "extra": extra}
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, state)


def kill_if_asked(written: int) -> None:
    """The test hook: SIGKILL this process after :data:`KILL_AFTER_ENV` windows."""
    after = os.environ.get(KILL_AFTER_ENV)
    if after and written == int(after):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class ResumableRasters:
    """The open partial rasters of a resumable run.

    Attributes:
        run: The run's checkpoints.
        specs: ``(final path, rasterio profile, band names)`` of each output.
        datasets: The open datasets, in the order of ``specs``.
    """

    run: Checkpoints
    specs: list[tuple[str, dict[str, Any], list[str]]]
    datasets: list[Any] = field(default_factory=list)

    def open(self, fresh: bool) -> None:
        """Create the partial files (``fresh``) or reopen them for update."""
        import rasterio

        self.datasets = []
        for path, profile, names in self.specs:
            tmp = self.run.partial(path)
            if fresh:
                dst = rasterio.open(tmp, "w", **profile)
                for i, name in enumerate(names, start=1):
                    dst.set_band_description(i, name)
            else:
                dst = rasterio.open(tmp, "r+")
            self.datasets.append(dst)

    def write(self, window: Any, *arrays: Any) -> None:
        """Write ``arrays[i]`` (rows, cols) to output ``i`` at ``window`` (extra arrays ignored)."""
        for dst, array in zip(self.datasets, arrays, strict=False):
            dst.write(array[None], window=window)

    def close(self) -> None:
        """Close the datasets (GDAL writes every block and the TIFF directory)."""
        for dst in self.datasets:
            dst.close()
        self.datasets = []

    def written(self, count: int, extra: Callable[[], dict[str, Any]]) -> None:
        """``count`` windows are written: checkpoint when due; the test hook may kill here."""
        if self.run.due(count):
            self.close()
            self.run.save(count, extra())
            self.open(fresh=False)
        kill_if_asked(count)


@contextlib.contextmanager
def resumable_rasters(
    run: Checkpoints, specs: Sequence[tuple[str, dict[str, Any], list[str]]]
) -> Iterator[ResumableRasters]:
    """Open the partial rasters of ``run`` (created, or reopened when resuming).

    On success the partials become the outputs and the state is removed; on an
    error or a cancel both are removed (a hard kill leaves them, to resume).
    """
    for path, _, _ in specs:
        check_writable(path)
    rasters = ResumableRasters(run, [(str(p), dict(pr), list(n)) for p, pr, n in specs])
    try:
        import warnings

        from rasterio.errors import NotGeoreferencedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            rasters.open(fresh=run.done == 0)
            yield rasters
        rasters.close()
    except BaseException:
        rasters.close()
        for path, _, _ in rasters.specs:
            remove_partials(path)
        raise
    for path, _, _ in rasters.specs:
        os.replace(run.partial(path), path)
    with contextlib.suppress(OSError):
        state_path(run.outputs[0]).unlink()
