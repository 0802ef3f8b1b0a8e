"""How sure a susceptibility map is: the spread of a bootstrap ensemble.

Training fits :data:`MEMBERS` extra models on bootstrap resamples of the
labelled samples, drawn within each block so that every block keeps its sample
count (Efron's bootstrap; Lakshminarayanan et al. 2017 for ensembles as an
uncertainty measure). ``meta`` members re-adapt the meta-learned
initialisation to every block with its resampled samples (cheap: no
meta-training again), so their spread is the uncertainty of the block models
that comes from having a few samples per block; global methods refit the whole
model. Prediction runs every member as the model itself (same blocks, same
blending, same calibration) and writes the standard deviation of the members'
probabilities per pixel: 0 where they agree, up to 0.5.

Members are stored in the model file as ``ensemble.<m>.<tensor>`` (``meta``:
only the adapted block weights; the initialisation is the model's) and their
count and settings in the config's ``ensemble`` entry.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from slidewise.engine.susceptibility.models import (
    FittedModel,
    TrainSettings,
    adapt_blocks,
    fit_model,
    model_from_tensors,
    model_tensors,
)

#: Bootstrap members fitted for the uncertainty raster.
MEMBERS = 5


def bootstrap_within_blocks(blocks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sample indices drawn with replacement inside each block (block sizes kept)."""
    picks = []
    for bid in np.unique(blocks):
        members = np.flatnonzero(blocks == bid)
        picks.append(rng.choice(members, size=members.size, replace=True))
    return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)


def fit_ensemble(
    fitted: FittedModel,
    samples: tuple[np.ndarray, np.ndarray, np.ndarray],
    settings: TrainSettings,
    groups: list[list[int]] | None = None,
    members: int = MEMBERS,
) -> list[FittedModel]:
    """Bootstrap members of a fitted model.

    Args:
        fitted: The model fitted on every sample (``meta``: its initialisation is shared).
        samples: ``(x, y, blocks)``: encoded features, labels and block IDs.
        settings: Method and hyper-parameters of the model.
        groups: Feature columns per factor (``fr``).
        members: Number of members.
    """
    x, y, blocks = samples
    rng = np.random.default_rng(settings.seed + 7919)
    out = []
    for m in range(members):
        idx = bootstrap_within_blocks(blocks, rng)
        if fitted.method == "meta":
            member = FittedModel("meta", skeleton=fitted.skeleton, state=fitted.state)
            adapt_blocks(member, x[idx], y[idx], blocks[idx], settings)
        else:
            s = replace(settings, seed=settings.seed + m + 1, hybrid_mix=fitted.mix)
            member = fit_model(x[idx], y[idx], blocks[idx], s, groups=groups)
        out.append(member)
    return out


def ensemble_tensors(members: list[FittedModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tensors, config entry)`` of the members for the model file."""
    tensors: dict[str, Any] = {}
    configs = []
    for m, member in enumerate(members):
        for name, value in model_tensors(member).items():
            if member.method == "meta" and not name.startswith("blocks."):
                continue
            tensors[f"ensemble.{m}.{name}"] = value
        configs.append(member.classical.config if member.classical is not None else {})
    return tensors, {"members": len(members), "method": "bootstrap", "configs": configs}


def ensemble_from_model(
    tensors: dict[str, Any], config: dict[str, Any], fitted: FittedModel
) -> list[FittedModel]:
    """The bootstrap members of a model file (none for models trained without them)."""
    doc = config.get("ensemble", {})
    members = []
    for m in range(int(doc.get("members", 0))):
        prefix = f"ensemble.{m}."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if fitted.method == "meta":
            blocks: dict[int, Any] = {}
            for name, value in own.items():
                _, bid, pname = name.split(".", 2)
                blocks.setdefault(int(bid), {})[pname] = value
            members.append(
                FittedModel("meta", skeleton=fitted.skeleton, state=fitted.state, blocks=blocks)
            )
        else:
            own_config = doc.get("configs", [{}] * (m + 1))[m]
            cfg = {"method": fitted.method, **own_config}
            if fitted.method == "hybrid":  # members share their model's mix
                cfg.update({"hybrid": fitted.mix.to_dict(), fitted.mix.global_method: own_config})
            members.append(model_from_tensors(own, cfg))
    return members
