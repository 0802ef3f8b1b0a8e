"""predictsusceptibility on a local Dask cluster equals the one-process run."""

from __future__ import annotations

import io
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from engine_helpers import REPO

from slidewise.engine.core.cluster import ClusterOptions, dask_client, ordered_results
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext
from slidewise.engine.core.protocol import Reporter
from slidewise.engine.core.runtime import RuntimeOptions

ECUADOR = REPO / "tests" / "data" / "ecuador"


def ctx() -> JobContext:
    return JobContext("test", RuntimeOptions(device="cpu", seed=0), Reporter(io.StringIO()))


@pytest.fixture(scope="module")
def meta_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from slidewise.engine.susceptibility.segmentblocks import run_segment_blocks
    from slidewise.engine.susceptibility.train import run_train

    out = tmp_path_factory.mktemp("cluster")
    common = {"INPUT": str(ECUADOR / "ta.tif"), "INVENTORY": str(ECUADOR / "lsl.csv")}
    common["LABEL_FIELD"] = "lslpts"
    blocks = str(out / "blocks.tif")
    run_segment_blocks({**common, "N_BLOCKS": 12, "OUTPUT": blocks}, ctx())
    model = str(out / "model.safetensors")
    run_train(
        {
            **common,
            "BLOCKS": blocks,
            "ITERATIONS_META": 40,
            "TASKS_PER_BATCH": 4,
            "INNER_STEPS": 5,  # quick: the test compares one process with two workers
            "CV_FOLDS": 0,
            "IMPORTANCE_SAMPLES": 0,
            "OUTPUT": model,
        },
        ctx(),
    )
    return {"dir": str(out), "model": model}


def _predict(meta_model: dict[str, str], name: str, **extra: Any) -> dict[str, np.ndarray]:
    from slidewise.engine.susceptibility.predict import run_predict

    folder = Path(meta_model["dir"])
    outputs = {k: str(folder / f"{name}_{k.lower()}.tif") for k in ("OUTPUT", "UNCERTAINTY")}
    params = {"MODEL": meta_model["model"], "INPUT": str(ECUADOR / "ta.tif"), "BLOCK_SIZE": 96}
    run_predict({**params, **outputs, **extra}, ctx())
    arrays = {}
    for key, path in outputs.items():
        with rasterio.open(path) as src:
            arrays[key] = src.read(1)
    return arrays


@pytest.mark.slow
def test_two_local_workers_write_what_one_process_writes(meta_model: dict[str, str]) -> None:
    one = _predict(meta_model, "one")
    two = _predict(meta_model, "two", WORKERS=2)
    for key in one:
        assert np.isfinite(one[key]).sum() > 100_000, key
        np.testing.assert_allclose(two[key], one[key], rtol=0, atol=1e-6, err_msg=key)
        assert np.array_equal(np.isnan(two[key]), np.isnan(one[key])), key
    assert not multiprocessing.active_children()  # the local cluster closed with the job


def test_an_unreachable_scheduler_is_named_with_the_fix() -> None:
    options = ClusterOptions(scheduler="tcp://127.0.0.1:9", timeout_s=1)
    with pytest.raises(InputError, match=r"Could not reach the Dask scheduler.*leave SCHEDULER"):
        with dask_client(options, log=lambda _: None):
            pass


class _Double:
    def __call__(self, x: int) -> int:
        return 2 * x


@pytest.mark.slow
def test_results_come_back_in_order_with_few_in_flight() -> None:
    with dask_client(ClusterOptions(workers=2), log=lambda _: None) as client:
        assert list(ordered_results(client, _Double(), range(25), in_flight=3)) == [
            2 * i for i in range(25)
        ]
        grouped = ordered_results(client, _Double(), range(25), in_flight=2, per_task=4)
        assert list(grouped) == [2 * i for i in range(25)]  # 7 tasks, the last of one item
        # One thread per worker (Dask's OMP/MKL settings), and glibc's own mmap threshold:
        # Dask's MALLOC_TRIM_THRESHOLD_ made every window's arrays page-fault afresh.
        settings = set(client.run(_worker_settings).values())
        assert settings == {(None, "1", "1", 1)}, settings


def _worker_settings() -> tuple[str | None, ...]:
    import os

    import torch

    names = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    return (*(os.environ.get(k) for k in names), torch.get_num_threads())


def test_small_rasters_give_every_worker_several_tasks() -> None:
    from slidewise.engine.core.cluster import TASKS_PER_WORKER, tasks_for

    assert tasks_for(144, 2, per_task=15) == 9  # 16 tasks, not 10 (8 per worker)
    assert tasks_for(10_000, 2, per_task=15) == 15  # large: the task size caps it
    assert tasks_for(3, 4, per_task=15) == 1
    assert -(-144 // tasks_for(144, 2, 15)) >= 2 * TASKS_PER_WORKER


@pytest.mark.slow
def test_cancel_stops_the_cluster_and_leaves_nothing(
    meta_model: dict[str, str], tmp_path: Path
) -> None:
    # SIGTERM (the plugin's Cancel) while the workers compute: the job's process, its Dask
    # workers and its partial output are all gone within 2 s.
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    out = tmp_path / "cancelled.tif"
    params = {"MODEL": meta_model["model"], "INPUT": str(ECUADOR / "ta.tif")}
    params.update(OUTPUT=str(out), BLOCK_SIZE=32, WORKERS=2)
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"job": "predictsusceptibility", "params": params}))
    env = dict(os.environ, PYTHONPATH=str(REPO.parent))
    worker = subprocess.Popen(
        [sys.executable, "-m", "slidewise.engine.worker", str(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert worker.stdout is not None
    for line in worker.stdout:  # the first window's progress: the workers are computing
        if '"progress"' in line and json.loads(line)["value"] > 1:
            break
    children = psutil.Process(worker.pid).children(recursive=True)
    assert len(children) >= 2
    worker.send_signal(signal.SIGTERM)
    start = time.monotonic()
    worker.wait(timeout=10)
    _, alive = psutil.wait_procs(children, timeout=max(0.1, 2 - (time.monotonic() - start)))
    running = [p for p in alive if _running(p)]  # an unreaped zombie has ended
    assert not running, [p.pid for p in running]
    assert worker.returncode == 3  # cancelled
    assert not list(tmp_path.glob("cancelled*"))


def _running(process: Any) -> bool:
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
