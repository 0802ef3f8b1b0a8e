"""terrainfactors on a local Dask cluster equals the one-process run, bit for bit."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from engine_helpers import REPO, context_text, job_context

from slidewise.engine.preparation.terrain_cluster import ROUTING_NOTE
from slidewise.engine.preparation.terrainfactors import TERRAIN_BANDS, TerrainParams, run_job

#: The real 10 m DEM of the Ecuador test area (383 x 415 px, nodata holes), in the repository.
DEM = REPO / "tests" / "data" / "ecuador" / "dem_10m.tif"


def _terrain(output: Path, **extra: Any) -> tuple[np.ndarray, dict[str, Any], str]:
    ctx, _ = job_context("terrainfactors")
    params = {"INPUT": str(DEM), "OUTPUT": str(output), "BLOCK_SIZE": 96, **extra}
    result = run_job(params, ctx)
    with rasterio.open(output) as src:
        return src.read(), result.figures, context_text(ctx)


@pytest.mark.slow
def test_two_local_workers_write_what_one_process_writes(tmp_path: Path) -> None:
    one, one_figures, one_log = _terrain(tmp_path / "one.tif")
    two, two_figures, two_log = _terrain(tmp_path / "two.tif", WORKERS=2)
    assert one.shape == (len(TERRAIN_BANDS), 415, 383)
    for i, name in enumerate(TERRAIN_BANDS):  # 20 windows of 96 px, each with its halo
        assert np.isfinite(one[i]).sum() > 150_000, name
        # Bit for bit, NaN included: the same function on the same window and halo.
        assert np.array_equal(two[i].view(np.uint32), one[i].view(np.uint32)), name
    assert two_figures["bands"] == one_figures["bands"]
    assert two_figures["cluster"]["workers"] == 2 and "cluster" not in one_figures
    # The TWI's flow routing is not window-local: it stays in the job's process, and
    # the log says so (only when the windows go to Dask).
    assert ROUTING_NOTE.split(",")[0] in two_log and "flow routing needs" not in one_log
    assert not multiprocessing.active_children()  # the local cluster closed with the job


class _CancelAfterFirstWindow(BaseException):
    """What the worker's SIGTERM handler raises (a BaseException, like ``Cancelled``)."""


@pytest.mark.slow
def test_cancel_during_the_windows_leaves_nothing(tmp_path: Path) -> None:
    from slidewise.engine.geo.raster import open_raster
    from slidewise.engine.preparation.terrainfactors import compute_terrain

    seen: list[float] = []

    def progress(fraction: float) -> None:
        seen.append(fraction)
        if fraction > 0.4:  # the first window is written
            raise _CancelAfterFirstWindow

    params = TerrainParams.from_params(
        {"INPUT": str(DEM), "OUTPUT": str(tmp_path / "t.tif"), "BLOCK_SIZE": 96, "WORKERS": 2}
    )
    with pytest.raises(_CancelAfterFirstWindow):
        compute_terrain(open_raster(str(DEM)), params.output, params, progress=progress)
    assert 0.4 < seen[-1] < 0.5  # progress came per window, and the cancel after the first
    assert list(tmp_path.iterdir()) == []  # no output, no partial file
    assert not multiprocessing.active_children()


def test_the_spec_carries_workers_and_scheduler() -> None:
    params = TerrainParams.from_params(
        {"INPUT": "d.tif", "OUTPUT": "o.tif", "WORKERS": 3, "SCHEDULER": "tcp://head:8786"}
    )
    assert (params.workers, params.scheduler) == (3, "tcp://head:8786")
    assert TerrainParams.from_params({"INPUT": "d.tif", "OUTPUT": "o.tif"}).workers == 1
    assert "TWI's flow routing" in TerrainParams.SPEC["WORKERS"].help
