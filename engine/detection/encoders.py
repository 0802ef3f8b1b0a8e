"""Encoder files: an smp encoder's weights with their bands and normalisation.

An encoder file (:mod:`slidewise.engine.core.modelfile`, task ``encoder``)
holds the encoder's tensors with the key prefix ``encoder.``, and in the
metadata the backbone, the band count and names, the normalisation, and the
pre-training provenance. It initialises:

* mapping models: ``trainmapping`` ``ENCODER_WEIGHTS`` (and ``addregion``),
  through :func:`slidewise.engine.imagery.segmodels.load_encoder_weights` (strict);
* detection backbones: :func:`encoder_state_dict` with
  ``target="torchvision_resnet"`` gives the state dict of a torchvision ResNet
  body (``conv1``, ``bn1``, ``layer1``-``layer4``; no ``fc``), which loads
  strictly into ``torchvision.models.resnet18()`` without ``fc`` /
  ``IntermediateLayerGetter`` and into the body of a torchvision Faster R-CNN
  ResNet-FPN backbone (with ordinary or frozen batch norm).

smp's ResNet encoders are torchvision ResNets without ``avgpool`` and ``fc``,
so the keys are the same; only ResNets (resnet18/34/50/101/152) have a
torchvision target.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slidewise.engine.core.errors import InputError, ModelFileError
from slidewise.engine.core.modelfile import ModelMetadata, load_model, save_model

#: Backbones whose encoder file also fits a torchvision ResNet body.
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
#: Key prefix of the encoder tensors in an encoder file.
KEY_PREFIX = "encoder."
TARGETS = ("smp", "torchvision_resnet")
#: Top-level modules of a torchvision ResNet body.
_RESNET_BODY = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")


def _smp() -> Any:
    from slidewise.engine.imagery.tvcompat import ensure_torchvision_ops

    ensure_torchvision_ops()
    import segmentation_models_pytorch as smp

    return smp


def build_encoder(backbone: str = "resnet18", in_channels: int = 3) -> nn.Module:
    """An smp encoder (depth 5, random weights: nothing is downloaded).

    Raises:
        InputError: unknown backbone.
    """
    smp = _smp()
    try:
        return smp.encoders.get_encoder(backbone, in_channels=in_channels, depth=5, weights=None)
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(
            f"Unknown BACKBONE '{backbone}' ({str(exc).strip(chr(39))[:200]}): use an encoder "
            "of segmentation-models-pytorch, e.g. resnet18, resnet34 or resnet50."
        ) from None


@dataclass(frozen=True)
class EncoderRecord:
    """What an encoder file records besides the weights.

    Attributes:
        normalisation: Per-band ``mean``/``std`` the encoder was trained on.
        provenance: How it was made (job, data, settings).
        metrics: Pre-training figures and history.
        tile_size: Chip side it was trained on.
    """

    normalisation: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    tile_size: int | None = None


def save_encoder(
    path: str | os.PathLike[str],
    encoder: dict[str, torch.Tensor],
    backbone: str,
    in_channels: int,
    bands: Sequence[str] = (),
    record: EncoderRecord | None = None,
) -> Path:
    """Write an encoder file (task ``encoder``; tensors ``encoder.<key>``)."""
    record = record or EncoderRecord()
    meta = ModelMetadata(
        task="encoder",
        architecture=backbone,
        config={
            "backbone": backbone,
            "in_channels": int(in_channels),
            "key_prefix": KEY_PREFIX,
            "layout": "segmentation-models-pytorch encoder",
            "targets": ["smp", "torchvision_resnet"]
            if backbone in TORCHVISION_RESNETS
            else ["smp"],
        },
        bands=list(bands) or [f"band_{i + 1}" for i in range(in_channels)],
        normalisation=dict(record.normalisation or {}),
        tile_size=record.tile_size,
        class_names=[],
        provenance=dict(record.provenance or {}),
        metrics=dict(record.metrics or {}),
    )
    return save_model(path, {KEY_PREFIX + k: v for k, v in encoder.items()}, meta)


def encoder_state_dict(
    path: str | os.PathLike[str], target: str = "smp"
) -> dict[str, torch.Tensor]:
    """The encoder tensors of a file, keyed for ``target``, to load with ``strict=True``.

    Args:
        path: An encoder file (``pretrainencoder``), or a mapping / multiregion
            model with an smp encoder (its encoder is taken).
        target: ``smp`` (an smp model's ``encoder`` module) or
            ``torchvision_resnet`` (a torchvision ResNet without ``fc``, e.g.
            ``IntermediateLayerGetter`` / the ``body`` of a Faster R-CNN
            ResNet-FPN backbone; frozen batch norm drops ``num_batches_tracked``
            itself).

    Returns:
        Key -> tensor (CPU).

    Raises:
        ModelFileError: not an encoder, mapping or multiregion model file.
        InputError: unknown target, or a backbone that is not a ResNet for
            ``torchvision_resnet``.
    """
    if target not in TARGETS:
        raise InputError(f"Unknown target '{target}': use one of {', '.join(TARGETS)}.")
    tensors, meta = load_model(path, task=("encoder", "mapping", "multiregion"))
    config = meta.config or {}
    if meta.task == "encoder":
        prefix = str(config.get("key_prefix", KEY_PREFIX))
        backbone = str(config.get("backbone", meta.architecture))
    else:
        if str(config.get("architecture", "")).lower() == "resunet":
            raise InputError(
                f"The model '{Path(path).name}' is a resunet model, which has no smp encoder."
            )
        prefix, backbone = KEY_PREFIX, str(config.get("encoder", ""))
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not state:
        raise ModelFileError(f"The file '{Path(path).name}' holds no '{prefix}*' tensors.")
    if target == "torchvision_resnet":
        if backbone not in TORCHVISION_RESNETS:
            raise InputError(
                f"The encoder in '{Path(path).name}' is {backbone}, not a ResNet: only "
                f"{', '.join(TORCHVISION_RESNETS)} encoders fit a torchvision ResNet backbone."
            )
        odd = [k for k in state if not k.startswith(_RESNET_BODY)]
        if odd:
            raise ModelFileError(
                f"The encoder in '{Path(path).name}' has keys a torchvision ResNet body does "
                f"not have ({', '.join(odd[:3])})."
            )
    return state
