"""Data-parallel training under torchrun: shares, one writer, equality with one process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_helpers import REPO as REPO_ROOT

from slidewise.engine.core.distributed import batch_share
from slidewise.engine.core.placement import Placement, private_outputs
from slidewise.engine.core.protocol import Reporter
from slidewise.engine.imagery.segmodels import load_mapping_model
from slidewise.engine.worker import EXIT_USER, run_placed

BIJIE_TRAIN = REPO_ROOT / "tests" / "data" / "bijie" / "train"
TINY = {"widths": [8, 16, 32], "residual": False, "deep_supervision": False}


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n_items", [1, 5, 8])
def test_batch_shares_cover_the_batch_once(world: int, n_items: int) -> None:
    taken = []
    for rank in range(world):
        share = batch_share(n_items, Placement(rank=rank, world_size=world))
        taken.extend(range(n_items)[share])
        assert len(range(n_items)[share]) in (n_items // world, n_items // world + 1)
    assert taken == list(range(n_items))


def test_placement_comes_from_torchrun_variables() -> None:
    assert Placement.from_environment({}) == Placement()
    env = {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "h",
        "MASTER_PORT": "1",
    }
    place = Placement.from_environment(env)
    assert (place.rank, place.world_size, place.writer, place.parallel) == (1, 2, False, True)


def test_other_ranks_write_into_their_private_folder() -> None:
    params = {
        "OUTPUT": "/data/model.safetensors",
        "CHECKPOINT": "/data/ck.safetensors",
        "EPOCHS": 3,
    }
    moved = private_outputs("trainmapping", params, "/tmp/rank1")
    assert moved["OUTPUT"] == os.path.join("/tmp/rank1", "OUTPUT.safetensors")
    assert moved["CHECKPOINT"] == "/data/ck.safetensors"  # read on resume; only rank 0 writes it
    assert moved["EPOCHS"] == 3


def test_a_job_that_does_not_train_refuses_torchrun() -> None:
    stream = io.StringIO()
    job = {"job": "predictsusceptibility", "params": {}}
    code = run_placed(job, Reporter(stream), Placement(rank=0, world_size=2))
    assert code == EXIT_USER
    message = json.loads(stream.getvalue().splitlines()[-1])
    assert "does not train data-parallel" in message["message"]
    assert "run it without torchrun" in message["message"]


def _train_job(tmp: Path, name: str) -> dict:
    return {
        "job": "trainmapping",
        "params": {
            "DATASET_TYPE": "pairs",
            "TRAIN_IMAGES": str(BIJIE_TRAIN / "images"),
            "TRAIN_MASKS": str(BIJIE_TRAIN / "masks"),
            "MASK_COLOR": "255,255,0",
            "ARCHITECTURE": "resunet",
            "MODEL_OPTIONS": json.dumps(TINY),
            "CHIP_SIZE": 64,
            "CHIPS_PER_EPOCH": 16,
            "BATCH_SIZE": 8,
            "VALID_FRACTION": 0.34,
            "EPOCHS": 2,
            # Calibration rescales the logits by a factor fitted on validation pixels, which
            # would magnify the batch-norm noise this test bounds.
            "CALIBRATE": False,
            "OUTPUT": str(tmp / f"{name}.safetensors"),
        },
        "options": {"seed": 3, "threads": 1, "device": "cpu"},
    }


def _engine(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT.parent), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=240, env=env, cwd=tmp
    )


@pytest.mark.slow
def test_two_gloo_processes_train_what_one_process_trains(tmp_path: Path) -> None:
    # The same seed and global batch: two processes (each half of every batch, gradients
    # averaged) end within batch-norm noise of one process; only rank 0 writes the model.
    for name in ("one", "two"):
        (tmp_path / f"{name}.json").write_text(json.dumps(_train_job(tmp_path, name)))
    single = _engine(["-m", "slidewise.engine.cli", "run", "one.json"], tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    double = _engine([*launch, "-m", "slidewise.engine.cli", "run", "two.json"], tmp_path)
    assert double.returncode == 0, double.stderr[-2000:]
    messages = [json.loads(line) for line in double.stdout.splitlines() if line.startswith("{")]
    assert sum(m.get("type") == "result" for m in messages) == 1  # one protocol writer
    assert any("2 processes share each batch" in m.get("message", "") for m in messages)
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [
        "one.safetensors",
        "two.safetensors",
    ]
    one, _ = load_mapping_model(tmp_path / "one.safetensors")
    two, _ = load_mapping_model(tmp_path / "two.safetensors")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gap = float((torch.sigmoid(one(x)) - torch.sigmoid(two(x))).abs().max())
    assert gap < 5e-3  # measured 1e-3: batch-norm statistics of half batches


@pytest.mark.slow
def test_masked_pretraining_runs_data_parallel(tmp_path: Path) -> None:
    # Masked pre-training draws its masks per chip: each process draws its own share's
    # masks from a generator forked off the shared one, and the processes still end
    # with equal weights (the engine checks it before writing).
    from PIL import Image

    crops = tmp_path / "crops"
    crops.mkdir()
    with Image.open(sorted((BIJIE_TRAIN / "images").iterdir())[0]) as image:
        for i in range(8):
            image.crop((64 * i, 128, 64 * i + 64, 192)).save(crops / f"{i}.png")
    job = {
        "job": "pretrainencoder",
        "params": {
            "IMAGES": str(crops),
            "CHIP_SIZE": 64,
            "EPOCHS": 1,
            "BATCH_SIZE": 4,
            "OUTPUT": str(tmp_path / "mae.safetensors"),
        },
        "options": {"seed": 1, "threads": 1, "device": "cpu"},
    }
    (tmp_path / "mae.json").write_text(json.dumps(job))
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = _engine([*launch, "-m", "slidewise.engine.cli", "run", "mae.json"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "different weights" not in done.stdout
    assert [p.name for p in tmp_path.glob("*.safetensors")] == ["mae.safetensors"]
