"""Window-parallel jobs on a Dask cluster: a local one, or the user's scheduler.

A job that processes a raster window by window can hand its windows to Dask
(``dask.distributed``) instead of computing them in its own process:
:func:`dask_client` starts a local cluster of ``WORKERS`` processes (one thread
each) or connects to the scheduler at ``SCHEDULER``, and
:func:`ordered_results` submits one task per window and gives the results back
in window order, with a bounded number of windows in flight, so that the job's
process stays the one writer of the outputs and its memory stays bounded.

A task is a picklable callable: it carries paths and settings, not open files
or loaded models, and opens what it needs once per worker process (see the
window tasks of the jobs). Workers therefore read the inputs themselves: the
paths must be readable from every worker (a local path for a local cluster; a
network share, ``/vsicurl/`` or ``/vsis3/`` path for a remote one).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from slidewise.engine.core.errors import InputError

#: Windows in flight per worker: enough to keep each busy while results are written.
IN_FLIGHT_PER_WORKER = 2
#: Seconds a closing local cluster waits for its workers.
CLOSE_TIMEOUT_S = 5
#: Seconds a cancelled job's local cluster gets to close before its workers are killed.
CANCEL_TIMEOUT_S = 0.5
#: Seconds to wait for a remote scheduler before giving up.
CONNECT_TIMEOUT_S = 20
#: Tasks per worker a job aims at at least (load balance at the end of the run).
TASKS_PER_WORKER = 8
#: Environment Dask's nanny sets on its workers that the local cluster leaves out.
#: ``MALLOC_TRIM_THRESHOLD_`` fixes glibc's mmap threshold at 128 KiB: every array of
#: a window (and every activation of the model) is then mapped and unmapped afresh,
#: which cost 0.5 -> 4.6 s of system time in a 9-megapixel prediction (37 % more
#: CPU than the one-process path). Workers allocate like the job's process instead.
WORKER_ENV_UNSET = ("MALLOC_TRIM_THRESHOLD_",)


@dataclass(frozen=True)
class ClusterOptions:
    """Where a window-parallel job computes (the WORKERS and SCHEDULER parameters).

    Attributes:
        workers: Local worker processes; 1 keeps the one-process path.
        scheduler: Address of an existing ``dask.distributed`` scheduler
            (``tcp://host:8786``); when set, ``workers`` is ignored.
        timeout_s: Seconds to wait for the scheduler before giving up.
    """

    workers: int = 1
    scheduler: str | None = None
    timeout_s: float = CONNECT_TIMEOUT_S

    @property
    def parallel(self) -> bool:
        """True when the windows go to Dask."""
        return bool(self.scheduler) or self.workers > 1


@contextlib.contextmanager
def dask_client(options: ClusterOptions, log: Callable[[str], None] = print) -> Iterator[Any]:
    """A Dask client on a local cluster of ``options.workers`` processes, or ``options.scheduler``.

    The local cluster (and the client) close when the block ends, also on
    cancel or error, so no worker process outlives the job.

    Raises:
        InputError: the scheduler cannot be reached.
    """
    import dask
    from distributed import Client, LocalCluster

    if options.scheduler:
        try:
            client = Client(options.scheduler, timeout=options.timeout_s)
        except OSError as exc:
            raise InputError(
                f"Could not reach the Dask scheduler at {options.scheduler} ({exc}): check the "
                "address (tcp://host:8786) and that the scheduler runs, or leave SCHEDULER "
                "empty to compute on this machine."
            ) from exc
        with client:
            log(f"Computing on the Dask cluster at {options.scheduler}.")
            yield client
        return
    before = set(multiprocessing.active_children())
    try:  # a cancel can come while the workers start
        with dask.config.set(worker_environment()):
            cluster = LocalCluster(
                n_workers=options.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        client = Client(cluster)
    except BaseException:
        end_processes(set(multiprocessing.active_children()) - before)
        raise
    try:
        log(f"Computing on a local Dask cluster of {options.workers} worker processes.")
        yield client
    except BaseException:  # cancel or error: stop the workers at once, then close
        hold_restarts(cluster)
        end_processes(set(multiprocessing.active_children()) - before)
        shut_down(client, cluster, before, CANCEL_TIMEOUT_S)
        raise
    shut_down(client, cluster, before, CLOSE_TIMEOUT_S)


def worker_environment() -> dict[str, Any]:
    """Dask settings of a local cluster's worker processes (see :data:`WORKER_ENV_UNSET`).

    Also, as nobody watches a job's local cluster on a dashboard: no statistical
    profiler in the workers, and slower watchdogs (memory checks, host samples,
    event-loop ticks). An idle 2-worker cluster then costs 1.2 % of a core instead
    of 5 % (job's process 0.7 %, each worker 0.3 %).

    One thread per library (OpenMP, MKL, OpenBLAS) stays, as Dask sets it: a worker
    is one thread, PyTorch's too (set by the tasks).
    """
    key = "distributed.nanny.pre-spawn-environ"
    settings: dict[str, Any] = {f"{key}.{name}": None for name in WORKER_ENV_UNSET}
    settings["distributed.worker.profile.enabled"] = False  # samples every 10 ms
    settings["distributed.worker.memory.monitor-interval"] = "1s"  # 100 ms
    settings["distributed.admin.system-monitor.interval"] = "2s"  # 500 ms
    settings["distributed.admin.tick.interval"] = "500ms"  # event-loop watchdog, 20 ms
    return settings


def tasks_for(items: int, workers: int, per_task: int) -> int:
    """Items per task: at most ``per_task``, and at least :data:`TASKS_PER_WORKER` tasks a worker.

    Tasks of the same size in a long queue end together: the last worker to
    finish waits for at most one small task, not for a large one.
    """
    balanced = -(-items // max(1, workers * TASKS_PER_WORKER))
    return max(1, min(per_task, balanced))


def hold_restarts(cluster: Any) -> None:
    """Tell a local cluster's nannies not to restart the workers that are about to be ended.

    A nanny restarts a worker process that exits while it runs: after a cancel
    ended the workers, it started a new one that outlived the job when the close
    timed out (seen with the detector route on a loaded machine). A nanny
    closing gracefully closes itself instead.
    """
    from distributed.core import Status

    for nanny in list(getattr(cluster, "workers", {}).values()):
        with contextlib.suppress(Exception):
            nanny.status = Status.closing_gracefully


def shut_down(client: Any, cluster: Any, before: set[Any], timeout_s: float) -> None:
    """Close the client and the local cluster, then end any worker process still running.

    ``before`` holds the child processes that existed before the cluster started.
    """
    with contextlib.suppress(Exception):
        client.close(timeout=timeout_s)
    with contextlib.suppress(Exception):
        cluster.close(timeout=timeout_s)
    end_processes(set(multiprocessing.active_children()) - before)


def end_processes(processes: Iterable[Any], grace_s: float = 0.3) -> None:
    """Terminate worker processes a closed cluster left running (e.g. still starting up).

    A cancelled job must not leave processes behind: SIGTERM, then SIGKILL after
    ``grace_s`` seconds.
    """
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        process.terminate()
    for process in alive:
        process.join(grace_s)
        if process.is_alive():
            process.kill()
            process.join(grace_s)


def worker_count(client: Any) -> int:
    """Worker processes the client's scheduler has now (at least 1)."""
    return max(1, len(client.scheduler_info().get("workers", {})))


def ordered_results(
    client: Any,
    task: Callable[[Any], Any],
    items: Iterable[Any],
    in_flight: int | None = None,
    per_task: int = 1,
    workers: list[str] | None = None,
) -> Generator[Any, None, None]:
    """``task(item)`` for every item, computed by the cluster, yielded in item order.

    At most ``in_flight`` tasks are submitted and not yet yielded, which bounds
    the memory of the results waiting to be written.

    Args:
        client: A Dask client (:func:`dask_client`).
        task: A picklable callable; it is sent to every worker once.
        items: What to compute (window descriptions, small and picklable).
        in_flight: Tasks outstanding at once (default: 2 per worker).
        per_task: Consecutive items computed by one Dask task: small items (a
            window of a few thousand pixels) cost less in scheduling together.
        workers: Addresses of the workers the tasks may run on (default: any),
            e.g. all but one that runs a long task of the same job.
    """
    limit = in_flight or IN_FLIGHT_PER_WORKER * worker_count(client)
    [shared] = client.scatter([task], broadcast=True, hash=False)
    pending: deque[Any] = deque()
    try:
        for chunk in chunked(items, max(1, per_task)):
            pending.append(client.submit(call_task, shared, chunk, pure=False, workers=workers))
            if len(pending) >= limit:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        if pending:
            client.cancel(list(pending), force=True)


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in consecutive lists of ``size`` (the last may be shorter)."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def call_task(task: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """Run ``task`` on each of ``items`` on a worker (the task arrives once per worker)."""
    return [task(item) for item in items]


class WorkerTask:
    """A task that opens its inputs once per worker process and keeps them (never pickled).

    A subclass carries paths and settings (its dataclass fields) and says in
    :meth:`open_inputs` how to open the raster and load the model; its
    ``__call__`` takes what :meth:`opened_inputs` returns. The first call on a
    worker opens them, with one PyTorch thread (one Dask thread per worker
    process); the next calls reuse them.
    """

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("opened", None)
        return state

    def opened_inputs(self) -> tuple[Any, ...]:
        """What :meth:`open_inputs` returned on this worker, then the ``ExitStack`` of its files."""
        opened = self.__dict__.get("opened")
        if opened is None:
            import torch

            torch.set_num_threads(1)
            files = contextlib.ExitStack()
            opened = (*self.open_inputs(files), files)
            self.__dict__["opened"] = opened
        return tuple(opened)

    def open_inputs(self, files: contextlib.ExitStack) -> tuple[Any, ...]:
        """The opened inputs on this worker; files to close go to ``files``."""
        raise NotImplementedError
