"""A predictsusceptibility run killed half-way (SIGKILL) resumes to the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from engine_helpers import REPO, job_context, log_messages

from slidewise.contract.partials import partial_glob
from slidewise.engine.core.resume import KILL_AFTER_ENV, state_path

ECUADOR = REPO / "tests" / "data" / "ecuador"
#: ta.tif is 383 x 415 px: 42 windows of 64 px, checkpointed every 4.
BLOCK = 64


@pytest.fixture(scope="module")
def lr_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    from slidewise.engine.susceptibility.train import run_train

    out = tmp_path_factory.mktemp("resume") / "lr.safetensors"
    params = {
        "INPUT": str(ECUADOR / "ta.tif"),
        "INVENTORY": str(ECUADOR / "lsl.csv"),
        "LABEL_FIELD": "lslpts",
        "METHOD": "lr",
        "CV_FOLDS": 0,
        "OUTPUT": str(out),
    }
    run_train(params, job_context("trainsusceptibility")[0])
    return str(out)


def _params(model: str, folder: Path) -> dict[str, Any]:
    return {
        "MODEL": model,
        "INPUT": str(ECUADOR / "ta.tif"),
        "BLOCK_SIZE": BLOCK,
        "OUTPUT": str(folder / "susceptibility.tif"),
        "CLASSED": str(folder / "classes.tif"),
    }


def _predict(params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    from slidewise.engine.susceptibility.predict import run_predict

    ctx, stream = job_context("predictsusceptibility")
    return run_predict(params, ctx).figures, log_messages(stream)


def _killed_run(params: dict[str, Any], after: int) -> None:
    """Run the job in a child process that SIGKILLs itself after ``after`` windows."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[2])\n"
        "from engine_helpers import job_context\n"
        "from slidewise.engine.susceptibility.predict import run_predict\n"
        "run_predict(json.loads(sys.argv[1]), job_context('predictsusceptibility')[0])\n"
    )
    env = {**os.environ, KILL_AFTER_ENV: str(after), "OMP_NUM_THREADS": "1"}
    here = str(Path(__file__).parent)
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(params), here], env=env, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


def _read(path: str) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_a_killed_run_resumes_to_the_uninterrupted_result(lr_model: str, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    whole.mkdir()
    expected, _ = _predict(_params(lr_model, whole))

    params = _params(lr_model, tmp_path)
    _killed_run(params, after=22)  # 5 checkpoints (20 windows) on disk, 2 windows lost
    output = params["OUTPUT"]
    assert not Path(output).exists()
    state = json.loads(state_path(output).read_text())
    assert (state["done"], state["total"]) == (20, 42)

    figures, logs = _predict(params)
    assert "Resuming a stopped run: from window 21 of 42." in logs
    assert np.array_equal(_read(output), _read(str(whole / "susceptibility.tif")), equal_nan=True)
    assert np.array_equal(_read(params["CLASSED"]), _read(str(whole / "classes.tif")))
    for key in ("valid_pixels", "min", "max", "mean", "extreme_share", "classes"):
        assert figures[key] == expected[key], key
    assert not list(tmp_path.glob(partial_glob(output)))  # partials and state gone


def test_other_parameters_start_afresh_and_say_so(lr_model: str, tmp_path: Path) -> None:
    params = _params(lr_model, tmp_path)
    _killed_run(params, after=9)
    assert state_path(params["OUTPUT"]).is_file()
    _, logs = _predict({**params, "BLOCK_SIZE": 128})
    assert any("starting afresh" in m for m in logs)
    assert not any("Resuming" in m for m in logs)
    assert Path(params["OUTPUT"]).is_file()
    assert not list(tmp_path.glob(partial_glob(params["OUTPUT"])))


def test_an_error_leaves_neither_partial_nor_state(lr_model: str, tmp_path: Path) -> None:
    from slidewise.engine.core.resume import Checkpoints, resumable_rasters

    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 1, "dtype": "float32"}
    output = str(tmp_path / "out.tif")
    run = Checkpoints.start([output], "k" * 64, 4, log=lambda _: None)
    with pytest.raises(RuntimeError), resumable_rasters(run, [(output, profile, ["p"])]) as rasters:
        rasters.written(1, dict)
        run.save(1, {})  # a checkpoint on disk, then a failure (as a Cancel raises)
        raise RuntimeError("cancelled")
    assert list(tmp_path.iterdir()) == []
