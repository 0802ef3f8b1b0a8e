"""Fitted susceptibility models: training on encoded features, model-file tensors.

Methods (:data:`METHODS`): ``meta`` meta-learns an MLP initialisation over the
blocks (MAML, :mod:`.maml`) and adapts it to every block with that block's
samples; ``hybrid`` mixes the logits of that adapted MLP and of a global model
(weight and global model chosen by an inner leave-blocks-out split of the
training blocks, :mod:`.hybridmix`; files from before wave 2 session 6 also shift
each block's logit by a stored offset, :mod:`.blockoffset`); ``rf``, ``lr``,
``mlp``, ``svm``, ``gbm`` and ``fr`` fit one global model (:mod:`.classical`).
``auto`` is resolved to one of these by cross-validation before fitting
(:mod:`.selection`). Label convention: 1 = landslide, 0 = not landslide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from slidewise.contract.specs.trainsusceptibility import BLOCKWISE_METHODS, METHODS
from slidewise.engine.core.errors import ModelFileError
from slidewise.engine.susceptibility.blockoffset import (
    apply_offsets,
    logit,
    sigmoid,
)
from slidewise.engine.susceptibility.classical import ClassicalModel, fit_classical
from slidewise.engine.susceptibility.hybridmix import HybridMix, MetaFit, choose_mix
from slidewise.engine.susceptibility.maml import MetaConfig, MetaState, Params


@dataclass
class FittedModel:
    """A fitted susceptibility model on encoded features.

    Attributes:
        method: One of :data:`METHODS` but ``auto``.
        classical: The global model (global methods; the global part of ``hybrid``).
        skeleton: The MLP module (``meta``, ``hybrid``).
        state: Meta-learned initialisation (``meta``, ``hybrid``).
        blocks: Adapted parameters per block ID (``meta``, ``hybrid``).
        fallback: Block ID -> why it uses the meta-learned initialisation.
        one_class: Block ID -> description, for blocks adapted on one class only.
        history: Meta-training loss per iteration.
        offsets: Block ID -> logit offset (``hybrid`` files from before wave 2
            session 6; new hybrids have none).
        mix: Weight of the adapted MLP and the global model (``hybrid``).
    """

    method: str
    classical: ClassicalModel | None = None
    skeleton: Any = None
    state: MetaState | None = None
    blocks: dict[int, Params] = field(default_factory=dict)
    fallback: dict[int, str] = field(default_factory=dict)
    one_class: dict[int, str] = field(default_factory=dict)
    history: list[float] = field(default_factory=list)
    offsets: dict[int, float] = field(default_factory=dict)
    mix: HybridMix = field(default_factory=HybridMix)

    @property
    def blockwise(self) -> bool:
        """Whether predictions depend on each sample's block."""
        return self.method in BLOCKWISE_METHODS

    def predict(self, x: np.ndarray, block_ids: np.ndarray | None = None) -> np.ndarray:
        """Probability of landslide; block-wise methods use each sample's block model."""
        if self.method == "hybrid":
            return sigmoid(self.hybrid_logit(x, block_ids))
        if self.method != "meta":
            assert self.classical is not None
            return self.classical.predict_proba(x)
        return self.meta_proba(x, block_ids)

    def hybrid_logit(self, x: np.ndarray, block_ids: np.ndarray | None) -> np.ndarray:
        """``hybrid``: the adapted MLP's and the global logits mixed (plus an old file's offset)."""
        assert self.classical is not None
        z = self.mix.combine(
            logit(self.meta_proba(x, block_ids)), logit(self.classical.predict_proba(x))
        )
        ids = np.zeros(x.shape[0], dtype=np.int64) if block_ids is None else block_ids
        return apply_offsets(z, np.asarray(ids), self.offsets)

    def meta_proba(self, x: np.ndarray, block_ids: np.ndarray | None) -> np.ndarray:
        """Probability from each sample's adapted MLP (the initialisation for unknown blocks)."""
        import torch
        from torch.func import functional_call

        assert self.state is not None
        out = np.empty(x.shape[0], dtype=np.float64)
        if x.shape[0] == 0:
            return out
        ids = np.zeros(x.shape[0], dtype=np.int64) if block_ids is None else np.asarray(block_ids)
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
        with torch.no_grad():
            for bid in np.unique(ids):
                sel = np.flatnonzero(ids == bid)
                params = self.blocks.get(int(bid), self.state.params)
                logits = functional_call(self.skeleton, params, (xt[sel],))
                out[sel] = torch.softmax(logits, dim=-1)[:, 1].double().numpy()
        return out


@dataclass
class TrainSettings:
    """What :func:`fit_model` needs besides the data.

    Attributes:
        method: One of :data:`METHODS`.
        meta: Meta-learning hyper-parameters.
        min_block_samples: Blocks with fewer samples keep the meta-learned initialisation.
        one_class: ``fallback`` (default) or ``adapt`` for blocks whose samples are one class.
        n_estimators: Trees of the random forest.
        seed: Random seed.
        selected_by: ``auto`` when cross-validation chose ``method``, else empty.
        hybrid_mix: ``hybrid``: use this mix (bootstrap members reuse their
            model's) instead of choosing one on the training blocks.
    """

    method: str = "meta"
    meta: MetaConfig = field(default_factory=MetaConfig)
    min_block_samples: int = 3
    one_class: str = "adapt"
    n_estimators: int = 200
    seed: int = 0
    selected_by: str = ""
    hybrid_mix: HybridMix | None = None


def fit_model(
    x: np.ndarray,
    y: np.ndarray,
    blocks: np.ndarray,
    settings: TrainSettings,
    groups: list[list[int]] | None = None,
    unlabelled: np.ndarray | None = None,
    adapt_on: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    progress: Callable[[float], None] | None = None,
) -> FittedModel:
    """Fit a model on encoded features.

    Args:
        x: Features (n, d).
        y: Labels 0/1.
        blocks: Block ID per sample (meta-training tasks).
        settings: Method and hyper-parameters.
        groups: Feature columns per factor (``fr``).
        unlabelled: Feature vectors for DAE pretraining.
        adapt_on: ``(x, y, blocks)`` to adapt block models on (default: the
            training samples themselves).
        progress: Fraction-done callback.
    """
    if settings.method not in BLOCKWISE_METHODS:
        model = fit_classical(
            settings.method, x, y, settings.seed, groups, settings.n_estimators, n_jobs=None
        )
        return FittedModel(settings.method, classical=model)
    from slidewise.engine.susceptibility.maml import meta_train

    skeleton, state = meta_train(
        x, y, blocks, settings.meta, settings.seed, unlabelled=unlabelled, progress=progress
    )
    fitted = FittedModel(settings.method, skeleton=skeleton, state=state, history=state.history)
    ax, ay, ab = adapt_on if adapt_on is not None else (x, y, blocks)
    adapt_blocks(fitted, ax, ay, ab, settings)
    return finish_blockwise(fitted, (x, y, blocks), adapt_on, settings)


def reuse_blockwise(
    reuse: FittedModel,
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    adapt_on: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    settings: TrainSettings,
) -> FittedModel:
    """:func:`fit_model` of a block-wise method from ``reuse``'s meta-learned, adapted MLP.

    ``reuse`` must have been fitted on the same ``train``, ``adapt_on`` and
    settings (but the method): cross-validation scores ``meta`` and ``hybrid``
    with one meta-training per fold.
    """
    fitted = replace(reuse, method=settings.method, classical=None, offsets={})
    return finish_blockwise(fitted, train, adapt_on, settings)


def finish_blockwise(
    fitted: FittedModel,
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    adapt_on: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    settings: TrainSettings,
) -> FittedModel:
    """Add ``hybrid``'s mix and global model to an adapted meta model."""
    if fitted.method != "hybrid":
        return fitted
    if settings.hybrid_mix is not None:
        fitted.mix = settings.hybrid_mix
    else:
        fitted.mix = choose_mix(
            train,
            inner_meta_fit(train, settings),
            settings.meta.support,
            settings.seed,
        )
    fit_hybrid_global(fitted, train, adapt_on, settings.seed)
    return fitted


def inner_meta_fit(
    train: tuple[np.ndarray, np.ndarray, np.ndarray], settings: TrainSettings
) -> MetaFit:
    """``fit_meta`` of :func:`.hybridmix.choose_mix`: meta-train, then adapt on support."""
    x, y, blocks = train
    meta = replace(settings, method="meta", hybrid_mix=None)

    def fit_meta(
        inner: np.ndarray, support: np.ndarray
    ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        adapt_on = (x[support], y[support], blocks[support])
        return fit_model(x[inner], y[inner], blocks[inner], meta, adapt_on=adapt_on).meta_proba

    return fit_meta


def fit_hybrid_global(
    fitted: FittedModel,
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    adapt_on: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    seed: int,
) -> None:
    """The global part of ``hybrid`` (``fitted.mix.global_method``).

    It trains on the training samples plus the adaptation samples (when they
    are others), as a global model would.
    """
    x, y, _ = train
    if adapt_on is not None:
        x, y = np.r_[x, adapt_on[0]], np.r_[y, adapt_on[1]]
    fitted.classical = fit_classical(fitted.mix.global_method, x, y, seed)


def adapt_blocks(
    fitted: FittedModel,
    x: np.ndarray,
    y: np.ndarray,
    blocks: np.ndarray,
    settings: TrainSettings,
) -> None:
    """Adapt the meta-learned initialisation to every block with its samples.

    Blocks with fewer than ``settings.min_block_samples`` samples, or (with
    ``one_class="fallback"``) samples of one class only, keep the initialisation;
    ``fitted.fallback`` records why.
    """
    from slidewise.engine.susceptibility.maml import adapt_many

    assert fitted.state is not None
    tasks, ids = [], []
    for bid in np.unique(blocks):
        sel = blocks == bid
        n, n_pos = int(sel.sum()), int(y[sel].sum())
        if n < settings.min_block_samples:
            fitted.fallback[int(bid)] = f"{n} samples (fewer than {settings.min_block_samples})"
            continue
        if n_pos in (0, n):
            kind = "no landslides" if n_pos == 0 else "only landslides"
            if settings.one_class == "fallback":
                fitted.fallback[int(bid)] = f"one class only ({kind}, {n} samples)"
                continue
            fitted.one_class[int(bid)] = f"{kind}, {n} samples"
        tasks.append((x[sel], y[sel]))
        ids.append(int(bid))
    for bid, params in zip(
        ids,
        adapt_many(fitted.skeleton, fitted.state, tasks, settings.meta.inner_steps),
        strict=False,
    ):
        fitted.blocks[bid] = params


def hybrid_config(fitted: FittedModel) -> dict[str, Any]:
    """The model file's config entries of a ``hybrid``: its global part and mix."""
    assert fitted.classical is not None
    return {fitted.mix.global_method: fitted.classical.config, "hybrid": fitted.mix.to_dict()}


def model_tensors(fitted: FittedModel) -> dict[str, Any]:
    """Named tensors of a fitted model (no pickle: plain arrays only)."""
    from slidewise.engine.susceptibility.maml import state_tensors

    if not fitted.blockwise:
        assert fitted.classical is not None
        return fitted.classical.tensors()
    import torch

    assert fitted.state is not None
    tensors = state_tensors(fitted.state, prefix="init.")
    for bid, params in fitted.blocks.items():
        for k, v in params.items():
            tensors[f"blocks.{bid}.{k}"] = v
    if fitted.method == "hybrid":
        assert fitted.classical is not None
        tensors.update(fitted.classical.tensors())
    if fitted.method == "hybrid" and fitted.offsets:
        ids = sorted(fitted.offsets)
        tensors["offsets.ids"] = torch.as_tensor(np.asarray(ids, dtype=np.int64))
        tensors["offsets.values"] = torch.as_tensor(
            np.asarray([fitted.offsets[i] for i in ids], dtype=np.float64)
        )
    return tensors


def model_from_tensors(tensors: dict[str, Any], config: dict[str, Any]) -> FittedModel:
    """Rebuild a :class:`FittedModel` from a model file's tensors and config."""
    method = str(config.get("method", ""))
    if method not in METHODS:
        raise ModelFileError(
            f"The model file names an unknown susceptibility method '{method}': "
            "train the model again with this version of Slidewise."
        )
    if method not in BLOCKWISE_METHODS:
        return FittedModel(method, classical=ClassicalModel.from_tensors(method, tensors, config))
    from slidewise.engine.susceptibility.maml import SusceptibilityMLP, state_from_tensors

    meta = MetaConfig.from_dict(config.get("meta", {}))
    state = state_from_tensors(tensors, prefix="init.")
    if not state.params:
        raise ModelFileError("The model file has no meta-learned parameters: train it again.")
    n_features = int(state.params["net.0.weight"].shape[1])
    skeleton = SusceptibilityMLP(n_features, meta.hidden)
    blocks: dict[int, Params] = {}
    for name, v in tensors.items():
        if name.startswith("blocks."):
            _, bid, pname = name.split(".", 2)
            blocks.setdefault(int(bid), {})[pname] = v
    fallback = {int(k): str(v) for k, v in config.get("fallback", {}).items()}
    fitted = FittedModel(method, skeleton=skeleton, state=state, blocks=blocks, fallback=fallback)
    if method == "hybrid":
        fitted.mix = HybridMix.from_dict(config.get("hybrid"))
        glob = fitted.mix.global_method
        fitted.classical = ClassicalModel.from_tensors(glob, tensors, config.get(glob, {}))
        ids = tensors["offsets.ids"].numpy().tolist() if "offsets.ids" in tensors else []
        values = tensors["offsets.values"].numpy().tolist() if ids else []
        fitted.offsets = {int(i): float(v) for i, v in zip(ids, values, strict=True)}
    return fitted
