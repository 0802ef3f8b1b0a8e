"""The worker ends with its parent: QGIS or ``qgis_process`` gone means the job is over.

The plugin's engine client starts the worker with ``SLIDEWISE_PARENT_PID`` set to
its own process id and with a standard input pipe it never writes to. Whatever
ends the parent (SIGTERM, SIGINT, SIGKILL, a crash), three things notice it:

- on Linux the kernel sends the worker SIGTERM (``prctl(PR_SET_PDEATHSIG)``);
- the worker's standard input reaches its end (the parent's end of the pipe closed);
- the worker's parent process id changes (it was adopted by init or a subreaper).

Each of these makes the worker cancel its job as the Cancel button would: SIGTERM
to itself, whose handler raises ``Cancelled`` in the job, so that
:func:`~slidewise.engine.core.outputs.atomic_output` removes the partial files. If the
job does not end within :data:`FORCE_EXIT_S` (stuck in a long native call), the
watchdog removes the partial files of the job's outputs and the job folder itself
and ends the process. A worker started by hand (no ``SLIDEWISE_PARENT_PID``)
is not watched.

Linux sends the death signal when the *thread* that started the worker ends; the
engine client's ``run_job`` waits for the worker in that thread, so the two agree.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

from slidewise.contract.partials import remove_partials

#: Set by the plugin's engine client: the process id the worker must outlive not.
PARENT_PID_VAR = "SLIDEWISE_PARENT_PID"
#: The job folders the engine client creates (``tempfile.mkdtemp(prefix=...)``).
JOB_FOLDER_PREFIX = "slidewise-job-"
PR_SET_PDEATHSIG = 1
POLL_S = 0.1
#: Seconds the job has to end by itself after its parent went, before it is cut short.
FORCE_EXIT_S = 1.0
EXIT_CANCELLED = 3


def ask_kernel_for_sigterm() -> bool:
    """On Linux, have the kernel send SIGTERM to this process when its parent ends.

    Returns:
        Whether the request was accepted (always false on other systems).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


@dataclass
class Lifeline:
    """Ties this worker to the process that started it.

    Attributes:
        parent: The parent's process id (``None``: started by hand, not watched).
        job_file: The job file; its private folder is removed when the worker ends.
        outputs: Output paths whose partial files are removed on a forced exit.
    """

    parent: int | None
    job_file: str | None = None
    outputs: list[str] = field(default_factory=list)
    _ending: threading.Event = field(default_factory=threading.Event, repr=False)

    @classmethod
    def from_environment(cls, argv: list[str]) -> Lifeline:
        """The lifeline named by ``SLIDEWISE_PARENT_PID``; asks the kernel for SIGTERM."""
        text = os.environ.get(PARENT_PID_VAR, "").strip()
        parent = int(text) if text.isdigit() else None
        if parent is not None:
            ask_kernel_for_sigterm()
        return cls(parent=parent, job_file=argv[0] if argv else None)

    def parent_gone(self) -> bool:
        """True when the worker was started by a parent that has ended since."""
        return self.parent is not None and os.getppid() != self.parent

    def watch(self, outputs: list[str]) -> None:
        """Start the watchdog threads (no-op when not started by the engine client)."""
        self.outputs = [str(path) for path in outputs]
        if self.parent is None:
            return
        threading.Thread(target=self._watch_parent, name="lifeline-ppid", daemon=True).start()
        threading.Thread(target=self._watch_stdin, name="lifeline-stdin", daemon=True).start()

    def _watch_parent(self) -> None:
        while not self._ending.is_set():
            if self.parent_gone():
                self.end()
                return
            time.sleep(POLL_S)

    def _watch_stdin(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while os.read(0, 4096):
                pass
        self.end()

    def end(self) -> None:
        """Cancel the job (SIGTERM to itself); cut it short if it does not end in time."""
        if self._ending.is_set():
            return
        self._ending.set()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(FORCE_EXIT_S)
        self.clean()
        os._exit(EXIT_CANCELLED)

    def clean(self) -> None:
        """Remove partial outputs (after a forced end) and the private job folder."""
        if self._ending.is_set():
            for path in self.outputs:
                remove_partials(path)
        self.remove_job_folder()

    def remove_job_folder(self) -> None:
        """Remove the job file's private folder (only one the engine client made)."""
        if self.parent is None or not self.job_file:
            return
        folder = os.path.dirname(os.path.abspath(self.job_file))
        if os.path.basename(folder).startswith(JOB_FOLDER_PREFIX):
            shutil.rmtree(folder, ignore_errors=True)


def exit_now_if_cancelled(code: int) -> int:
    """End a cancelled worker at once, skipping the interpreter's teardown.

    Tearing down torch and the other libraries takes seconds after a cancel; a
    cancelled job has nothing left to finish (its partial files and job folder
    are gone by now), so the process ends here. Other codes are returned.
    """
    if code == EXIT_CANCELLED:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    return code
