"""Unit tests of the susceptibility building blocks: class breaks, tables, encoders,
global models without pickle, and MAML (vmap == loop)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import SHARED

from slidewise.engine.core.errors import InputError
from slidewise.engine.geo.samples import FeatureEncoder
from slidewise.engine.geo.tables import read_table
from slidewise.engine.susceptibility.classical import (
    fit_classical,
    forest_predict,
    forest_to_arrays,
    logistic_to_arrays,
    mlp_to_arrays,
)
from slidewise.engine.susceptibility.classify import apply_breaks, class_breaks, jenks_numpy
from slidewise.engine.susceptibility.maml import (
    MetaConfig,
    SusceptibilityMLP,
    TaskSampler,
    init_params,
    meta_gradients,
    meta_train,
)

DATA = SHARED / "susceptibility"


# --- class breaks -------------------------------------------------------------------


def test_quantile_breaks_equal_counts_and_nodata() -> None:
    values = np.random.default_rng(0).random(10_000)
    breaks = class_breaks(values, 5, "quantile")
    assert breaks.shape == (6,) and breaks[0] == values.min() and breaks[-1] == values.max()
    classes = apply_breaks(np.r_[values, np.nan], breaks)
    assert classes.dtype == np.uint8 and classes[-1] == 0
    counts = np.bincount(classes[:-1])[1:]
    assert np.all(np.abs(counts - 2000) <= 1)


def test_equal_interval_and_natural_breaks() -> None:
    values = np.r_[np.zeros(50), np.ones(50), np.full(50, 5.0)]
    eq = class_breaks(values, 5, "equal_interval")
    np.testing.assert_allclose(eq, [0, 1, 2, 3, 4, 5])
    nb = class_breaks(values, 3, "natural_breaks")
    assert np.array_equal(np.unique(apply_breaks(values, nb)), [1, 2, 3])


def test_jenks_numpy_matches_jenkspy() -> None:
    jenkspy = pytest.importorskip("jenkspy")
    x = np.random.default_rng(1).gamma(2.0, 1.0, 300)
    ours = jenks_numpy(x, 5)
    ref = np.asarray(jenkspy.jenks_breaks(x.tolist(), n_classes=5))
    np.testing.assert_allclose(ours, ref)


def test_breaks_bad_input() -> None:
    with pytest.raises(InputError, match="Unknown classification"):
        class_breaks(np.arange(10.0), 5, "kmeans")
    with pytest.raises(InputError, match="no valid values"):
        class_breaks(np.full(10, np.nan), 5)


# --- tables ---------------------------------------------------------------------------


def test_read_table_bom_and_xlsx() -> None:
    hk = DATA / "hongkong" / "samples_HK_noTS.csv"
    fj = DATA / "meta_lsm_format" / "samples_fj_rand.xlsx"
    if not hk.is_file() or not fj.is_file():
        pytest.skip("shared susceptibility data not available")
    table = read_table(hk)
    assert next(iter(table)) == "land use"  # BOM removed
    assert table["label"].size == 17093 and set(np.unique(table["label"])) == {0.0, 1.0}
    sheet = read_table(fj)
    assert list(sheet)[-3:] == ["X", "Y", "LABEL"] and sheet["LABEL"].size == 4


def test_read_table_drops_nan_rows_with_count(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("\ufeffa,b,label\n1,2,1\n,3,0\n4,NA,1\n5,6,0\n", encoding="utf-8")
    messages: list[str] = []
    table = read_table(path, warn=messages.append)
    assert table["a"].tolist() == [1.0, 5.0]
    assert len(messages) == 1 and "2 of 4 rows" in messages[0] and "a: 1" in messages[0]
    (tmp_path / "bad.csv").write_text("a,a\n1,2\n")
    with pytest.raises(InputError, match="duplicate"):
        read_table(tmp_path / "bad.csv")
    with pytest.raises(InputError, match="does not exist"):
        read_table(tmp_path / "missing.csv")


# --- feature encoder ----------------------------------------------------------------------


def test_one_hot_unseen_class_all_zero_with_warning() -> None:
    train = np.array([[1.0, 10.0], [2.0, 20.0], [1.0, 30.0]])
    enc = FeatureEncoder.fit(train, ["landuse", "slope"], categorical=["landuse"])
    assert enc.columns == ["landuse=1", "landuse=2", "slope"]
    messages: list[str] = []
    x = enc.transform(
        np.array([[2.0, 20.0], [7.0, 20.0], [7.0, 10.0], [9.0, 0.0]]), warn=messages.append
    )
    np.testing.assert_array_equal(x[0, :2], [0, 1])
    np.testing.assert_array_equal(x[1:, :2], 0)
    assert len(messages) == 1 and "7: 2" in messages[0] and "9: 1" in messages[0]
    back = FeatureEncoder.from_dict(enc.to_dict())
    np.testing.assert_array_equal(back.transform(train), enc.transform(train))


# --- global models stored as arrays -------------------------------------------------------


def _toy(n: int = 600, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] - 0.5 * x[:, 1] + 0.5 * rng.normal(size=n) > 0).astype(int)
    return x, y


def test_forest_arrays_equal_sklearn_predict_proba() -> None:
    from sklearn.ensemble import RandomForestClassifier

    x, y = _toy()
    forest = RandomForestClassifier(n_estimators=25, random_state=0).fit(x[:400], y[:400])
    model = forest_to_arrays(forest)
    test = np.r_[x[400:], x[:50]]
    np.testing.assert_array_equal(
        forest_predict(model.arrays, test), forest.predict_proba(test)[:, 1]
    )
    # Thresholds exactly at a float32 value and ties still agree.
    np.testing.assert_array_equal(model.predict_proba(x[:400]), forest.predict_proba(x[:400])[:, 1])


def test_logistic_and_mlp_arrays_equal_sklearn() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    x, y = _toy()
    lr = LogisticRegression().fit(x, y)
    np.testing.assert_allclose(
        logistic_to_arrays(lr).predict_proba(x), lr.predict_proba(x)[:, 1], atol=1e-6
    )
    mlp = MLPClassifier((8, 4), max_iter=300, random_state=0).fit(x, y)
    np.testing.assert_allclose(
        mlp_to_arrays(mlp).predict_proba(x), mlp.predict_proba(x)[:, 1], atol=1e-6
    )


def test_frequency_ratio_ranks_and_tensors_round_trip() -> None:
    from sklearn.metrics import roc_auc_score

    from slidewise.engine.susceptibility.classical import ClassicalModel

    x, y = _toy(2000)
    model = fit_classical("fr", x, y)
    p = model.predict_proba(x)
    assert 0.0 <= p.min() and p.max() <= 1.0 and roc_auc_score(y, p) > 0.75
    back = ClassicalModel.from_tensors("fr", model.tensors(), model.config)
    np.testing.assert_array_equal(back.predict_proba(x), p)


# --- MAML ------------------------------------------------------------------------------------


def test_maml_vmap_equals_loop() -> None:
    x, y = _toy(800, 6)
    blocks = np.repeat(np.arange(20), 40)
    sampler = TaskSampler(x, y, blocks, support=6, query=6, seed=0)
    batch = sampler.sample(4)
    torch.manual_seed(0)
    model = SusceptibilityMLP(6)
    params = init_params(model)
    lrs = {k: torch.tensor(0.1) for k in params}
    for second_order in (True, False):
        gv, lv_grads, loss_v = meta_gradients(model, params, lrs, batch, 3, second_order, "vmap")
        gl, ll_grads, loss_l = meta_gradients(model, params, lrs, batch, 3, second_order, "loop")
        assert loss_v == pytest.approx(loss_l, rel=1e-5)
        for k in gv:
            torch.testing.assert_close(gv[k], gl[k], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(lv_grads[k], ll_grads[k], rtol=1e-4, atol=1e-6)


def test_meta_train_reduces_loss_and_learns_inner_lr() -> None:
    x, y = _toy(800, 6)
    blocks = np.repeat(np.arange(20), 40)
    cfg = MetaConfig(
        iterations=60, tasks_per_batch=4, learn_inner_lr=True, inner_lr=0.01, meta_lr=1e-2
    )
    _, state = meta_train(x, y, blocks, cfg, seed=0)
    assert np.mean(state.history[-10:]) < np.mean(state.history[:10])
    assert any(abs(float(v) - 0.01) > 1e-4 for v in state.inner_lrs.values())


def test_task_sampler_scores_small_blocks_on_all_their_other_samples() -> None:
    x, y = _toy(70, 3)
    blocks = np.r_[np.zeros(11), np.zeros(9) + 2, np.ones(50)].astype(int)  # 11, 50 and 9 samples
    assert TaskSampler(x, y, blocks, support=6, query=32).block_ids.tolist() == [1]
    sampler = TaskSampler(x, y, blocks, support=6, query=32, seed=0, min_query=3)
    batch = sampler.sample(3)
    assert batch.xq.shape[:2] == (3, 32)
    filled = sorted(int(v) for v in batch.wq.sum(1))
    assert filled == [3, 5, 32]  # min(32, block size - support)
    for t in range(3):
        rows = {tuple(r) for r in batch.xs[t].tolist()}
        real = batch.xq[t][batch.wq[t] > 0].tolist()
        assert not rows & {tuple(r) for r in real}  # query samples are not support samples
    torch.manual_seed(0)
    model = SusceptibilityMLP(3)
    params = init_params(model)
    lrs = {k: torch.tensor(0.1) for k in params}
    loss = meta_gradients(model, params, lrs, batch, 2, False, "vmap")[2]
    pad = batch.wq == 0
    noisy = replace(batch, xq=torch.where(pad[..., None], 99.0, batch.xq), yq=batch.yq * 0)
    noisy.yq[~pad] = batch.yq[~pad]
    assert meta_gradients(model, params, lrs, noisy, 2, False, "loop")[2] == pytest.approx(loss)


def test_task_sampler_refuses_small_blocks() -> None:
    x, y = _toy(40, 3)
    with pytest.raises(InputError, match="No block has the 12 samples"):
        TaskSampler(x, y, np.arange(40) % 4, 6, 32)  # 10 samples each


def test_dae_pretraining_initialises_hidden_layers() -> None:
    from slidewise.engine.susceptibility.maml import pretrain_dae

    x, _ = _toy(500, 6)
    torch.manual_seed(0)
    model = SusceptibilityMLP(6)
    before = init_params(model)
    after = pretrain_dae(model, x, epochs=2, seed=0)
    assert not torch.equal(before["net.0.weight"], after["net.0.weight"])
    torch.testing.assert_close(before["net.6.weight"], after["net.6.weight"])  # output layer fresh


# --- parameter specifications --------------------------------------------------------


SPECS = ("samplefactors", "segmentblocks", "trainsusceptibility", "predictsusceptibility")


def test_contract_choices_match_the_engine() -> None:
    from slidewise.contract.specs.factors import CLASSIFICATIONS
    from slidewise.contract.specs.trainsusceptibility import METHODS
    from slidewise.engine.susceptibility.classical import ARCHITECTURES
    from slidewise.engine.susceptibility.classify import METHODS as CLASS_METHODS

    assert CLASSIFICATIONS == CLASS_METHODS
    assert set(METHODS) == {"meta", "hybrid", "auto", *ARCHITECTURES}


@pytest.mark.parametrize("name", SPECS)
def test_every_count_has_a_range_and_every_field_a_parameter(name: str) -> None:
    import dataclasses
    import importlib

    from slidewise.contract.specs import spec_of
    from slidewise.engine.jobs import JOBS

    spec = spec_of(name)
    for param in spec.params:
        if param.kind == "int":
            assert param.minimum is not None and param.maximum is not None, param.name
    module_name, _ = JOBS[name].split(":")
    module = importlib.import_module(module_name)
    (params_cls,) = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and getattr(v, "SPEC", None) is spec and dataclasses.is_dataclass(v)
    ]
    fields = {f.name for f in dataclasses.fields(params_cls)}
    from slidewise.contract.specs.groups import OUTPUT_OPTION_NAMES  # applied by the worker

    assert {p.name.lower() for p in spec.params if p.name not in OUTPUT_OPTION_NAMES} <= fields


def test_refused_parameters_name_the_range(tmp_path: Path) -> None:
    import io

    from slidewise.engine.core.job import JobContext
    from slidewise.engine.core.protocol import Reporter
    from slidewise.engine.core.runtime import RuntimeOptions
    from slidewise.engine.susceptibility.segmentblocks import run_segment_blocks
    from slidewise.engine.susceptibility.train import run_train

    ctx = JobContext(name="test", options=RuntimeOptions(seed=0), reporter=Reporter(io.StringIO()))
    out = str(tmp_path / "m.safetensors")
    with pytest.raises(InputError, match=r"N_BLOCKS must be between 0 and 100000, got -1\."):
        run_train({"TABLE": "t.csv", "N_BLOCKS": -1, "OUTPUT": out}, ctx)
    with pytest.raises(InputError, match="ALIGN must be true or false, got 'maybe'"):
        run_segment_blocks({"INPUT": "s.tif", "ALIGN": "maybe", "OUTPUT": out}, ctx)
    with pytest.raises(InputError, match="Missing required parameter"):
        run_train({"INPUT": "s.tif", "OUTPUT": out}, ctx)
