"""terrainfactors on a Dask cluster: the window-local factors as tasks, one ordered writer.

With WORKERS > 1 (or a SCHEDULER) Dask workers (:mod:`slidewise.engine.core.cluster`)
compute the windows and the job's process writes them, in order, through the
same atomic writer; every band comes from the functions of the one-process
loop (:func:`.terrainfactors.window_factors`) on the same window and one-pixel
halo, read by the worker from the DEM's path, so the output equals a
one-process run bit for bit, and so do its statistics (computed per window on
the workers, added up in window order by the job).

The TWI's flow routing (priority-flood depression filling and D8 accumulation)
is not window-local: a cell's catchment may reach across the whole DEM. It
runs whole, in one of two places:

- **On one worker, while the others compute the windows** (the cluster has
  2 workers or more, and one has the memory: about
  :data:`ROUTING_BYTES_PER_PIXEL` bytes a DEM pixel). The job writes the 7 local
  bands of every window as they come (first pass), then, once the routing is
  done, the TWI band of every window (second pass, ``ln(a / tan(beta))`` on the
  workers from the window and its catchment area). The output is band-interleaved
  so that the second pass writes only band 8.
- **In the job's process, first** (one worker, or none with the memory), as in
  a one-process run; each window's catchment area then travels with its task.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
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
from slidewise.engine.core.job import Progress
from slidewise.engine.geo import raster
from slidewise.engine.preparation.terrainfactors import (
    TERRAIN_BANDS,
    BandStats,
    Float32Array,
    PixelGeometry,
    TerrainParams,
    TerrainRun,
    WindowResult,
    no_valid_elevation,
    read_dem,
    set_band_units,
    specific_catchment_area,
    terrain_here,
    terrain_windows,
    window_factors,
    window_sca,
)

#: GDAL block cache of a worker, in MB: a window and its halo rows, not 5 % of the RAM.
WORKER_GDAL_CACHE_MB = 64
#: Pixels one Dask task computes at least (small windows are grouped up to it).
TASK_PIXELS = 1_000_000
#: Memory of the flow routing per DEM pixel, with a margin (28 bytes measured, see
#: :mod:`.terrainfactors`), to choose a worker that can route the whole DEM.
ROUTING_BYTES_PER_PIXEL = 32
#: Share of a worker's memory limit the routing may take (Dask pauses a worker at 80 %).
ROUTING_MEMORY_SHARE = 0.7
#: What the log says about the factor that is not window-local (both start alike).
ROUTING_NOTE = "The TWI's flow routing needs the whole DEM"
ROUTING_ON_WORKER = (
    f"{ROUTING_NOTE}: one Dask worker computes it while the others compute the slope, aspect, "
    "curvatures and hillshade of each window; the TWI band is then computed per window and "
    "written in a second pass."
)
ROUTING_IN_JOB = (
    f"{ROUTING_NOTE}, so it runs in this process before the windows are sent ({{why}}); the "
    "Dask workers compute every band of each window (slope, aspect, curvatures, hillshade and "
    "the TWI formula from the routed catchment area)."
)

#: One window as sent to a worker: read window (with halo), write window, catchment area
#: (``None`` for the local bands alone).
WindowItem = tuple[Window, Window, npt.NDArray[np.floating[Any]] | None]


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
        part: The bands computed: ``"all"``, ``"local"`` (all but the TWI) or
            ``"twi"`` (:func:`.terrainfactors.window_factors`).
    """

    source: str
    params: TerrainParams
    geometry: PixelGeometry
    part: str = "all"
    opened: tuple[Any, contextlib.ExitStack] | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["opened"] = None
        return state

    def __call__(self, item: WindowItem) -> WindowResult:
        """The float32 bands of one window (without its halo) and their stats."""
        read, write, sca = item
        src = self.open()
        return window_factors(src, (read, write), self.params, self.geometry, sca, self.part)

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
class RoutingTask:
    """Routes the flow of the whole DEM on one Dask worker (read from the DEM's path).

    Attributes:
        source: Path of the DEM, readable from every worker.
        geometry: Pixel sizes per row of the DEM.
    """

    source: str
    geometry: PixelGeometry

    def __call__(self) -> tuple[Float32Array | None, int, float, float]:
        """``(catchment area or None without valid pixels, valid pixels, wall s, CPU s)``."""
        import rasterio

        started, cpu = time.perf_counter(), time.process_time()
        with rasterio.Env(GDAL_CACHEMAX=WORKER_GDAL_CACHE_MB * 2**20):
            with rasterio.open(self.source) as src:
                dem = read_dem(src)
        valid = int(np.count_nonzero(np.isfinite(dem)))
        sca = specific_catchment_area(dem, self.geometry) if valid else None
        return sca, valid, time.perf_counter() - started, time.process_time() - cpu


def routing_worker(client: Any, pixels: int) -> tuple[str | None, str]:
    """The worker that routes the flow while the others compute windows, or why there is none.

    Returns:
        ``(address, "")``, or ``(None, reason)``: fewer than 2 workers, or none
        whose memory limit holds the routing of ``pixels`` DEM pixels.
    """
    workers = client.scheduler_info().get("workers", {})
    if len(workers) < 2:
        return None, "one Dask worker"
    limits = {a: float(w.get("memory_limit") or 0) or float("inf") for a, w in workers.items()}
    address = max(limits, key=lambda a: limits[a])
    need = ROUTING_BYTES_PER_PIXEL * pixels
    if need > ROUTING_MEMORY_SHARE * limits[address]:
        return None, f"no Dask worker has the {need / 2**30:.1f} GB it needs"
    return address, ""


@dataclass
class RemoteFactors:
    """The windows of one terrainfactors run, computed on a Dask cluster.

    Attributes:
        client: The Dask client.
        task: The window task sent to every worker.
        sca: Specific catchment area of the whole DEM (``None`` for the local bands).
        workers: Worker addresses the windows may go to (``None``: any).
        first_result_seconds: Seconds from the first task to its result.
    """

    client: Any
    task: TerrainWindowTask
    sca: npt.NDArray[np.floating[Any]] | None = None
    workers: list[str] | None = None
    first_result_seconds: float = 0.0

    def __call__(
        self, windows: list[tuple[Window, Window, Any]]
    ) -> Generator[WindowResult, None, None]:
        """The bands and stats of each window, in window order (2 tasks a worker in flight)."""
        started = time.perf_counter()
        sca = self.sca
        items = (
            (read, write, None if sca is None else window_sca(sca, write))
            for read, write, _ in windows
        )
        count = len(self.workers) if self.workers else worker_count(self.client)
        per_task = windows_per_task(windows, count)
        results = ordered_results(
            self.client, self.task, items, per_task=per_task, workers=self.workers
        )
        for i, result in enumerate(results):
            if i == 0 and not self.first_result_seconds:
                self.first_result_seconds = time.perf_counter() - started
            yield result


def cluster_figures(remote: RemoteFactors, start_seconds: float, where: str) -> dict[str, Any]:
    """The run's ``cluster`` figures: workers, start-up times, where the routing ran."""
    return {
        "cluster": {
            "workers": worker_count(remote.client),
            "start_seconds": round(start_seconds, 2),
            "first_window_seconds": round(remote.first_result_seconds, 2),
            "flow_routing": where,
        }
    }


def terrain_on_cluster(
    src: Any,
    info: raster.RasterInfo,
    output: str,
    params: TerrainParams,
    geometry: PixelGeometry,
    say: Callable[[str], None],
    report: Progress,
) -> TerrainRun:
    """The terrainfactors run with its windows on Dask (WORKERS > 1 or a SCHEDULER).

    A local cluster closes when the run ends, also on cancel or error (no worker
    process outlives the job). See the module docstring for where the routing runs.
    """
    started = time.perf_counter()
    with dask_client(ClusterOptions(params.workers, params.scheduler), say) as client:
        start_seconds = time.perf_counter() - started
        task = TerrainWindowTask(info.path, params, geometry)
        router, why = routing_worker(client, info.width * info.height)
        if router is None:
            say(ROUTING_IN_JOB.format(why=why))
            remote = RemoteFactors(client, task)

            def with_sca(sca: Float32Array) -> RemoteFactors:
                remote.sca = sca
                return remote

            run = terrain_here(src, info, output, params, geometry, say, report, with_sca)
            run.extra = cluster_figures(remote, start_seconds, "job")
            return run
        say(ROUTING_ON_WORKER)
        remote = RemoteFactors(client, task)
        run = two_passes(remote, router, info, output, params, (say, report))
        run.extra = cluster_figures(remote, start_seconds, "worker")
        return run


def write_pass(
    dst: Any,
    windows: list[tuple[Window, Window, Any]],
    remote: RemoteFactors,
    stats: BandStats,
    first_band: int,
    span: tuple[float, float],
    report: Progress,
) -> None:
    """Write the bands ``remote`` computes, from band ``first_band`` (1-based), window by window.

    Progress goes from ``span[0]`` to ``span[1]``; closing the results cancels
    the outstanding tasks (error or cancel).
    """
    low, high = span
    with contextlib.closing(remote(windows)) as blocks:
        for i, ((_, write, _), (block, part)) in enumerate(zip(windows, blocks, strict=True)):
            indexes = list(range(first_band, first_band + block.shape[0]))
            dst.write(block, indexes=indexes, window=write)
            stats.add(part, first_band=first_band - 1)
            report(low + (high - low) * (i + 1) / len(windows))


def two_passes(
    remote: RemoteFactors,
    router: str,
    info: raster.RasterInfo,
    output: str,
    params: TerrainParams,
    callbacks: tuple[Callable[[str], None], Progress],
) -> TerrainRun:
    """Route on ``router`` while the other workers compute the local bands; then the TWI.

    ``callbacks`` are the log and progress callbacks. Progress: 0 to 0.7 for the
    first pass, 0.7 to 1 for the second.

    Raises:
        InputError: the DEM has no valid pixel.
    """
    client, task = remote.client, remote.task
    say, report = callbacks
    started, cpu = time.perf_counter(), time.process_time()
    routing = client.submit(RoutingTask(task.source, task.geometry), workers=[router], pure=False)
    windows = terrain_windows(info, params)
    profile = raster.output_profile(info, count=len(TERRAIN_BANDS), dtype="float32")
    profile["interleave"] = "band"  # the second pass writes band 8 alone
    stats = BandStats(TERRAIN_BANDS)
    others = [a for a in client.scheduler_info()["workers"] if a != router]
    local = RemoteFactors(client, replace(task, part="local"), workers=others)
    try:
        with raster.create_raster(output, profile, band_names=TERRAIN_BANDS) as dst:
            set_band_units(dst)
            last = len(TERRAIN_BANDS)
            write_pass(dst, windows, local, stats, 1, (0.0, 0.7), report)
            if not routing.done():
                say("The local bands are written; waiting for the flow routing on its worker...")
            sca, valid, routing_s, _worker_cpu = routing.result()
            if sca is None:
                raise no_valid_elevation(info.path)
            say(f"Flow routing done in {routing_s:.1f} s on a Dask worker; now the TWI band.")
            twi = RemoteFactors(client, replace(task, part="twi"), sca)
            write_pass(dst, windows, twi, stats, last, (0.7, 1.0), report)
    finally:
        routing.cancel()
    remote.first_result_seconds = local.first_result_seconds
    windows_s, windows_cpu = time.perf_counter() - started, time.process_time() - cpu
    # The routing took no CPU of the job's process.
    return TerrainRun(stats, valid, routing_s, 0.0, windows_s, windows_cpu)
