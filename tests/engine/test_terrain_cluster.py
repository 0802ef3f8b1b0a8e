"""terrainfactors on a local Dask cluster equals the one-process run, bit for bit."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from engine_helpers import REPO, context_text, job_context

from slidewise.engine.core.cluster import ClusterOptions, dask_client
from slidewise.engine.preparation import terrain_cluster
from slidewise.engine.preparation.terrain_cluster import ROUTING_ON_WORKER
from slidewise.engine.preparation.terrainfactors import TERRAIN_BANDS, TerrainParams, run_job

#: The real 10 m DEM of the Ecuador test area (383 x 415 px, nodata holes), in the repository.
DEM = REPO / "tests" / "data" / "ecuador" / "dem_10m.tif"


def _terrain(output: Path, **extra: Any) -> tuple[np.ndarray, dict[str, Any], str]:
    ctx, _ = job_context("terrainfactors")
    params = {"INPUT": str(DEM), "OUTPUT": str(output), "BLOCK_SIZE": 96, **extra}
    result = run_job(params, ctx)
    with rasterio.open(output) as src:
        return src.read(), result.figures, context_text(ctx)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, dict[str, Any]]:
    """The one-process output and figures (the reference)."""
    bands, figures, log = _terrain(tmp_path_factory.mktemp("terrain") / "one.tif")
    assert "flow routing needs" not in log  # said only when the windows go to Dask
    return bands, figures


def _assert_same(run: tuple[np.ndarray, dict[str, Any], str], reference: Any) -> None:
    one, one_figures = reference
    two, two_figures, _ = run
    assert one.shape == (len(TERRAIN_BANDS), 415, 383)
    for i, name in enumerate(TERRAIN_BANDS):  # 20 windows of 96 px, each with its halo
        assert np.isfinite(one[i]).sum() > 150_000, name
        # Bit for bit, NaN included: the same functions on the same window and halo.
        assert np.array_equal(two[i].view(np.uint32), one[i].view(np.uint32)), name
    assert two_figures["bands"] == one_figures["bands"]
    assert two_figures["dem_valid_pixels"] == one_figures["dem_valid_pixels"]
    assert "cluster" not in one_figures


@pytest.mark.slow
def test_two_local_workers_write_what_one_process_writes(tmp_path: Path, one_process: Any) -> None:
    # Two workers: one routes the flow of the whole DEM (not window-local) while the
    # other computes the local bands; then the TWI band in a second pass.
    run = _terrain(tmp_path / "two.tif", WORKERS=2)
    _assert_same(run, one_process)
    assert run[1]["cluster"]["workers"] == 2
    assert run[1]["cluster"]["flow_routing"] == "worker"
    assert ROUTING_ON_WORKER in run[2] and "s on a Dask worker; now the TWI band" in run[2]
    assert not multiprocessing.active_children()  # the local cluster closed with the job


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """The address of a running 2-worker Dask cluster (the SCHEDULER of the tests)."""
    with dask_client(ClusterOptions(workers=2), log=lambda _: None) as client:
        yield client.scheduler.address


@pytest.mark.slow
def test_routing_in_the_job_when_no_worker_has_the_memory(
    tmp_path: Path, one_process: Any, scheduler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(terrain_cluster, "ROUTING_MEMORY_SHARE", 0.0)
    run = _terrain(tmp_path / "job.tif", SCHEDULER=scheduler)
    _assert_same(run, one_process)
    assert run[1]["cluster"]["flow_routing"] == "job"
    assert "runs in this process before the windows are sent (no Dask worker has the" in run[2]


class _CancelAfterFirstWindow(BaseException):
    """What the worker's SIGTERM handler raises (a BaseException, like ``Cancelled``)."""


@pytest.mark.slow
def test_cancel_during_the_windows_leaves_nothing(tmp_path: Path, scheduler: str) -> None:
    from slidewise.engine.geo.raster import open_raster
    from slidewise.engine.preparation.terrainfactors import compute_terrain

    seen: list[float] = []

    def progress(fraction: float) -> None:
        seen.append(fraction)
        if fraction > 0:  # the first window is written
            raise _CancelAfterFirstWindow

    params = TerrainParams.from_params(
        {"INPUT": str(DEM), "OUTPUT": str(tmp_path / "t.tif"), "BLOCK_SIZE": 96}
        | {"SCHEDULER": scheduler}
    )
    with pytest.raises(_CancelAfterFirstWindow):
        compute_terrain(open_raster(str(DEM)), params.output, params, progress=progress)
    assert seen == [pytest.approx(0.7 / 20)]  # progress per window: 1 of 20 in the first pass
    assert list(tmp_path.iterdir()) == []  # no output, no partial file


def test_the_spec_carries_workers_and_scheduler() -> None:
    params = TerrainParams.from_params(
        {"INPUT": "d.tif", "OUTPUT": "o.tif", "WORKERS": 3, "SCHEDULER": "tcp://head:8786"}
    )
    assert (params.workers, params.scheduler) == (3, "tcp://head:8786")
    assert TerrainParams.from_params({"INPUT": "d.tif", "OUTPUT": "o.tif"}).workers == 1
    assert "TWI's flow routing needs the whole DEM" in TerrainParams.SPEC["WORKERS"].help


@pytest.mark.slow
def test_an_all_nodata_dem_routed_on_a_worker_is_refused_and_leaves_nothing(
    tmp_path: Path, scheduler: str
) -> None:
    from slidewise.engine.core.errors import InputError

    with rasterio.open(DEM) as src:
        profile = {**src.profile, "width": 40, "height": 30}
    dem = tmp_path / "in" / "allnodata.tif"
    dem.parent.mkdir()
    with rasterio.open(dem, "w", **profile) as dst:
        dst.write(np.full((1, 30, 40), profile["nodata"], dtype=profile["dtype"]))
    out = tmp_path / "out"
    out.mkdir()
    ctx, _ = job_context("terrainfactors")
    params = {"INPUT": str(dem), "OUTPUT": str(out / "t.tif"), "BLOCK_SIZE": 16}
    with pytest.raises(InputError, match=r"no valid elevation.*choose a DEM with data"):
        run_job({**params, "SCHEDULER": scheduler}, ctx)
    assert list(out.iterdir()) == []
