"""detectlandslides' detector route on a Dask cluster: tile batches as tasks, merged by the job.

With WORKERS > 1 (or a SCHEDULER) and SOURCE detector, the job's process plans
the tiles (:func:`.apply.tile_origins`) and cuts them into the batches a
one-process run gives its detector (``BATCH_SIZE`` consecutive tiles); each
batch becomes a task (:class:`DetectorTileTask`). A worker opens the raster and
loads the detector from their paths once, then reads and detects its batches
with :func:`.apply.detect_tiles`, the code of the one-process path, and sends
back their boxes in raster pixels. The job gathers them in tile order
(:func:`slidewise.engine.core.cluster.ordered_results`) and merges them across
tiles (:func:`.apply.merge_on_map`) exactly as one process does, so the boxes,
their scores and their order are the same (``tests/engine/test_detection_cluster.py``).

Memory: a worker holds the detector, one batch of tiles and a GDAL cache; the
job holds only the boxes (a few kilobytes a tile), at most ``2 x workers`` tasks
of them in flight, and the boxes gathered so far.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slidewise.engine.core.cluster import (
    ClusterOptions,
    WorkerTask,
    chunked,
    dask_client,
    ordered_results,
    tasks_for,
    worker_count,
)
from slidewise.engine.core.job import Progress
from slidewise.engine.detection.apply import (
    DetectOptions,
    DetectorPlan,
    TileBoxes,
    detect_tiles,
    fit_detector_to_tile,
    tile_origins,
)

#: Most tile batches one Dask task detects (fewer when that leaves a worker idle at the end).
BATCHES_PER_TASK = 4


@dataclass
class DetectorTileTask(WorkerTask):
    """Detects on batches of tiles of a raster with a detection model file, on a Dask worker.

    The same steps as the one-process path: the model is loaded with
    :func:`.models.load_detector` and fitted to the tile side with
    :func:`.apply.fit_detector_to_tile`.

    Attributes:
        plan: The raster, model, bands, tiles and settings (paths readable by every worker).
    """

    plan: DetectorPlan

    def open_inputs(self, files: contextlib.ExitStack) -> tuple[Any, Any]:
        """``(detector, open raster)`` on this worker."""
        import rasterio

        from slidewise.engine.detection.models import load_detector
        from slidewise.engine.imagery.tiling import GDAL_CACHE_MB

        plan = self.plan
        model, meta = load_detector(plan.model, device=plan.options.device)
        fit_detector_to_tile(model, meta, plan.tile, plan.options.score_threshold)
        files.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB))
        return model, files.enter_context(rasterio.open(plan.input))

    def __call__(self, batch: list[tuple[int, int, int]]) -> TileBoxes:
        """The boxes of the tiles ``batch`` (``(index, row, col)`` each), in raster pixels."""
        model, src, _ = self.opened_inputs()
        plan = self.plan
        return detect_tiles(model, src, batch, plan.bands, plan.fill, plan.tile, plan.options)


def detect_on_cluster(
    plan: DetectorPlan,
    cluster: ClusterOptions,
    progress: Progress,
    log: Callable[[str], None],
) -> tuple[TileBoxes, dict[str, Any]]:
    """The tile boxes of ``plan`` detected by Dask workers, in tile order; the cluster figures.

    The cluster (a local one) closes when the call ends, also on cancel or
    error; ``progress`` moves with every tile batch gathered.
    """
    started = time.perf_counter()
    with dask_client(cluster, log) as client:
        start_seconds = time.perf_counter() - started
        found, first = gather_tile_boxes(client, plan, progress)
        figures = {
            "workers": worker_count(client),
            "start_seconds": round(start_seconds, 2),
            "first_window_seconds": round(first, 2),
            "backend": "torch",
        }
    return found, {"cluster": figures}


def gather_tile_boxes(
    client: Any, plan: DetectorPlan, progress: Progress
) -> tuple[TileBoxes, float]:
    """Detect the batches of ``plan`` on ``client``'s workers; the boxes in tile order.

    Returns:
        ``(boxes, first)``: the boxes of all tiles, and the seconds from the
        first task to its result (the workers load the detector then).
    """
    import rasterio

    with rasterio.open(plan.input) as src:
        origins = tile_origins(src.height, src.width, plan.tile, plan.overlap)
    batches = list(chunked(origins, max(1, plan.options.batch_size)))
    per_task = tasks_for(len(batches), worker_count(client), BATCHES_PER_TASK)
    task = DetectorTileTask(_portable(plan))
    started = time.perf_counter()
    first = 0.0
    parts: list[TileBoxes] = []
    results = ordered_results(client, task, batches, per_task=per_task)
    with contextlib.closing(results):
        for batch, part in zip(batches, results, strict=True):
            if not parts:
                first = time.perf_counter() - started
            parts.append(part)
            progress((batch[-1][0] + 1) / len(origins))
    return TileBoxes.concat(parts), first


def _portable(plan: DetectorPlan) -> DetectorPlan:
    """``plan`` with its device as a name (what a worker's PyTorch reads)."""
    from dataclasses import replace

    options = plan.options
    return replace(
        plan,
        options=DetectOptions(
            options.score_threshold, options.nms_iou, options.batch_size, str(options.device)
        ),
    )
