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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from slidewise.engine.core.cluster import ordered_results, worker_count
from slidewise.engine.imagery.tiling import (
    OutputMaskFn,
    TileLayout,
    TileRow,
    predict_tile_row,
)


class TileRowTask:
    """Predicts tile rows on a Dask worker; subclasses say how to open the inputs.

    The task travels as paths and settings (a subclass's dataclass fields);
    :meth:`open_inputs` runs on the worker at its first tile row and what it
    opens is kept for the next ones (never pickled).
    """

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("opened", None)
        return state

    def __call__(self, item: tuple[TileLayout, int]) -> TileRow:
        """Predict tile row ``item[1]`` of layout ``item[0]``."""
        opened = self.__dict__.get("opened")
        if opened is None:
            import torch

            torch.set_num_threads(1)  # one Dask thread per worker process
            files = contextlib.ExitStack()
            opened = (*self.open_inputs(files), files)
            self.__dict__["opened"] = opened
        source, runner, output_mask, _ = opened
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

    def __call__(self, layout: TileLayout) -> Iterator[TileRow]:
        """Each tile row of ``layout``, from the top."""
        started = time.perf_counter()
        items = ((layout, k) for k in range(len(layout.rows.starts)))
        for k, row in enumerate(ordered_results(self.client, self.task, items)):
            if k == 0:
                self.first_result_seconds = time.perf_counter() - started
            yield row
