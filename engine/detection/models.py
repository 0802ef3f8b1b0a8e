"""Faster R-CNN landslide detectors with a feature pyramid over any backbone.

Detectors are torchvision's :class:`~torchvision.models.detection.FasterRCNN`
over a feature pyramid network (FPN) built on

* a torchvision ResNet (``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``,
  ...; no downloaded weights), whose ``layer1``-``layer4`` outputs (strides
  4-32) feed torchvision's :class:`~torchvision.models.detection.backbone_utils.BackboneWithFPN`;
* or a timm backbone (``timm:<name>``, e.g. ``timm:efficientnet_b0``) created
  with ``features_only=True`` (its last four feature levels) and wrapped in the
  same FPN (:class:`TimmBackboneWithFPN`).

So small backbones detect small landslides from stride-4 features instead of a
single stride-32 map (the reason why a plain ResNet-18 Faster R-CNN scored
mAP@0.5 < 0.01 on 224-px Landslide4Sense images in the seed study). The first
convolution takes any number of bands. Backbones use trainable batch norm
(torchvision's default frozen batch norm is an identity without pretrained
statistics, which leaves a network trained from scratch unnormalised).

The detector's :class:`~torchvision.models.detection.transform.GeneralizedRCNNTransform`
normalises every band with the training data's mean and standard deviation
(:attr:`DetectorConfig.image_mean`, :attr:`DetectorConfig.image_std`) and
resizes images so that their shorter side is :attr:`DetectorConfig.min_size`.

Encoder weights (:func:`load_backbone_weights`) are loaded strictly into the
backbone body (``model.backbone.body``): the file's keys are the body's own
parameter names, which for ResNets are torchvision's ResNet names
(``conv1.weight``, ``bn1.running_mean``, ``layer1.0.conv1.weight`` ...: the
names that torchvision, timm and segmentation-models-pytorch ResNet encoders
share; the body has no ``fc``). When the file's keys carry one of the
prefixes :data:`WEIGHT_PREFIXES` (``backbone.body.``, ``encoder.``,
``body.``, ``backbone.``), only the keys with the first such prefix found are
used, with the prefix removed (so a whole detection model file, or an
encoder-decoder file, gives its encoder). Every missing or unexpected key and
every shape mismatch is reported in one :class:`InputError`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
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

ARCHITECTURE = "fasterrcnn_fpn"
#: Prefixes stripped from encoder weight keys, in this order (see module doc).
WEIGHT_PREFIXES = ("backbone.body.", "encoder.", "body.", "backbone.")
#: ResNets that torchvision builds.
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def import_torchvision() -> Any:
    """Import torchvision after making its detection operators usable."""
    from slidewise.engine.imagery.tvcompat import ensure_torchvision_ops

    ensure_torchvision_ops()
    import torchvision

    return torchvision


@dataclass
class DetectorConfig:
    """How to build a detector.

    Attributes:
        backbone: ``resnet18`` ... ``resnet152`` (torchvision) or ``timm:<name>``.
        in_channels: Input bands.
        trainable_layers: Trainable backbone stages counted from the top (0-5;
            5 = all, for training from scratch).
        fpn_channels: Channels of the feature pyramid.
        min_size: Shorter image side after the detector's resize.
        max_size: Longer side limit of the resize.
        image_mean: Per-band mean (raw units) subtracted by the detector.
        image_std: Per-band standard deviation (raw units).
        anchor_sizes: Anchor side per pyramid level (5 levels), in resized pixels.
        aspect_ratios: Anchor aspect ratios (height / width).
        num_classes: Classes including background (2: background, landslide).
        box_score_thresh: Lowest score returned by the detector.
        box_detections_per_img: Most boxes returned per image.
        rpn_pre_nms_top_n: Proposals per pyramid level before the RPN's NMS
            (training, inference); torchvision's defaults are 2000, 1000.
        rpn_post_nms_top_n: Proposals per image after the RPN's NMS (training,
            inference); torchvision's defaults are 2000, 1000.
        box_batch_size_per_image: Sampled proposals per image for the box head
            loss (torchvision's default 512).

    The proposal counts are lower than torchvision's defaults (chosen for
    800-px COCO images with many objects): landslide images are small and hold
    few objects, and the pure-PyTorch NMS fallback dominated the CPU time of a
    training step with the defaults.
    """

    backbone: str = "resnet18"
    in_channels: int = 3
    trainable_layers: int = 5
    fpn_channels: int = 256
    min_size: int = 448
    max_size: int = 1333
    image_mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    image_std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    anchor_sizes: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    num_classes: int = 2
    box_score_thresh: float = 0.05
    box_detections_per_img: int = 100
    rpn_pre_nms_top_n: list[int] = field(default_factory=lambda: [600, 300])
    rpn_post_nms_top_n: list[int] = field(default_factory=lambda: [600, 300])
    box_batch_size_per_image: int = 128


class TimmBackboneWithFPN(nn.Module):
    """A timm ``features_only`` backbone with torchvision's FPN on its last four levels.

    Attributes:
        body: The timm feature extractor.
        fpn: :class:`torchvision.ops.FeaturePyramidNetwork` with a max-pool level.
        out_channels: FPN channels (FasterRCNN reads this attribute).
    """

    def __init__(self, name: str, in_channels: int, out_channels: int, trainable: int) -> None:
        super().__init__()
        import timm

        tv = import_torchvision()
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        try:
            probe = timm.create_model(name, pretrained=False, features_only=True)
        except Exception as exc:
            raise InputError(
                f"timm cannot build '{name}' as a feature extractor ({exc}): choose a timm "
                "CNN such as efficientnet_b0, resnet18 or convnext_tiny."
            ) from None
        n_levels = len(probe.feature_info)  # type: ignore[arg-type]
        if n_levels < 4:
            raise InputError(
                f"The timm backbone '{name}' has {n_levels} feature levels; the FPN needs 4."
            )
        indices = tuple(range(n_levels - 4, n_levels))
        self.body = timm.create_model(
            name, pretrained=False, features_only=True, in_chans=in_channels, out_indices=indices
        )
        self.channels = list(self.body.feature_info.channels())  # type: ignore[union-attr,operator]
        self.fpn = tv.ops.FeaturePyramidNetwork(
            self.channels, out_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = out_channels
        _freeze_timm(self.body, trainable)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.body(x)
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, (f, c) in enumerate(zip(feats, self.channels, strict=True)):
            if f.shape[1] != c and f.shape[-1] == c:  # channels-last features (e.g. Swin)
                f = f.permute(0, 3, 1, 2).contiguous()
            out[str(i)] = f
        result: dict[str, torch.Tensor] = self.fpn(out)
        return result


def _freeze_timm(body: nn.Module, trainable: int) -> None:
    """Freeze all but the last ``trainable`` of five parameter groups (stem + 4 levels)."""
    if trainable >= 5:
        return
    params = list(body.named_parameters())
    n = len(params)
    cut = int(n * (5 - trainable) / 5)
    for _, p in params[:cut]:
        p.requires_grad_(False)


def _resnet_backbone(config: DetectorConfig) -> nn.Module:
    tv = import_torchvision()
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    name = config.backbone.lower()
    net = getattr(tv.models, name)(weights=None, norm_layer=nn.BatchNorm2d)
    if config.in_channels != 3:
        net.conv1 = nn.Conv2d(config.in_channels, 64, 7, stride=2, padding=3, bias=False)
    if not 0 <= config.trainable_layers <= 5:
        raise InputError(f"TRAINABLE_LAYERS must be 0-5, got {config.trainable_layers}.")
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][: config.trainable_layers]
    if config.trainable_layers == 5:
        trainable.append("bn1")
    for pname, p in net.named_parameters():
        if all(not pname.startswith(layer) for layer in trainable):
            p.requires_grad_(False)
    top = net.inplanes  # channels of layer4 (512 for ResNet-18/34, 2048 for 50+)
    return BackboneWithFPN(
        net,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=[top // 8, top // 4, top // 2, top],
        out_channels=config.fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )


def build_detector(config: DetectorConfig) -> nn.Module:
    """Build an untrained Faster R-CNN from ``config`` (nothing is downloaded).

    Raises:
        InputError: unknown backbone, or inconsistent band statistics.
    """
    import_torchvision()
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    name = config.backbone.strip()
    if len(config.image_mean) != config.in_channels or len(config.image_std) != config.in_channels:
        raise InputError(
            f"The detector has {config.in_channels} input band(s) but {len(config.image_mean)} "
            "band mean(s): the configuration is inconsistent."
        )
    if name.lower().startswith("timm:"):
        backbone: nn.Module = TimmBackboneWithFPN(
            name[5:], config.in_channels, config.fpn_channels, config.trainable_layers
        )
    elif name.lower() in RESNETS:
        backbone = _resnet_backbone(config)
    else:
        raise InputError(
            f"Unknown BACKBONE '{config.backbone}': use one of {', '.join(RESNETS)} or "
            "timm:<name> (e.g. timm:efficientnet_b0)."
        )
    sizes = tuple((int(s),) for s in config.anchor_sizes)
    anchors = AnchorGenerator(sizes, (tuple(config.aspect_ratios),) * len(sizes))
    return FasterRCNN(
        backbone,
        num_classes=config.num_classes,
        min_size=config.min_size,
        max_size=max(config.max_size, config.min_size),
        image_mean=list(config.image_mean),
        image_std=list(config.image_std),
        rpn_anchor_generator=anchors,
        box_score_thresh=config.box_score_thresh,
        box_detections_per_img=config.box_detections_per_img,
        rpn_pre_nms_top_n_train=int(config.rpn_pre_nms_top_n[0]),
        rpn_pre_nms_top_n_test=int(config.rpn_pre_nms_top_n[1]),
        rpn_post_nms_top_n_train=int(config.rpn_post_nms_top_n[0]),
        rpn_post_nms_top_n_test=int(config.rpn_post_nms_top_n[1]),
        box_batch_size_per_image=config.box_batch_size_per_image,
    )


def _strip_prefix(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    for prefix in WEIGHT_PREFIXES:
        if any(k.startswith(prefix) for k in tensors):
            n = len(prefix)
            return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}, prefix
    return dict(tensors), ""


def load_backbone_weights(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load encoder weights (safetensors) strictly into ``model.backbone.body``.

    Args:
        model: A detector from :func:`build_detector`.
        path: The ``.safetensors`` file (for example from the ``pretrainencoder`` job).

    Returns:
        ``{"tensors": n, "prefix": prefix_removed}``.

    Raises:
        InputError: missing or unreadable file, or keys that do not fit the body:
            the message lists the missing and unexpected keys and shape mismatches.
    """
    from safetensors.torch import load_file

    p = os.fspath(path)
    if not p or not os.path.isfile(p):
        raise InputError(f"The encoder weights file '{p}' does not exist: check ENCODER_WEIGHTS.")
    try:
        raw = load_file(p)
    except Exception as exc:
        raise InputError(
            f"The encoder weights file '{os.path.basename(p)}' is not a safetensors file "
            f"({exc}): give the .safetensors file written by the pretrainencoder job."
        ) from None
    return load_backbone_state(model, raw, os.path.basename(p))


def load_backbone_state(
    model: nn.Module, state: dict[str, torch.Tensor], source: str = "the encoder weights"
) -> dict[str, Any]:
    """Load a state dict strictly into ``model.backbone.body`` (see :func:`load_backbone_weights`).

    Args:
        model: A detector from :func:`build_detector`.
        state: Encoder tensors (prefixes of :data:`WEIGHT_PREFIXES` are removed).
        source: How messages name the weights.

    Returns:
        ``{"tensors": n, "prefix": prefix_removed}``.

    Raises:
        InputError: missing or unexpected keys or shape mismatches, all listed.
    """
    tensors, prefix = _strip_prefix(dict(state))
    body: nn.Module = model.backbone.body  # type: ignore[union-attr,assignment]
    parts = state_dict_mismatch(body.state_dict(), tensors)
    if parts:
        stripped = f" after removing the prefix '{prefix}'" if prefix else ""
        raise InputError(
            f"The encoder weights in '{source}'{stripped} do not fit the "
            f"detector's backbone body ({'; '.join(parts)}): use weights of the same backbone "
            "and band count, with the body's key names (conv1.weight, layer1.0.conv1.weight, "
            "... for ResNets), or leave ENCODER_WEIGHTS empty."
        )
    body.load_state_dict(tensors, strict=True)
    return {"tensors": len(tensors), "prefix": prefix}


def save_detector(
    path: str | os.PathLike[str],
    model: nn.Module,
    config: DetectorConfig,
    bands: list[str],
    **metadata: Any,
) -> None:
    """Save a detector (weights + config + bands + normalisation) as a ``detection`` model.

    Extra keyword arguments go to :class:`ModelMetadata` (tile_size, provenance,
    metrics, extra).
    """
    meta = ModelMetadata(
        task="detection",
        architecture=ARCHITECTURE,
        config=asdict(config),
        bands=list(bands),
        normalisation={"kind": "fit", "mean": config.image_mean, "std": config.image_std},
        class_names=["background", "landslide"],
        **metadata,
    )
    save_model(path, model.state_dict(), meta)


def load_detector(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelMetadata]:
    """Load a detector in eval mode with strict key checking.

    Raises:
        ModelFileError: missing, corrupted, another task, or weights that do not fit.
    """
    tensors, meta = load_model(path, task="detection", device=device)
    config = DetectorConfig(**meta.config)
    model = build_detector(config)
    load_strict(model, tensors, os.fspath(path))
    return model.to(device).eval(), meta
