"""maplandslides on a Dask cluster (WORKERS > 1 or a SCHEDULER).

The job's process plans the tiles, blends them and writes every output, in
order, as in a one-process run; the tile rows are predicted by Dask workers
(:mod:`slidewise.engine.imagery.tiling_cluster`). Each worker runs
:class:`MapTileRowTask`: it opens the input raster (and the AOI) and loads the
model from their paths once, so every worker must be able to read them (a
local path for a local cluster; a shared folder, ``/vsicurl/`` or ``/vsis3/``
for the user's scheduler).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from typing import Any

from slidewise.engine.core.cluster import ClusterOptions
from slidewise.engine.core.job import JobContext
from slidewise.engine.core.resume import SCALE_OUT_FIELDS, run_key
from slidewise.engine.imagery.tile_cache import TileCacheRequest, clear_stale
from slidewise.engine.imagery.tiling import OutputMaskFn
from slidewise.engine.imagery.tiling_cluster import (
    ModelTileRowTask,
    backend_name,
    tiling_on_cluster,
)
from slidewise.engine.imagery.tiling_cluster import cluster_figures as tiling_cluster_figures
from slidewise.engine.mapping.apply import LoadedModel, MapParams, MapPlan, aoi_mask


@dataclass
class MapTileRowTask(ModelTileRowTask):
    """Predicts tile rows of maplandslides' input on a Dask worker, inside the job's AOI.

    Attributes:
        aoi: The AOI path (polygons or mask raster), ``None`` for none.
    """

    aoi: str | None = None

    def output_mask(self, files: contextlib.ExitStack) -> OutputMaskFn | None:
        """The AOI on the input's grid, as the one-process path builds it."""
        if not self.aoi:
            return None
        from slidewise.engine.geo.raster import open_raster

        return aoi_mask(self.aoi, open_raster(self.input, what="input raster"), files)


@contextlib.contextmanager
def on_cluster(
    options: MapParams, loaded: LoadedModel, plan: MapPlan, ctx: JobContext
) -> Iterator[MapPlan]:
    """The plan, with its tile rows computed on a Dask cluster when WORKERS > 1 or a SCHEDULER.

    The cluster (a local one) closes when the block ends, also on cancel or error.
    The workers run the model with the backend the job resolved (BACKEND).
    Multi-region models are mapped in the job's process (said in the log). The
    run is resumable (single-decoder models): its tile rows are kept on disk
    until it ends (:mod:`slidewise.engine.imagery.tile_cache`).
    """
    cluster = ClusterOptions(options.workers, options.scheduler)
    if cluster.parallel and loaded.multi is not None:
        ctx.warn(
            "WORKERS and SCHEDULER apply to single-decoder models: this multi-region model "
            "is mapped in the job's process."
        )
        cluster = ClusterOptions()
    backend = backend_name(loaded.net) if loaded.multi is None else "torch"
    task = MapTileRowTask.for_tiling(
        options.input, options.model, plan.bands, plan.tiling, backend=backend
    )
    task.aoi = options.aoi
    tiling = plan.tiling
    if loaded.multi is None:  # resumable: the tile rows are kept until the job ends
        inputs = [options.input, options.model, options.aoi or ""]
        key = run_key(options, inputs, SCALE_OUT_FIELDS)
        outputs = tuple(p for p in options.outputs().values() if p)
        request = TileCacheRequest(outputs, key, ctx.log)
        clear_stale(request)  # before the outputs are opened
        tiling = dc_replace(tiling, cache=request)
    with tiling_on_cluster(tiling, task, cluster, ctx.log) as tiling:
        yield dc_replace(plan, tiling=tiling)


def cluster_figures(plan: MapPlan) -> dict[str, Any]:
    """The workers and start-up times of a Dask run (``{"cluster": {...}}``), else ``{}``."""
    return tiling_cluster_figures(plan.tiling)
