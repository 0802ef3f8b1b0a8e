"""Resumable training checkpoints of trainmapping: one safetensors file, no pickle.

Weights, best weights, optimiser state and random state are tensors; scalars,
the optimiser's hyper-parameters, the history and a fingerprint of the model,
bands, normalisation and chip size go into the JSON metadata, so a resume
with other settings is refused. Like a model file, a checkpoint carries the SHA-256
of its tensors (:func:`slidewise.engine.core.modelfile.tensor_checksum`): a damaged
checkpoint is refused instead of resuming from corrupted weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slidewise.contract.checkpoints import CHECKPOINT_FORMAT, CHECKPOINT_KEY
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.modelfile import CHECKSUM_KEY, tensor_checksum, verify_checksum
from slidewise.engine.core.outputs import atomic_output
from slidewise.engine.imagery.datasets import MappingData
from slidewise.engine.mapping.recipes import TrainSettings


def fingerprint(settings: TrainSettings, data: MappingData) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: model, bands, normalisation, chip size."""
    return {
        "model": asdict(settings.model),
        "bands": data.band_indices,
        "normalisation": {k: data.normalisation.get(k) for k in ("kind", "mean", "std")},
        "chip_size": data.chip_size,
    }


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    best_state: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: dict[str, Any],
) -> None:
    """Write a resumable checkpoint: weights, best weights, optimizer state, RNG.

    Everything is a tensor in one safetensors file (no pickle); scalars and
    the optimizer's hyper-parameters go into its JSON metadata.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous().clone()
    for k, v in (best_state or {}).items():
        tensors[f"best.{k}"] = v.detach().cpu().contiguous().clone()
    opt = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for pid, pstate in opt["state"].items():
        for name, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars[f"{pid}.{name}"] = value
    tensors["rng.generator"] = generator.get_state().clone()
    tensors["rng.torch"] = torch.get_rng_state().clone()
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "param_groups": opt["param_groups"],
        "optim_scalars": scalars,
        **state,
    }
    from slidewise.engine.core.protocol import json_safe

    header = {CHECKPOINT_KEY: json.dumps(json_safe(meta)), CHECKSUM_KEY: tensor_checksum(tensors)}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        InputError: missing, unreadable, damaged (its tensors differ from their checksum),
            or not a Slidewise mapping checkpoint.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"RESUME is set but the checkpoint '{p}' does not exist: set RESUME to false "
            "to start a new training, or check CHECKPOINT."
        )
    try:
        with safe_open(str(p), framework="pt") as handle:
            header = handle.metadata() or {}
        meta = json.loads(header.get(CHECKPOINT_KEY, "{}"))
        tensors = load_file(str(p))
    except Exception as exc:
        raise InputError(
            f"The checkpoint '{p.name}' cannot be read ({exc}): delete it and train again."
        ) from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise InputError(
            f"'{p.name}' is not a Slidewise mapping checkpoint: choose another CHECKPOINT path."
        )
    verify_checkpoint(tensors, header.get(CHECKSUM_KEY), p.name)
    return tensors, meta


def verify_checkpoint(tensors: dict[str, torch.Tensor], stored: str | None, name: str) -> None:
    """Compare a checkpoint's tensors with the checksum saved with them.

    A checkpoint written before checksums resumes, with a ``ModelFileNote`` warning.

    Raises:
        ModelFileError: the tensors differ from what was saved (a damaged checkpoint).
    """
    verify_checksum(
        tensors,
        stored,
        name,
        kind="checkpoint",
        fix="Training cannot resume from it: delete it and train again with RESUME=false, "
        "or give the CHECKPOINT of a good copy.",
    )


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Load the optimiser state stored by :func:`save_checkpoint`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta.get("optim_scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose key starts with ``prefix``, without it."""
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


def checkpoint_epoch(path: str | os.PathLike[str]) -> int:
    """The last completed epoch stored in a checkpoint."""
    return int(load_checkpoint(path)[1]["epoch"])
