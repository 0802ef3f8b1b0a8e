"""Segmentation models for landslide mapping and their model files.

Architectures come from segmentation-models-pytorch (any architecture, any
encoder, any number of input bands, no downloaded weights). A model predicts
one logit per pixel: the landslide class (1 = landslide) after a sigmoid.
Model files hold the weights, the architecture config, the band names and the
fitted normalisation, so inference re-applies exactly what training used.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from slidewise.engine.errors import InputError, ModelFileError
from slidewise.engine.modelfile import ModelMetadata, load_model, save_model

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
    from slidewise.engine.tvcompat import ensure_torchvision_ops

    ensure_torchvision_ops()
    import segmentation_models_pytorch as smp

    return smp


def build_model(config: SegModelConfig) -> nn.Module:
    """Build an untrained model from ``config`` (no weights are downloaded).

    Raises:
        InputError: unknown architecture or encoder.
    """
    arch = config.architecture.lower()
    if arch == "resunet":
        from slidewise.engine.resunet import build_resunet

        return build_resunet(config)
    if arch not in SMP_ARCHITECTURES:
        raise InputError(
            f"Unknown architecture '{config.architecture}': use resunet or one of "
            f"{', '.join(SMP_ARCHITECTURES)}."
        )
    smp = _smp()
    try:
        return smp.create_model(
            arch,
            encoder_name=config.encoder,
            encoder_weights=None,
            encoder_depth=config.encoder_depth,
            in_channels=config.in_channels,
            classes=1,
        )
    except (KeyError, ValueError) as exc:
        raise InputError(
            f"Could not build {config.architecture} with encoder '{config.encoder}' ({exc}): "
            "choose an encoder that segmentation-models-pytorch provides, e.g. resnet18, "
            "resnet34, efficientnet-b0 or mit_b0."
        ) from None


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
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(
            f"The weights in '{os.fspath(path)}' do not fit the stored architecture "
            f"({str(exc).splitlines()[0]}): the file is damaged or was edited."
        ) from None
    return model.to(device).eval(), meta
