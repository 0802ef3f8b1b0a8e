"""predictsusceptibility on a Dask cluster: one task per window, results in order.

With WORKERS > 1 (or a SCHEDULER) the job's process plans the windows and
writes the outputs as before, while the windows' predictions are computed by
Dask workers (:mod:`slidewise.engine.core.cluster`). Each worker runs
:class:`StackWindowTask`: it opens the factor stack, the block raster and the
model file from their paths once, then predicts the windows it is given with
exactly the code of the one-process path (:meth:`.predict.Predictor.window`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slidewise.engine.core.cluster import ordered_results, tasks_for, worker_count
from slidewise.engine.susceptibility.predict import (
    GDAL_CACHE_MB,
    Predictor,
    PredictParams,
    Unseen,
    band_order,
    load_predictor,
    prediction_blocks,
)

#: One window's result as sent back: probability, spread (``None`` without members),
#: valid mask packed 8 pixels a byte (:func:`numpy.packbits`), unseen classes.
WindowResult = tuple[np.ndarray, np.ndarray | None, np.ndarray, Unseen]


@dataclass
class StackWindowTask:
    """Predicts windows of the factor stack on a Dask worker.

    It travels as the job's parameters and the model's block record; the stack,
    block raster and model are opened on the worker at its first window and kept
    for the next ones (never pickled).

    Attributes:
        options: The job's parameters.
        blocks_doc: The block raster record of the model file.
    """

    options: PredictParams
    blocks_doc: dict[str, Any]
    opened: tuple[Any, Predictor, contextlib.ExitStack] | None = field(
        default=None, repr=False, compare=False
    )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["opened"] = None
        return state

    def __call__(self, windows: tuple[Any, Any, Any]) -> WindowResult:
        """Predict one window: ``(read window with halo, write window, inner slices)``.

        What travels back is what the job writes: the float32 probability, the
        spread only when the model has bootstrap members (else it is all NaN), and
        the valid mask as bits, 4.1 bytes a pixel instead of 9.
        """
        stack, predictor = self.open()
        unseen: Unseen = {}
        out, spread, valid = predictor.window(stack, windows, unseen)
        kept = spread if len(predictor.members) > 1 else None
        return out, kept, np.packbits(valid, axis=None), unseen

    def open(self) -> tuple[Any, Predictor]:
        """The open stack and the loaded predictor of this worker process."""
        if self.opened is None:
            import rasterio
            import torch

            from slidewise.engine.core.modelfile import load_model

            torch.set_num_threads(1)  # one Dask thread per worker process
            files = contextlib.ExitStack()
            options = self.options
            tensors, meta = load_model(options.model, task="susceptibility")
            predictor = load_predictor(tensors, meta.config, meta.normalisation, options)
            files.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20))
            stack = files.enter_context(options.open_stack(list(predictor.encoder.categorical)))
            predictor.order = band_order(stack.names, predictor.encoder.bands)
            predictor.block_src = prediction_blocks(
                options, predictor.fitted, self.blocks_doc, stack
            )
            if predictor.block_src is not None:
                files.callback(predictor.block_src.close)
            self.opened = (stack, predictor, files)
        return self.opened[0], self.opened[1]


#: Pixels one Dask task predicts at least (windows are grouped up to it): a task of a
#: few milliseconds would spend more time in scheduling and transfer than computing.
TASK_PIXELS = 1_000_000


def windows_per_task(windows: list[tuple[Any, Any, Any]], workers: int = 1) -> int:
    """Consecutive windows one task predicts: about :data:`TASK_PIXELS` pixels.

    Fewer on a small raster, so that every worker gets several tasks
    (:func:`slidewise.engine.core.cluster.tasks_for`).
    """
    if not windows:
        return 1
    win = windows[0][1]
    per_task = max(1, TASK_PIXELS // max(1, int(win.width) * int(win.height)))
    return tasks_for(len(windows), workers, per_task)


def unpack_result(result: WindowResult) -> tuple[np.ndarray, np.ndarray, np.ndarray, Unseen]:
    """``(probability, spread, valid mask, unseen classes)`` of a result sent back."""
    out, spread, bits, unseen = result
    valid = np.unpackbits(bits, count=out.size).view(bool).reshape(out.shape)
    if spread is None:
        spread = np.full(out.shape, np.nan, dtype=np.float32)
    return out, spread, valid, unseen


@dataclass
class RemoteWindows:
    """The windows of one job, computed on a Dask cluster.

    Attributes:
        client: The Dask client.
        task: The window task sent to every worker.
        first_result_seconds: Seconds from the first task to its result.
    """

    client: Any
    task: StackWindowTask
    first_result_seconds: float = 0.0

    def workers(self) -> int:
        """Worker processes of the cluster."""
        return worker_count(self.client)

    def results(
        self, windows: list[tuple[Any, Any, Any]], unseen: Unseen
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(probability, spread, valid)`` of each window, in order; unseen classes merged.

        The time to the first result (the workers open the inputs and load the
        model then) is kept in :attr:`first_result_seconds`.
        """
        started = time.perf_counter()
        per_task = windows_per_task(windows, self.workers())
        for i, result in enumerate(
            ordered_results(self.client, self.task, windows, per_task=per_task)
        ):
            out, spread, valid, part = unpack_result(result)
            if i == 0:
                self.first_result_seconds = time.perf_counter() - started
            for band, counts in part.items():
                slot = unseen.setdefault(band, {})
                for value, count in counts.items():
                    slot[value] = slot.get(value, 0) + count
            yield out, spread, valid
