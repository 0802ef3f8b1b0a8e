"""Tiled prediction on a Dask cluster: one task per tile row, blended in order by the job.

With WORKERS > 1 (or a SCHEDULER) a tiled job (maplandslides) keeps planning
the tiles, blending them and writing the outputs in its own process, while the
tile rows are read and predicted by Dask workers
(:mod:`slidewise.engine.core.cluster`). A worker runs a :class:`TileRowTask`:
it opens the raster and loads the model from their paths once, then predicts
the tile rows it is given with :func:`.tiling.predict_tile_row`, the code of
the one-process path, and sends back each tile's probability. The job blends
them with :func:`.tiling.blend_tile_rows` in the same order as one process
would, so the outputs are the same numbers (see ``tests/engine/test_mapping_cluster.py``).

Memory: at most ``2 x workers`` tile rows are in flight (each about
``tile x raster width`` float32 probabilities), on top of the one-process band.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from typing import Any

from slidewise.engine.core.cluster import (
    ClusterOptions,
    WorkerTask,
    dask_client,
    ordered_results,
    worker_count,
)
from slidewise.engine.imagery.tiling import (
    GDAL_CACHE_MB,
    OutputMaskFn,
    TileLayout,
    TileRow,
    TilingOptions,
    predict_tile_row,
)


class TileRowTask(WorkerTask):
    """Predicts tile rows on a Dask worker; subclasses say how to open the inputs.

    The task travels as paths and settings (a subclass's dataclass fields);
    :meth:`open_inputs` runs on the worker at its first tile row and what it
    opens is kept for the next ones (never pickled, :class:`.cluster.WorkerTask`).
    """

    def __call__(self, item: tuple[TileLayout, int]) -> TileRow:
        """Predict tile row ``item[1]`` of layout ``item[0]``."""
        source, runner, output_mask, _ = self.opened_inputs()
        layout, index = item
        return predict_tile_row(source, layout, runner, output_mask, index)

    def open_inputs(self, files: contextlib.ExitStack) -> tuple[Any, Any, OutputMaskFn | None]:
        """``(source, runner, output mask)`` on this worker; files to close go to ``files``."""
        raise NotImplementedError


@dataclass
class ClusterTileRows:
    """The tile rows of a layout, computed on a Dask cluster, in order.

    Set it as :attr:`.tiling.TilingOptions.remote`.

    Attributes:
        client: The Dask client.
        task: The tile row task sent to every worker.
        start_seconds: Seconds the cluster took to start (or to connect).
        first_result_seconds: Seconds from the first task to its result (the
            workers open the raster and load the model then).
    """

    client: Any
    task: TileRowTask
    start_seconds: float = 0.0
    first_result_seconds: float = 0.0

    def workers(self) -> int:
        """Worker processes of the cluster."""
        return worker_count(self.client)

    def __call__(self, layout: TileLayout, indices: range) -> Iterator[TileRow]:
        """Tile rows ``indices`` of ``layout``, in order."""
        started = time.perf_counter()
        items = ((layout, k) for k in indices)
        for k, row in enumerate(ordered_results(self.client, self.task, items)):
            if k == 0:
                self.first_result_seconds = time.perf_counter() - started
            yield row


@dataclass
class ModelTileRowTask(TileRowTask):
    """Predicts tile rows of a raster with a mapping model file, on a Dask worker.

    The same steps as the one-process path: the model is loaded with
    :func:`.segmodels.load_mapping_model` and prepared by :func:`.tiling.make_runner`.

    Attributes:
        input: The raster path (readable by every worker).
        model: The mapping model file.
        bands: 1-based raster bands feeding the model.
        device: Torch device of the forward passes.
        tta: Test-time augmentation.
        amp: Mixed precision (``None``: the one-process default).
        channels_last: Channels-last memory format (``None``: the default).
        spread: Also the TTA members' variance (:attr:`.tiling.TilingOptions.spread`).
        backend: The job's resolved BACKEND (``torch``, ``onnxruntime``, ``openvino``,
            ``openvino_bf16``; never ``auto``): the workers run the model with it,
            one thread each (:func:`.backends.build_backend`).
    """

    input: str
    model: str
    bands: tuple[int, ...]
    device: str = "cpu"
    tta: bool = False
    amp: bool | None = None
    channels_last: bool | None = None
    spread: bool = False
    backend: str = "torch"

    @classmethod
    def for_tiling(
        cls, input: str, model: str, bands: list[int], tiling: Any, backend: str = "torch"
    ) -> Any:
        """The task that predicts like ``tiling`` with ``backend``.

        ``backend`` is the name :func:`.backends.choose_backend` resolved in the job.
        """
        return cls(
            input=input,
            model=model,
            bands=tuple(bands),
            device=str(tiling.device or "cpu"),
            tta=tiling.tta,
            amp=tiling.amp,
            channels_last=tiling.channels_last,
            spread=tiling.spread,
            backend=backend,
        )

    def open_inputs(self, files: contextlib.ExitStack) -> tuple[Any, Any, OutputMaskFn | None]:
        """Load the model, open the raster; the output mask is :meth:`output_mask`'s."""
        import rasterio

        from slidewise.engine.imagery.segmodels import load_mapping_model
        from slidewise.engine.imagery.tiling import make_runner, open_source

        net, meta = load_mapping_model(self.model, device=self.device)
        net = worker_backend(net, self.backend, self.model, len(self.bands), self.device)
        runner = make_runner(
            net,
            meta.normalisation,
            self.device,
            self.tta,
            self.amp,
            self.channels_last,
            spread=self.spread,
        )
        files.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB))
        reader = files.enter_context(rasterio.open(self.input))
        source, _ = open_source(reader, list(self.bands))
        return source, runner, self.output_mask(files)

    def output_mask(self, files: contextlib.ExitStack) -> OutputMaskFn | None:
        """The pixels to predict (``None``: all); subclasses add an area of interest."""
        return None


def worker_backend(net: Any, backend: str, model: str, channels: int, device: str) -> Any:
    """``net`` on a worker, computed by ``backend`` with one thread (``torch``: ``net`` itself).

    The ONNX export is the job's cached one when the worker shares its cache folder
    (a local cluster), else exported once per worker machine.
    """
    if backend == "torch":
        return net
    import torch

    from slidewise.engine.imagery.backends import BackendRequest, build_backend, model_key

    request = BackendRequest(net, channels, model_key(model), 1, torch.device(device))
    return build_backend(backend, request)


def backend_name(module: Any) -> str:
    """The backend computing ``module`` (one built by :func:`.backends.choose_backend`)."""
    from slidewise.engine.imagery.backends import OnnxRuntimeModule, OpenVinoModule

    if isinstance(module, OnnxRuntimeModule):
        return "onnxruntime"
    if isinstance(module, OpenVinoModule):
        return "openvino_bf16" if module.precision == "bf16" else "openvino"
    return "torch"


@contextlib.contextmanager
def tiling_on_cluster(
    tiling: TilingOptions,
    task: TileRowTask,
    cluster: ClusterOptions,
    log: Callable[[str], None],
) -> Iterator[TilingOptions]:
    """``tiling`` with its tile rows computed by ``task`` on a Dask cluster (when parallel).

    The cluster (a local one) closes when the block ends, also on cancel or error.
    """
    if not cluster.parallel:
        yield tiling
        return
    started = time.perf_counter()
    backend = getattr(task, "backend", "torch")
    with dask_client(cluster, log) as client:
        log(f"The Dask workers run the model with the {backend} backend, one thread each.")
        remote = ClusterTileRows(client, task, start_seconds=time.perf_counter() - started)
        yield dc_replace(tiling, remote=remote)


def cluster_figures(tiling: TilingOptions) -> dict[str, Any]:
    """The workers and start-up times of a Dask run (``{"cluster": {...}}``), else ``{}``."""
    remote = tiling.remote
    if not isinstance(remote, ClusterTileRows):
        return {}
    return {
        "cluster": {
            "workers": remote.workers(),
            "start_seconds": round(remote.start_seconds, 2),
            "first_window_seconds": round(remote.first_result_seconds, 2),
            "backend": getattr(remote.task, "backend", "torch"),
        }
    }
