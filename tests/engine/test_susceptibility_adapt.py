"""adaptsusceptibility on the real Ecuador data: meta-train on the north, adapt to the south."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from engine_helpers import REPO, job_context, log_messages

from slidewise.engine.core.errors import InputError
from slidewise.engine.susceptibility.adapt import run_adapt, split_support
from slidewise.engine.susceptibility.predict import run_predict
from slidewise.engine.susceptibility.segmentblocks import run_segment_blocks
from slidewise.engine.susceptibility.train import run_train

ECUADOR = REPO / "tests" / "data" / "ecuador"
TA = ECUADOR / "ta.tif"
SPLIT_Y = 9558766  # as scripts/demo.d/20-susceptibility.sh
POINTS = {"LABEL_FIELD": "lslpts", "INVENTORY_CRS": "EPSG:32717"}


def half(src: Path, dst: Path, north: bool) -> Path:
    """The points of ``src`` north (or south) of SPLIT_Y, as x, y, lslpts."""
    with open(src, newline="") as fh, open(dst, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["x", "y", "lslpts"])
        for row in csv.DictReader(fh):
            if (float(row["y"]) > SPLIT_Y) == north:
                writer.writerow([row["x"], row["y"], row["lslpts"]])
    return dst


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A meta model of the north (few iterations), adapted to the south with 5 shots."""
    out = tmp_path_factory.mktemp("adapt")
    north = half(ECUADOR / "lsl.csv", out / "north.csv", True)
    south = half(ECUADOR / "landslides.csv", out / "south.csv", False)
    blocks = str(out / "blocks.tif")
    c, _ = job_context("segmentblocks")
    run_segment_blocks(
        {"INPUT": str(TA), "N_BLOCKS": 24, "INVENTORY": str(north), **POINTS, "OUTPUT": blocks},
        c,
    )
    model = str(out / "meta.safetensors")
    train = {"INPUT": str(TA), "INVENTORY": str(north), "BLOCKS": blocks, **POINTS}
    c, _ = job_context("trainsusceptibility")
    run_train(
        {
            **train,
            "METHOD": "meta",
            "ITERATIONS_META": 40,
            "TASKS_PER_BATCH": 4,
            "CV_FOLDS": 0,
            "IMPORTANCE_SAMPLES": 0,
            "OUTPUT": model,
        },
        c,
    )
    params = {
        "MODEL": model,
        "INPUT": str(TA),
        "INVENTORY": str(south),
        **POINTS,
        "BLOCKS": blocks,
        "SHOTS": 5,
        "OUTPUT": str(out / "adapted.safetensors"),
        "OUTPUT_SAMPLES": str(out / "samples.csv"),
    }
    c, stream = job_context("adaptsusceptibility")
    result = run_adapt(params, c)
    return {"dir": out, "result": result, "log": log_messages(stream), "params": params}


def test_adapted_model_scores_and_predicts(adapted: dict[str, Any]) -> None:
    from slidewise.engine.core.modelfile import load_model

    result, out = adapted["result"], adapted["dir"]
    fig = result.figures
    # Every one of the 761 southern points on the stack is either adapted on or scored.
    assert fig["support_samples"] + fig["holdout_samples"] == 761
    assert fig["support_samples"] <= 5 * len(fig["blocks"])
    assert 0.5 < fig["holdout_auc_after"] <= 1 and 0 < fig["holdout_auc_before"] < 1
    assert fig["holdout_auc_after"] != fig["holdout_auc_before"]
    assert any("before" in m and "after" in m for m in adapted["log"])
    rows = [r for r in fig["blocks"].values() if r["adapted"]]
    assert rows and all(0 < r["support"] <= 5 for r in rows)
    tensors, meta = load_model(result.outputs["OUTPUT"], task="susceptibility")
    assert all(f"blocks.{b}.net.0.weight" in tensors for b in fig["adapted_blocks"])
    assert meta.metrics["adaptation"]["holdout_auc_after"] == fig["holdout_auc_after"]
    # predictsusceptibility uses the adapted model as it is; its pixels at the
    # held-out samples are the (calibrated) probabilities the job scored (without the
    # blending at block borders, which the job's scores do not include).
    c, _ = job_context("predictsusceptibility")
    run_predict(
        {
            "MODEL": result.outputs["OUTPUT"],
            "INPUT": str(TA),
            "OUTPUT": str(out / "p.tif"),
            "BLEND_WIDTH": 0,
        },
        c,
    )
    with open(adapted["params"]["OUTPUT_SAMPLES"], newline="") as fh:
        samples = list(csv.DictReader(fh))
    with rasterio.open(out / "p.tif") as src:
        xy = [(float(r["x"]), float(r["y"])) for r in samples]
        mapped = np.array([v[0] for v in src.sample(xy)])
    after = np.array([float(r["p_after"]) for r in samples])
    np.testing.assert_allclose(mapped, after, atol=1e-5)


def test_held_out_samples_are_not_adapted_on(adapted: dict[str, Any]) -> None:
    """Adapting on the support samples alone gives the same weights: the held-out
    samples played no part in them."""
    from slidewise.engine.core.modelfile import load_model

    out, params = adapted["dir"], adapted["params"]
    with open(params["OUTPUT_SAMPLES"], newline="") as fh:
        samples = [r for r in csv.DictReader(fh) if r["role"] == "support"]
    support = out / "support.csv"
    with open(support, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["x", "y", "lslpts"])
        writer.writerows([r["x"], r["y"], r["label"]] for r in samples)
    c, _ = job_context("adaptsusceptibility")
    again = run_adapt(
        {
            **params,
            "INVENTORY": str(support),
            "SHOTS": 0,
            "HOLDOUT": 0.0,
            "OUTPUT": str(out / "a2.safetensors"),
            "OUTPUT_SAMPLES": None,
        },
        c,
    )
    assert again.figures["holdout_samples"] == 0
    assert again.figures["adapted_blocks"] == adapted["result"].figures["adapted_blocks"]
    t1, _ = load_model(params["OUTPUT"], task="susceptibility")
    t2, _ = load_model(again.outputs["OUTPUT"], task="susceptibility")
    assert set(t1) == set(t2)
    for name in t1:
        np.testing.assert_allclose(t1[name].numpy(), t2[name].numpy(), atol=1e-6, err_msg=name)


def test_split_support_holds_out_each_class_and_balances_shots() -> None:
    labels = np.array([1] * 10 + [0] * 30 + [1])
    blocks = np.array([1] * 40 + [2])
    support = split_support(labels, blocks, shots=4, holdout=0.3, seed=0)
    assert support.sum() == 5  # 4 in block 1 and the lone sample of block 2
    assert labels[:40][support[:40]].sum() == 2  # two landslides, two non-landslides
    everything = split_support(labels, blocks, shots=0, holdout=0.3, seed=0)
    assert everything[:10].sum() == 7 and everything[10:40].sum() == 21


def test_refuses_a_global_model(adapted: dict[str, Any], tmp_path: Path) -> None:
    params = adapted["params"]
    rf = str(tmp_path / "rf.safetensors")
    c, _ = job_context("trainsusceptibility")
    run_train(
        {
            "INPUT": str(TA),
            "INVENTORY": str(ECUADOR / "lsl.csv"),
            **POINTS,
            "METHOD": "rf",
            "N_ESTIMATORS": 10,
            "CV_FOLDS": 0,
            "IMPORTANCE_SAMPLES": 0,
            "OUTPUT": rf,
        },
        c,
    )
    c, _ = job_context("adaptsusceptibility")
    with pytest.raises(InputError, match="METHOD meta"):
        run_adapt({**params, "MODEL": rf, "OUTPUT": str(tmp_path / "x.safetensors")}, c)


def test_refuses_a_stack_without_the_model_factors(adapted: dict[str, Any], tmp_path: Path) -> None:
    params = {**adapted["params"], "INPUT": None, "FACTORS": [str(ECUADOR / "dem_10m.tif")]}
    c, _ = job_context("adaptsusceptibility")
    with pytest.raises(InputError, match="lacks the model's factor"):
        run_adapt({**params, "OUTPUT": str(tmp_path / "x.safetensors")}, c)
    assert not any(tmp_path.iterdir())
