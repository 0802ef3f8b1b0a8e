"""terrainfactors on a Dask cluster: the window-local factors as tasks, one ordered writer.

With WORKERS > 1 (or a SCHEDULER) the job's process does what needs the whole
DEM and writes the output, while Dask workers (:mod:`slidewise.engine.core.cluster`)
compute the windows:

- **In the job's process**: the TWI's flow routing (priority-flood depression
  filling and D8 flow accumulation), which is not window-local: a cell's
  catchment may reach across the whole DEM. It runs first, as in a one-process
  run; each window's specific catchment area then travels with its task
  (4 bytes a pixel).
- **On the workers**: every band of a window (slope, aspect and its sine and
  cosine, plan and profile curvature, hillshade, and the TWI formula
  ``ln(a / tan(beta))`` from the window's catchment area), from the window and
  its one-pixel halo, read by the worker from the DEM's path with
  :func:`.terrainfactors.window_factors`, the function of the one-process loop.

The job writes the windows in order through the same atomic writer, so the
output is equal bit for bit to a one-process run, and its statistics too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window

from slidewise.engine.core.cluster import (
    ClusterOptions,
    dask_client,
    ordered_results,
    tasks_for,
    worker_count,
)
from slidewise.engine.preparation.terrainfactors import (
    PixelGeometry,
    TerrainParams,
    WindowResult,
    window_factors,
    window_sca,
)

#: GDAL block cache of a worker, in MB: a window and its halo rows, not 5 % of the RAM.
WORKER_GDAL_CACHE_MB = 64
#: Pixels one Dask task computes at least (small windows are grouped up to it).
TASK_PIXELS = 1_000_000
#: What the log says about the factor that is not window-local.
ROUTING_NOTE = (
    "The TWI's flow routing needs the whole DEM, so it runs in this process before the "
    "windows are sent; the Dask workers compute every band of each window (slope, aspect, "
    "curvatures, hillshade and the TWI formula from the routed catchment area)."
)

#: One window as sent to a worker: read window (with halo), write window, catchment area.
WindowItem = tuple[Window, Window, npt.NDArray[np.floating[Any]]]


@dataclass
class TerrainWindowTask:
    """Computes the terrain bands of windows on a Dask worker.

    It travels as the DEM's path, the job's parameters and the pixel sizes; the
    DEM is opened on the worker at its first window and kept for the next ones
    (never pickled).

    Attributes:
        source: Path of the DEM, readable from every worker.
        params: The job's parameters.
        geometry: Pixel sizes per row of the DEM.
    """

    source: str
    params: TerrainParams
    geometry: PixelGeometry
    opened: tuple[Any, contextlib.ExitStack] | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["opened"] = None
        return state

    def __call__(self, item: WindowItem) -> WindowResult:
        """The ``(8, h, w)`` float32 bands of one window (without its halo) and their stats."""
        read, write, sca = item
        return window_factors(self.open(), (read, write), self.params, self.geometry, sca)

    def open(self) -> Any:
        """The DEM, opened once per worker process."""
        if self.opened is None:
            import rasterio

            files = contextlib.ExitStack()
            files.enter_context(rasterio.Env(GDAL_CACHEMAX=WORKER_GDAL_CACHE_MB * 2**20))
            src = files.enter_context(rasterio.open(self.source))
            self.opened = (src, files)
        return self.opened[0]


def windows_per_task(windows: list[tuple[Window, Window, Any]], workers: int) -> int:
    """Consecutive windows one task computes: about :data:`TASK_PIXELS` pixels.

    Fewer on a small DEM, so that every worker gets several tasks.
    """
    if not windows:
        return 1
    win = windows[0][1]
    per_task = max(1, TASK_PIXELS // max(1, int(win.width) * int(win.height)))
    return tasks_for(len(windows), workers, per_task)


@dataclass
class RemoteFactors:
    """The windows of one terrainfactors run, computed on a Dask cluster.

    Attributes:
        client: The Dask client.
        task: The window task sent to every worker.
        sca: Specific catchment area of the whole DEM (from the job's routing).
        start_seconds: Seconds the cluster took to start (or connect).
        first_result_seconds: Seconds from the first task to its result.
    """

    client: Any
    task: TerrainWindowTask
    sca: npt.NDArray[np.floating[Any]]
    start_seconds: float = 0.0
    first_result_seconds: float = 0.0

    def __call__(
        self, windows: list[tuple[Window, Window, Any]]
    ) -> Generator[WindowResult, None, None]:
        """The bands and stats of each window, in window order (2 tasks a worker in flight)."""
        started = time.perf_counter()
        items = ((read, write, window_sca(self.sca, write)) for read, write, _ in windows)
        per_task = windows_per_task(windows, worker_count(self.client))
        for i, result in enumerate(
            ordered_results(self.client, self.task, items, per_task=per_task)
        ):
            if i == 0:
                self.first_result_seconds = time.perf_counter() - started
            yield result

    def figures(self) -> dict[str, Any]:
        """The run's ``cluster`` figures: workers and start-up times."""
        return {
            "workers": worker_count(self.client),
            "start_seconds": round(self.start_seconds, 2),
            "first_window_seconds": round(self.first_result_seconds, 2),
            "distributed": "every band per window; TWI flow routing in the job's process",
        }


@contextlib.contextmanager
def factors_on_cluster(
    source: str,
    params: TerrainParams,
    geometry: PixelGeometry,
    sca: npt.NDArray[np.floating[Any]],
    log: Callable[[str], None],
) -> Iterator[RemoteFactors | None]:
    """The Dask side of the window loop, or ``None`` when WORKERS is 1 and SCHEDULER empty.

    A local cluster closes when the block ends, also on cancel or error (no
    worker process outlives the job).

    Args:
        source: Path of the DEM, readable from every worker.
        params: The job's parameters (``workers``, ``scheduler``).
        geometry: Pixel sizes per row of the DEM.
        sca: Specific catchment area of the whole DEM.
        log: Callback for log lines.
    """
    cluster = ClusterOptions(params.workers, params.scheduler)
    if not cluster.parallel:
        yield None
        return
    log(ROUTING_NOTE)
    started = time.perf_counter()
    with dask_client(cluster, log) as client:
        task = TerrainWindowTask(source, params, geometry)
        yield RemoteFactors(client, task, sca, start_seconds=time.perf_counter() - started)
