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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from typing import Any

from slidewise.engine.core.cluster import ClusterOptions, dask_client
from slidewise.engine.core.job import JobContext
from slidewise.engine.imagery.tiling import GDAL_CACHE_MB, OutputMaskFn
from slidewise.engine.imagery.tiling_cluster import ClusterTileRows, TileRowTask
from slidewise.engine.mapping.apply import LoadedModel, MapParams, MapPlan, aoi_mask


@dataclass
class MapTileRowTask(TileRowTask):
    """Predicts tile rows of the input raster with the job's model, on a Dask worker.

    Attributes:
        options: The job's parameters (paths of the input, model and AOI).
        bands: 1-based raster bands feeding the model.
        device: Torch device of the forward passes.
        tta: Test-time augmentation.
        amp: Mixed precision (``None``: the one-process default).
        channels_last: Channels-last memory format (``None``: the default).
    """

    options: MapParams
    bands: tuple[int, ...]
    device: str = "cpu"
    tta: bool = False
    amp: bool | None = None
    channels_last: bool | None = None

    def open_inputs(self, files: contextlib.ExitStack) -> tuple[Any, Any, OutputMaskFn | None]:
        """Open the raster and the AOI, load the model: the same steps as the one-process path."""
        import rasterio

        from slidewise.engine.geo.raster import open_raster
        from slidewise.engine.imagery.segmodels import load_mapping_model
        from slidewise.engine.imagery.tiling import make_runner, open_source

        net, meta = load_mapping_model(self.options.model, device=self.device)
        runner = make_runner(
            net, meta.normalisation, self.device, self.tta, self.amp, self.channels_last
        )
        files.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB))
        info = open_raster(self.options.input, what="input raster")
        mask = aoi_mask(self.options.aoi, info, files) if self.options.aoi else None
        reader = files.enter_context(rasterio.open(info.path))
        source, _ = open_source(reader, list(self.bands))
        return source, runner, mask


@contextlib.contextmanager
def on_cluster(
    options: MapParams, loaded: LoadedModel, plan: MapPlan, ctx: JobContext
) -> Iterator[MapPlan]:
    """The plan, with its tile rows computed on a Dask cluster when WORKERS > 1 or a SCHEDULER.

    The cluster (a local one) closes when the block ends, also on cancel or error.
    Multi-region models are mapped in the job's process (said in the log).
    """
    cluster = ClusterOptions(options.workers, options.scheduler)
    if not cluster.parallel:
        yield plan
        return
    if loaded.multi is not None:
        ctx.warn(
            "WORKERS and SCHEDULER apply to single-decoder models: this multi-region model "
            "is mapped in the job's process."
        )
        yield plan
        return
    tiling = plan.tiling
    task = MapTileRowTask(
        options=options,
        bands=tuple(plan.bands),
        device=str(tiling.device or "cpu"),
        tta=tiling.tta,
        amp=tiling.amp,
        channels_last=tiling.channels_last,
    )
    started = time.perf_counter()
    with dask_client(cluster, ctx.log) as client:
        remote = ClusterTileRows(client, task, start_seconds=time.perf_counter() - started)
        yield dc_replace(plan, tiling=dc_replace(tiling, remote=remote))


def cluster_figures(plan: MapPlan) -> dict[str, Any]:
    """The workers and start-up times of a Dask run (``{"cluster": {...}}``), else ``{}``."""
    remote = plan.tiling.remote
    if not isinstance(remote, ClusterTileRows):
        return {}
    return {
        "cluster": {
            "workers": remote.workers(),
            "start_seconds": round(remote.start_seconds, 2),
            "first_window_seconds": round(remote.first_result_seconds, 2),
        }
    }
