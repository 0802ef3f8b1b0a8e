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
def area(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The north's training points, the south's inventory and 24 blocks of the stack."""
    out = tmp_path_factory.mktemp("adapt")
    north = half(ECUADOR / "lsl.csv", out / "north.csv", True)
    south = half(ECUADOR / "landslides.csv", out / "south.csv", False)
    blocks = out / "blocks.tif"
    c, _ = job_context("segmentblocks")
    run_segment_blocks(
        {
            "INPUT": str(TA),
            "N_BLOCKS": 24,
            "INVENTORY": str(north),
            **POINTS,
            "OUTPUT": str(blocks),
        },
        c,
    )
    return {"dir": out, "north": north, "south": south, "blocks": blocks}


def train_north(area: dict[str, Path], method: str, **extra: Any) -> str:
    """A block-wise model of the north (few meta-iterations) on the area's blocks."""
    model = str(area["dir"] / f"{method}.safetensors")
    c, _ = job_context("trainsusceptibility")
    run_train(
        {
            "INPUT": str(TA),
            "INVENTORY": str(area["north"]),
            "BLOCKS": str(area["blocks"]),
            **POINTS,
            "METHOD": method,
            "ITERATIONS_META": 40,
            "TASKS_PER_BATCH": 4,
            "CV_FOLDS": 0,
            "IMPORTANCE_SAMPLES": 0,
            "OUTPUT": model,
            **extra,
        },
        c,
    )
    return model


def adapt_south(area: dict[str, Path], model: str, name: str) -> dict[str, Any]:
    """``model`` adapted to the south with 5 shots per block."""
    out = area["dir"]
    params = {
        "MODEL": model,
        "INPUT": str(TA),
        "INVENTORY": str(area["south"]),
        **POINTS,
        "BLOCKS": str(area["blocks"]),
        "SHOTS": 5,
        "OUTPUT": str(out / f"{name}.safetensors"),
        "OUTPUT_SAMPLES": str(out / f"{name}_samples.csv"),
    }
    c, stream = job_context("adaptsusceptibility")
    result = run_adapt(params, c)
    return {"dir": out, "result": result, "log": log_messages(stream), "params": params}


@pytest.fixture(scope="module")
def adapted(area: dict[str, Path]) -> dict[str, Any]:
    """A meta model of the north (few iterations), adapted to the south with 5 shots."""
    return adapt_south(area, train_north(area, "meta"), "adapted")


@pytest.fixture(scope="module")
def hybrid(area: dict[str, Path]) -> dict[str, Any]:
    """A hybrid model of the north (few iterations), adapted to the south with 5 shots."""
    # Fewer meta-iterations and no calibrator: a hybrid trains its MLP 1 + 5 times
    # (the bootstrap members) and the calibrator's out-of-block folds 3 more.
    model = train_north(area, "hybrid", ITERATIONS_META=10, CALIBRATION="none")
    return {**adapt_south(area, model, "hybrid_adapted"), "source": model}


def mapped_at_samples(model: str, out: Path, samples_csv: str) -> tuple[np.ndarray, np.ndarray]:
    """predictsusceptibility's pixels at the samples of ``samples_csv`` and their p_after."""
    c, _ = job_context("predictsusceptibility")
    tif = out / (Path(model).stem + "_p.tif")
    run_predict({"MODEL": model, "INPUT": str(TA), "OUTPUT": str(tif), "BLEND_WIDTH": 0}, c)
    with open(samples_csv, newline="") as fh:
        samples = list(csv.DictReader(fh))
    with rasterio.open(tif) as src:
        xy = [(float(r["x"]), float(r["y"])) for r in samples]
        mapped = np.array([v[0] for v in src.sample(xy)])
    return mapped, np.array([float(r["p_after"]) for r in samples])


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
    mapped, after = mapped_at_samples(
        result.outputs["OUTPUT"], out, adapted["params"]["OUTPUT_SAMPLES"]
    )
    np.testing.assert_allclose(mapped, after, atol=1e-5)


@pytest.mark.parametrize("fixture", ["adapted", "hybrid"])
def test_held_out_samples_are_not_adapted_on(fixture: str, request: pytest.FixtureRequest) -> None:
    """Adapting on the support samples alone gives the same weights (``hybrid``: and
    offsets and members): the held-out samples played no part in them."""
    from slidewise.engine.core.modelfile import load_model

    adapted = request.getfixturevalue(fixture)
    out, params = adapted["dir"], adapted["params"]
    with open(params["OUTPUT_SAMPLES"], newline="") as fh:
        samples = [r for r in csv.DictReader(fh) if r["role"] == "support"]
    support = out / f"{fixture}_support.csv"
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
            "OUTPUT": str(out / f"{fixture}_again.safetensors"),
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


def support_features(model: str, samples_csv: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, blocks)`` of the support samples of ``samples_csv`` on ``model``'s features."""
    from slidewise.engine.core.modelfile import load_model
    from slidewise.engine.geo.samples import FeatureEncoder

    with open(samples_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["role"] == "support"]
    _, meta = load_model(model, task="susceptibility")
    encoder = FeatureEncoder.from_dict(meta.normalisation)
    with rasterio.open(TA) as src:
        order = [list(src.descriptions).index(b) for b in encoder.bands]
        raw = np.array(list(src.sample([(float(r["x"]), float(r["y"])) for r in rows])))
    y = np.array([int(r["label"]) for r in rows])
    return (
        encoder.transform(raw[:, order].astype(np.float64)),
        y,
        np.array([int(r["block"]) for r in rows]),
    )


def test_hybrid_adapts_its_mlp_and_keeps_its_global_part(hybrid: dict[str, Any]) -> None:
    from dataclasses import replace

    from slidewise.engine.core.modelfile import load_model
    from slidewise.engine.susceptibility.adapt import adapt_fitted
    from slidewise.engine.susceptibility.models import (
        TrainSettings,
        model_from_tensors,
        model_tensors,
    )

    result, out = hybrid["result"], hybrid["dir"]
    fig = result.figures
    assert fig["support_samples"] + fig["holdout_samples"] == 761
    assert 0 < fig["holdout_auc_before"] < 1 and 0.5 < fig["holdout_auc_after"] <= 1
    src, _ = load_model(hybrid["source"], task="susceptibility")
    new, meta = load_model(result.outputs["OUTPUT"], task="susceptibility")
    assert meta.config["method"] == "hybrid"
    # The adapted MLP counts only as far as the mix chosen in training weighs it.
    if meta.config["hybrid"]["weight"] > 0:
        assert fig["holdout_auc_after"] != fig["holdout_auc_before"]
    else:
        assert fig["holdout_auc_after"] == fig["holdout_auc_before"]
        assert any("gives the adapted MLP weight 0" in m for m in hybrid["log"])
    # The global part (the model's and each member's) is kept bit for bit; its method
    # is the one the hybrid's mix chose on the training blocks.
    glob = meta.config.get("hybrid", {}).get("global", "gbm")
    boosting = [k for k in src if k.startswith(f"{glob}.") or f".{glob}." in k]
    assert any(k.startswith("ensemble.") for k in boosting)
    for k in boosting:
        np.testing.assert_array_equal(new[k].numpy(), src[k].numpy(), err_msg=k)
    # Each adapted block's MLP is re-adapted on the new samples (the model's and members').
    for b in fig["adapted_blocks"]:
        for prefix in ("", "ensemble.0.", "ensemble.4."):
            name = f"{prefix}blocks.{b}.net.0.weight"
            assert name in new and not (name in src and np.allclose(new[name], src[name]))
    # New hybrids have no per-block offsets, before or after adaptation.
    fitted = model_from_tensors(new, meta.config)
    assert not fitted.offsets and not any(k.startswith("offsets.") for k in new)
    assert "block_offsets" not in fig
    # An old file's offsets load from its tensors and shift their blocks' logits; a block
    # adapted here drops its offset, the others keep theirs.
    x, y, blocks = support_features(result.outputs["OUTPUT"], hybrid["params"]["OUTPUT_SAMPLES"])
    here = int(blocks[0])
    saved = model_tensors(replace(fitted, offsets={here: 0.5, 10_000: -0.3}))
    old = model_from_tensors(saved, meta.config)
    assert old.offsets == {here: 0.5, 10_000: -0.3}
    shift = old.hybrid_logit(x, blocks) - fitted.hybrid_logit(x, blocks)
    np.testing.assert_allclose(shift, np.where(blocks == here, 0.5, 0.0), atol=1e-9)
    again = adapt_fitted(old, (x, y, blocks), TrainSettings(method="hybrid"))
    assert again.offsets == {10_000: -0.3}
    # predictsusceptibility maps with the adapted hybrid as it is.
    mapped, after = mapped_at_samples(
        result.outputs["OUTPUT"], out, hybrid["params"]["OUTPUT_SAMPLES"]
    )
    np.testing.assert_allclose(mapped, after, atol=1e-5)


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
    with pytest.raises(InputError, match=r"METHOD rf, one global model.*METHOD hybrid or meta"):
        run_adapt({**params, "MODEL": rf, "OUTPUT": str(tmp_path / "x.safetensors")}, c)


def test_refuses_a_stack_without_the_model_factors(adapted: dict[str, Any], tmp_path: Path) -> None:
    params = {**adapted["params"], "INPUT": None, "FACTORS": [str(ECUADOR / "dem_10m.tif")]}
    c, _ = job_context("adaptsusceptibility")
    with pytest.raises(InputError, match="lacks the model's factor"):
        run_adapt({**params, "OUTPUT": str(tmp_path / "x.safetensors")}, c)
    assert not any(tmp_path.iterdir())
