"""Segmentation models for landslide mapping and their model files.

Architectures come from segmentation-models-pytorch (any architecture, any
encoder, any number of input bands, no downloaded weights). A model predicts
one logit per pixel: the landslide class (1 = landslide) after a sigmoid.
Model files hold the weights, the architecture config, the band names and the
fitted normalisation, so inference re-applies exactly what training used.

Models written by the ``trainmapping`` job also store, in ``metadata.extra``:
``band_indices`` (1-based bands of the source images, in model order),
``threshold`` (landslide probability threshold chosen on validation),
``best_epoch``, ``pos_weight`` and ``label_mapping``; ``metadata.tile_size`` is
the training chip side and ``metadata.pixel_size`` the GeoTIFF pixel size.

``resunet`` (:mod:`slidewise.engine.imagery.resunet`) returns ``(main, [aux, ...])`` in
train mode; :func:`main_logits` picks the main logits from any model output.
:func:`load_encoder_weights` loads local encoder weights (safetensors) with
strict key checking.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.modelfile import (
    ModelMetadata,
    load_model,
    load_strict,
    save_model,
    state_dict_mismatch,
)

SMP_ARCHITECTURES = (
    "unet",
    "unetplusplus",
    "deeplabv3plus",
    "fpn",
    "pspnet",
    "linknet",
    "manet",
    "pan",
    "segformer",
    "upernet",
)


@dataclass
class SegModelConfig:
    """How to build a segmentation model.

    Attributes:
        architecture: An smp architecture (see :data:`SMP_ARCHITECTURES`) or ``resunet``.
        encoder: smp encoder name (ignored by ``resunet``).
        in_channels: Number of input bands.
        encoder_depth: Encoder depth for smp models.
        extra: Architecture-specific options (for example ``resunet`` widths, streams).
    """

    architecture: str = "unet"
    encoder: str = "resnet18"
    in_channels: int = 3
    encoder_depth: int = 5
    extra: dict[str, Any] = field(default_factory=dict)


def _smp() -> Any:
    from slidewise.engine.imagery.tvcompat import ensure_torchvision_ops

    ensure_torchvision_ops()
    import segmentation_models_pytorch as smp

    return smp


#: Architectures whose decoder has one block per encoder stage (``decoder_channels``).
_PER_STAGE_DECODERS = ("unet", "unetplusplus", "manet")
_DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)


def build_model(config: SegModelConfig) -> nn.Module:
    """Build an untrained model from ``config`` (no weights are downloaded).

    For smp architectures, ``config.extra`` holds extra keyword arguments of the
    smp model (for example ``decoder_channels``, ``decoder_attention_type``).
    U-Net, U-Net++ and MAnet get ``decoder_channels`` to match ``encoder_depth``
    when it is not given.

    Raises:
        InputError: unknown architecture or encoder, or options smp rejects.
    """
    arch = config.architecture.lower()
    if arch == "resunet":
        from slidewise.engine.imagery.resunet import build_resunet

        return build_resunet(config)
    if arch not in SMP_ARCHITECTURES:
        raise InputError(
            f"Unknown architecture '{config.architecture}': use resunet or one of "
            f"{', '.join(SMP_ARCHITECTURES)}."
        )
    if not 3 <= int(config.encoder_depth) <= 5:
        raise InputError(f"Encoder depth {config.encoder_depth} is out of range: use 3, 4 or 5.")
    kwargs = dict(config.extra or {})
    if arch in _PER_STAGE_DECODERS and "decoder_channels" not in kwargs:
        kwargs["decoder_channels"] = _DEFAULT_DECODER_CHANNELS[: int(config.encoder_depth)]
    smp = _smp()
    try:
        return smp.create_model(
            arch,
            encoder_name=config.encoder,
            encoder_weights=None,
            encoder_depth=config.encoder_depth,
            in_channels=config.in_channels,
            classes=1,
            **kwargs,
        )
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        detail = str(exc).strip("'\"")
        if isinstance(exc, KeyError) and "encoder name" in detail:
            detail = f"unknown encoder '{config.encoder}'"
        if len(detail) > 300:
            detail = detail[:300] + "..."
        raise InputError(
            f"Could not build {config.architecture} with encoder '{config.encoder}' ({detail}): "
            "choose an encoder that segmentation-models-pytorch provides, e.g. resnet18, "
            "resnet34, efficientnet-b0 or mit_b0, and options that the architecture accepts."
        ) from None


def main_logits(output: torch.Tensor | tuple[torch.Tensor, Any]) -> torch.Tensor:
    """The main logits of a model output.

    ``resunet`` with deep supervision returns ``(main, [aux, ...])`` in train
    mode; every other model (and ``resunet`` in eval mode) returns the logits.
    """
    return output[0] if isinstance(output, (tuple, list)) else output


def load_encoder_weights(model: nn.Module, path: str | os.PathLike[str]) -> int:
    """Load local encoder weights (a safetensors file) with strict key checking.

    The file holds the encoder's state dict, with or without an ``encoder.``
    prefix on every key (so a whole-model file of the same architecture works
    too: only its ``encoder.`` tensors are used). Nothing is downloaded.

    Args:
        model: A model from :func:`build_model` (smp models and ``resunet`` have
            an ``encoder`` submodule).
        path: The ``.safetensors`` file.

    Returns:
        The number of tensors loaded.

    Raises:
        InputError: the file is missing or unreadable, keys are missing or
            unexpected, or tensor shapes differ (for example another band count).
    """
    from safetensors.torch import load_file

    p = os.fspath(path)
    if not p or not os.path.isfile(p):
        raise InputError(f"The encoder weights file '{p}' does not exist: check the path.")
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise InputError("This architecture has no encoder to load weights into.")
    try:
        tensors = load_file(p)
    except Exception as exc:
        raise InputError(
            f"The encoder weights file '{os.path.basename(p)}' is not a safetensors file "
            f"({exc}): convert the weights to .safetensors."
        ) from None
    if any(k.startswith("encoder.") for k in tensors):
        tensors = {k[len("encoder.") :]: v for k, v in tensors.items() if k.startswith("encoder.")}
    parts = state_dict_mismatch(
        encoder.state_dict(), tensors, shown=5, shape_sep="; ", more_shapes=False
    )
    if parts:
        raise InputError(
            f"The encoder weights in '{os.path.basename(p)}' do not fit this encoder ("
            + "; ".join(parts)
            + "): use weights saved from the same encoder with the same number of input "
            "bands, or leave ENCODER_WEIGHTS empty."
        )
    encoder.load_state_dict(tensors, strict=True)
    return len(tensors)


def normalise(x: torch.Tensor, normalisation: dict[str, Any]) -> torch.Tensor:
    """Apply the stored per-band normalisation to a batch (B, C, H, W).

    ``normalisation`` holds ``mean`` and ``std`` lists (one value per band).
    """
    if not normalisation:
        return x
    mean = torch.as_tensor(normalisation["mean"], dtype=x.dtype, device=x.device)
    std = torch.as_tensor(normalisation["std"], dtype=x.dtype, device=x.device)
    return (x - mean.view(1, -1, 1, 1)) / std.clamp_min(1e-12).view(1, -1, 1, 1)


def save_mapping_model(
    path: str | os.PathLike[str],
    model: nn.Module,
    config: SegModelConfig,
    bands: list[str],
    normalisation: dict[str, Any],
    **metadata: Any,
) -> None:
    """Save a mapping model (weights + config + bands + normalisation).

    Extra keyword arguments go to :class:`ModelMetadata` (pixel_size, tile_size,
    provenance, metrics, extra).
    """
    meta = ModelMetadata(
        task="mapping",
        architecture=config.architecture,
        config=asdict(config),
        bands=list(bands),
        normalisation=normalisation,
        **metadata,
    )
    save_model(path, model.state_dict(), meta)


def load_mapping_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelMetadata]:
    """Load a mapping model in eval mode with strict key checking.

    Raises:
        ModelFileError: file missing, corrupted, for another task, or with weights
            that do not fit the stored architecture.
    """
    tensors, meta = load_model(path, task="mapping", device=device)
    config = SegModelConfig(**meta.config)
    model = build_model(config)
    load_strict(model, tensors, os.fspath(path))
    return model.to(device).eval(), meta
