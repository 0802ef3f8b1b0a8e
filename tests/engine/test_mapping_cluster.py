"""maplandslides on a local Dask cluster writes what the one-process run writes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from engine_helpers import REPO, job_context, log_messages

BIJIE = REPO / "tests" / "data" / "bijie" / "test" / "images" / "10105.png"

# One thread in the job's process, as on each Dask worker: then the forward passes
# are the same bit for bit (with more threads oneDNN's sums may differ by ~3e-8).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small random ResU-Net on RGB (mechanics only), saved as a mapping model."""
    import torch

    from slidewise.engine.imagery.segmodels import SegModelConfig, build_model, save_mapping_model

    torch.manual_seed(0)
    config = SegModelConfig(
        architecture="resunet", in_channels=3, extra={"widths": [4, 8, 8, 16, 16]}
    )
    model = build_model(config).eval()
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    norm = {"kind": "fit", "mean": [90.0, 90.0, 80.0], "std": [40.0, 40.0, 40.0]}
    save_mapping_model(path, model, config, ["red", "green", "blue"], norm, tile_size=128)
    return str(path)


def _map(model: str, folder: Path, name: str, **extra: Any) -> tuple[dict[str, np.ndarray], Any]:
    from slidewise.engine.mapping.apply import run_map

    outputs = {
        k: str(folder / f"{name}_{k.lower()}.tif") for k in ("OUTPUT_PROBABILITY", "OUTPUT_MASK")
    }
    params = {"INPUT": str(BIJIE), "MODEL": model, "TILE_SIZE": 128, "OVERLAP": 32}
    ctx, stream = job_context("maplandslides")
    result = run_map({**params, **outputs, **extra}, ctx)
    arrays = {}
    for key, path in outputs.items():
        with rasterio.open(path) as src:
            arrays[key] = src.read(1)
    return arrays, (result, log_messages(stream))


@pytest.mark.slow
def test_two_local_workers_write_what_one_process_writes(tiny_model: str, tmp_path: Path) -> None:
    one, (one_result, _) = _map(tiny_model, tmp_path, "one")
    two, (two_result, logs) = _map(tiny_model, tmp_path, "two", WORKERS=2)
    assert any("local Dask cluster of 2 worker" in m for m in logs)
    prob = one["OUTPUT_PROBABILITY"]
    assert np.isfinite(prob).all() and 0.0 < float(np.std(prob))  # a real, varied map
    # Same tiles, same blending order: the same numbers, bit for bit.
    assert np.array_equal(two["OUTPUT_PROBABILITY"], prob)
    assert np.array_equal(two["OUTPUT_MASK"], one["OUTPUT_MASK"])
    figures = ("tiles", "tiles_skipped", "landslide_pixels", "valid_pixels")
    assert {k: two_result.figures[k] for k in figures} == {
        k: one_result.figures[k] for k in figures
    }
    assert two_result.figures["tiles"] > 4  # several tile rows went to the workers
    assert not multiprocessing.active_children()  # the local cluster closed with the job


def test_a_pickled_tile_row_task_predicts_what_this_process_predicts(tiny_model: str) -> None:
    """The task detectlandslides and maplandslides send to workers, run here (no cluster)."""
    import pickle

    from slidewise.engine.imagery.segmodels import load_mapping_model
    from slidewise.engine.imagery.tiling import (
        TileLayout,
        TilingOptions,
        make_runner,
        open_source,
        predict_tile_row,
    )
    from slidewise.engine.imagery.tiling_cluster import ModelTileRowTask

    tiling = TilingOptions(tile=128, overlap=32, device="cpu")
    task = ModelTileRowTask.for_tiling(str(BIJIE), tiny_model, [1, 2, 3], tiling)
    layout = TileLayout.plan(720, 512, 3, 128, 32, 1)
    task = pickle.loads(pickle.dumps(task))
    remote = task((layout, 2))
    assert "opened" not in pickle.loads(pickle.dumps(task)).__dict__  # never pickled open
    net, meta = load_mapping_model(tiny_model, device="cpu")
    source, reader = open_source(str(BIJIE), [1, 2, 3])
    with reader:
        local = predict_tile_row(source, layout, make_runner(net, meta.normalisation), None, 2)
    assert [x for x, _ in remote.tiles] == [x for x, _ in local.tiles] == list(layout.cols.starts)
    for (_, a), (_, b) in zip(remote.tiles, local.tiles, strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(remote.valid, local.valid) and remote.valid.all()


def test_the_workers_run_the_backend_the_job_resolved(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BACKEND onnxruntime in the job: the task a worker opens computes with ONNX Runtime."""
    import pickle

    from slidewise.engine.imagery import backends
    from slidewise.engine.imagery.tiling import TileLayout, TilingOptions
    from slidewise.engine.imagery.tiling_cluster import ModelTileRowTask, backend_name

    monkeypatch.setenv(backends.CACHE_ENV, str(tmp_path / "cache"))
    tiling = TilingOptions(tile=128, overlap=32, device="cpu", channels_last=False)
    layout = TileLayout.plan(720, 512, 3, 128, 32, 1)
    rows = {}
    for name in ("torch", "onnxruntime"):
        task = ModelTileRowTask.for_tiling(str(BIJIE), tiny_model, [1, 2, 3], tiling, name)
        task = pickle.loads(pickle.dumps(task))  # as a worker receives it
        rows[name] = task((layout, 2))
        assert backend_name(task.__dict__["opened"][1].model) == name
    assert isinstance(task.__dict__["opened"][1].model, backends.OnnxRuntimeModule)
    for (_, a), (_, b) in zip(rows["onnxruntime"].tiles, rows["torch"].tiles, strict=True):
        assert np.nanmax(np.abs(a - b)) <= 1e-4  # the same model, another runtime


@pytest.mark.slow
def test_two_workers_with_onnx_runtime_write_what_one_process_writes(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slidewise.engine.imagery import backends

    monkeypatch.setenv(backends.CACHE_ENV, str(tmp_path / "cache"))
    one, (one_result, _) = _map(tiny_model, tmp_path, "one", BACKEND="onnxruntime")
    two, (two_result, logs) = _map(tiny_model, tmp_path, "two", BACKEND="onnxruntime", WORKERS=2)
    assert one_result.figures["backend"] == two_result.figures["backend"] == "onnxruntime"
    assert two_result.figures["cluster"]["backend"] == "onnxruntime"
    assert any("workers run the model with the onnxruntime backend" in m for m in logs)
    # One ONNX Runtime thread in the job and in each worker: the same numbers.
    assert np.array_equal(two["OUTPUT_PROBABILITY"], one["OUTPUT_PROBABILITY"])


class _Cancelled(BaseException):
    """What the worker raises on Cancel (SIGTERM), raised here from the progress callback."""


@pytest.mark.slow
def test_a_cancel_mid_way_leaves_no_output_and_no_worker(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slidewise.engine.core.protocol import Reporter
    from slidewise.engine.mapping.apply import run_map

    calls: list[float] = []

    def cancel_on_third(self: Reporter, value: float) -> None:
        calls.append(value)
        if len(calls) == 3:
            raise _Cancelled

    monkeypatch.setattr(Reporter, "progress", cancel_on_third)
    params = {"INPUT": str(BIJIE), "MODEL": tiny_model, "TILE_SIZE": 128, "OVERLAP": 32}
    params |= {"WORKERS": 2, "OUTPUT_PROBABILITY": str(tmp_path / "p.tif")}
    with pytest.raises(_Cancelled):
        run_map({**params, "OUTPUT_MASK": str(tmp_path / "m.tif")}, job_context("map")[0])
    assert list(tmp_path.iterdir()) == []  # no output, no partial file
    assert not multiprocessing.active_children()  # the workers are gone


def test_a_killed_mapping_resumes_to_the_uninterrupted_result(
    tiny_model: str, tmp_path: Path
) -> None:
    """SIGKILL after 3 tile rows (a hidden test hook), run again: the same outputs."""
    import json
    import os
    import signal
    import subprocess
    import sys

    import pyogrio.raw

    from slidewise.engine.core.resume import KILL_AFTER_ENV

    def params(folder: Path) -> dict[str, Any]:
        names = {"OUTPUT_PROBABILITY": "p.tif", "OUTPUT_MASK": "m.tif", "OUTPUT_POLYGONS": "s.gpkg"}
        outputs = {k: str(folder / v) for k, v in names.items()}
        common = {"INPUT": str(BIJIE), "MODEL": tiny_model, "TILE_SIZE": 128, "OVERLAP": 32}
        return common | {"THRESHOLD": 0.42} | outputs

    whole = tmp_path / "whole"
    whole.mkdir()
    _, (expected, _) = _map_params(params(whole))
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[2])\n"
        "from engine_helpers import job_context\n"
        "from slidewise.engine.mapping.apply import run_map\n"
        "run_map(json.loads(sys.argv[1]), job_context('maplandslides')[0])\n"
    )
    env = {**os.environ, KILL_AFTER_ENV: "3", "OMP_NUM_THREADS": "1"}
    run = params(tmp_path)
    here = str(Path(__file__).parent)
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(run), here], env=env, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not Path(run["OUTPUT_PROBABILITY"]).exists()

    _, (result, logs) = _map_params(run)
    assert "Resuming a stopped run: from tile row 4 of 8." in logs
    for key in ("OUTPUT_PROBABILITY", "OUTPUT_MASK"):
        with rasterio.open(run[key]) as a, rasterio.open(params(whole)[key]) as b:
            assert np.array_equal(a.read(1), b.read(1), equal_nan=True), key
    got = pyogrio.raw.read(run["OUTPUT_POLYGONS"])
    want = pyogrio.raw.read(params(whole)["OUTPUT_POLYGONS"])
    assert list(got[2]) == list(want[2])  # the same geometries (WKB), in the same order
    assert result.figures["landslide_pixels"] == expected.figures["landslide_pixels"] > 1000
    assert len(want[2]) > 3  # polygons, some across the resumed tile rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif", "p.tif", "s.gpkg", "whole"]


def _map_params(params: dict[str, Any]) -> tuple[None, Any]:
    from slidewise.engine.mapping.apply import run_map

    ctx, stream = job_context("maplandslides")
    return None, (run_map(params, ctx), log_messages(stream))
