"""The hybrid's mix of adapted MLP and global model, chosen on the training blocks (issue 16)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from slidewise.engine.susceptibility.hybridmix import HybridMix, choose_mix, mix_key
from slidewise.engine.susceptibility.maml import MetaConfig
from slidewise.engine.susceptibility.models import (
    TrainSettings,
    fit_model,
    hybrid_config,
    model_from_tensors,
    model_tensors,
)

Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]


def table(flip: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """12 blocks of 40 samples; label from factor 0, its sign flipped in odd blocks if ``flip``."""
    rng = np.random.default_rng(seed)
    blocks = np.repeat(np.arange(12), 40)
    x = rng.normal(size=(blocks.size, 3)).astype(np.float32)
    sign = np.where((blocks % 2 == 1) & flip, -1.0, 1.0)
    y = (sign * x[:, 0] + 0.3 * rng.normal(size=blocks.size) > 0).astype(np.int64)
    return x, y, blocks


def test_a_useless_adapted_mlp_gets_weight_zero() -> None:
    """One global signal, an MLP that predicts noise: the global model takes the whole mix."""
    x, y, blocks = table(flip=False)
    noise = np.random.default_rng(1)

    def fit_meta(train: np.ndarray, support: np.ndarray) -> Predict:
        return lambda xq, bq: noise.uniform(0.05, 0.95, size=len(xq))

    mix = choose_mix((x, y, blocks), fit_meta, shots=5, seed=0)
    assert mix.weight == 0.0
    assert mix.global_method in ("gbm", "rf", "lr")
    assert len(mix.inner_log_loss) == 15  # 5 weights x 3 global models
    assert mix.inner_log_loss[mix_key(0.0, mix.global_method)] == min(mix.inner_log_loss.values())


def test_blocks_that_differ_give_the_adapted_mlp_weight() -> None:
    """The label's sign flips between blocks: no global model sees it, a block model does.

    The block model stands in for the adapted MLP: it learns its block's sign from the
    K support samples alone, as adaptation does (MAML itself is tested elsewhere).
    """
    x, y, blocks = table(flip=True)
    calls = []

    def fit_meta(train: np.ndarray, support: np.ndarray) -> Predict:
        calls.append((train.size, support.size))
        xs, ys, bs = x[support, 0], y[support], blocks[support]
        # the sign of each block's landslide/factor-0 association (0: one class only)
        signs = {
            int(b): np.sign(xs[(bs == b) & (ys == 1)].sum() - xs[(bs == b) & (ys == 0)].sum())
            for b in np.unique(bs)
        }

        def predict(xq: np.ndarray, bq: np.ndarray) -> np.ndarray:
            return 1 / (1 + np.exp(-3 * np.array([signs[int(b)] for b in bq]) * xq[:, 0]))

        return predict

    mix = choose_mix((x, y, blocks), fit_meta, shots=5, seed=0)
    assert len(calls) == 3 and all(s == 5 * 4 for _, s in calls)  # 3 inner folds, 4 blocks each
    assert mix.weight >= 0.75, mix
    assert mix.inner_log_loss[mix_key(mix.weight, mix.global_method)] < min(
        mix.inner_log_loss[mix_key(0.0, g)] for g in ("gbm", "rf", "lr")
    )


def test_too_few_blocks_keep_the_default_mix() -> None:
    x, y, blocks = table(flip=False)
    keep = blocks < 2

    def fit_meta(train: np.ndarray, support: np.ndarray) -> Predict:
        raise AssertionError("no meta-training without enough blocks")

    mix = choose_mix((x[keep], y[keep], blocks[keep]), fit_meta, 5, 0)
    assert (mix.weight, mix.global_method, mix.inner_log_loss) == (0.5, "gbm", {})
    assert "fewer than 3" in mix.note


@pytest.fixture(scope="module")
def fixed_mix_model():  # type: ignore[no-untyped-def]
    x, y, blocks = table(flip=True, seed=2)
    meta = MetaConfig(iterations=20, tasks_per_batch=4, support=5)
    mix = HybridMix(0.25, "rf", {"0.25/rf": 0.4}, "")
    settings = TrainSettings(method="hybrid", meta=meta, seed=0, hybrid_mix=mix)
    return fit_model(x, y, blocks, settings), (x, blocks)


def test_the_mix_round_trips_through_the_model_file(fixed_mix_model) -> None:  # type: ignore[no-untyped-def]
    fitted, (x, blocks) = fixed_mix_model
    assert fitted.mix.global_method == "rf" and fitted.classical.method == "rf"
    config = {"method": "hybrid", "meta": fitted_meta(), **hybrid_config(fitted)}
    loaded = model_from_tensors(model_tensors(fitted), config)
    assert loaded.mix == fitted.mix
    np.testing.assert_allclose(loaded.predict(x, blocks), fitted.predict(x, blocks), atol=1e-9)
    # the weight is used: the same model with the default weight predicts otherwise
    half = model_from_tensors(
        model_tensors(fitted), {**config, "hybrid": {**config["hybrid"], "weight": 0.5}}
    )
    assert np.abs(half.predict(x, blocks) - fitted.predict(x, blocks)).max() > 1e-3


def test_a_model_file_without_the_mix_loads_as_half_and_gbm() -> None:
    x, y, blocks = table(flip=False, seed=3)
    meta = MetaConfig(iterations=20, tasks_per_batch=4, support=5)
    settings = TrainSettings(method="hybrid", meta=meta, seed=0, hybrid_mix=HybridMix())
    fitted = fit_model(x, y, blocks, settings)
    old = {"method": "hybrid", "meta": fitted_meta(), "gbm": fitted.classical.config}
    loaded = model_from_tensors(model_tensors(fitted), old)  # a session-4 model file
    assert (loaded.mix.weight, loaded.mix.global_method) == (0.5, "gbm")
    np.testing.assert_allclose(loaded.predict(x, blocks), fitted.predict(x, blocks), atol=1e-9)


def fitted_meta() -> dict[str, object]:
    """The ``meta`` config entry of the fixtures' models."""
    return MetaConfig(iterations=20, tasks_per_batch=4, support=5).to_dict()
