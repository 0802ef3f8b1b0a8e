"""Fitted susceptibility models: training on encoded features, model-file tensors.

Methods (:data:`METHODS`): ``meta`` meta-learns an MLP initialisation over the
blocks (MAML, :mod:`.maml`) and adapts it to every block with that block's
samples; ``rf``, ``lr``, ``mlp`` and ``fr`` fit one global model
(:mod:`.classical`). Label convention: 1 = landslide, 0 = not landslide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slidewise.contract.specs.trainsusceptibility import METHODS
from slidewise.engine.core.errors import ModelFileError
from slidewise.engine.susceptibility.classical import ClassicalModel, fit_classical
from slidewise.engine.susceptibility.maml import MetaConfig, MetaState, Params


@dataclass
class FittedModel:
    """A fitted susceptibility model on encoded features.

    Attributes:
        method: ``meta``, ``rf``, ``lr``, ``mlp`` or ``fr``.
        classical: The global model (methods other than ``meta``).
        skeleton: The MLP module (``meta``).
        state: Meta-learned initialisation (``meta``).
        blocks: Adapted parameters per block ID (``meta``).
        fallback: Block ID -> why it uses the meta-learned initialisation.
        one_class: Block ID -> description, for blocks adapted on one class only.
        history: Meta-training loss per iteration.
    """

    method: str
    classical: ClassicalModel | None = None
    skeleton: Any = None
    state: MetaState | None = None
    blocks: dict[int, Params] = field(default_factory=dict)
    fallback: dict[int, str] = field(default_factory=dict)
    one_class: dict[int, str] = field(default_factory=dict)
    history: list[float] = field(default_factory=list)

    def predict(self, x: np.ndarray, block_ids: np.ndarray | None = None) -> np.ndarray:
        """Probability of landslide; ``meta`` uses each sample's block model."""
        if self.method != "meta":
            assert self.classical is not None
            return self.classical.predict_proba(x)
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
    """

    method: str = "meta"
    meta: MetaConfig = field(default_factory=MetaConfig)
    min_block_samples: int = 3
    one_class: str = "adapt"
    n_estimators: int = 200
    seed: int = 0


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
    if settings.method != "meta":
        model = fit_classical(
            settings.method, x, y, settings.seed, groups, settings.n_estimators, n_jobs=None
        )
        return FittedModel(settings.method, classical=model)
    from slidewise.engine.susceptibility.maml import meta_train

    skeleton, state = meta_train(
        x, y, blocks, settings.meta, settings.seed, unlabelled=unlabelled, progress=progress
    )
    fitted = FittedModel("meta", skeleton=skeleton, state=state, history=state.history)
    ax, ay, ab = adapt_on if adapt_on is not None else (x, y, blocks)
    adapt_blocks(fitted, ax, ay, ab, settings)
    return fitted


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


def model_tensors(fitted: FittedModel) -> dict[str, Any]:
    """Named tensors of a fitted model (no pickle: plain arrays only)."""
    from slidewise.engine.susceptibility.maml import state_tensors

    if fitted.method != "meta":
        assert fitted.classical is not None
        return fitted.classical.tensors()
    assert fitted.state is not None
    tensors = state_tensors(fitted.state, prefix="init.")
    for bid, params in fitted.blocks.items():
        for k, v in params.items():
            tensors[f"blocks.{bid}.{k}"] = v
    return tensors


def model_from_tensors(tensors: dict[str, Any], config: dict[str, Any]) -> FittedModel:
    """Rebuild a :class:`FittedModel` from a model file's tensors and config."""
    method = str(config.get("method", ""))
    if method not in METHODS:
        raise ModelFileError(
            f"The model file names an unknown susceptibility method '{method}': "
            "train the model again with this version of Slidewise."
        )
    if method != "meta":
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
    return FittedModel("meta", skeleton=skeleton, state=state, blocks=blocks, fallback=fallback)
