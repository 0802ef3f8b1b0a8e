"""The multi-region segmentation model: one shared encoder, one U-Net decoder per region.

This follows TSMU (Nagendra et al. 2022, "Efficient deep learning for landslide
mapping in multiple ecoregions"): the encoder is shared by every region
(ecoregion, sensor, event) and each region has its own U-Net decoder and
segmentation head. Regions are added and trained by the ``addregion`` job
(:mod:`slidewise.engine.mapping.addregion`); maps per region are drawn by
:mod:`slidewise.engine.mapping.regionmaps`.

One model file (``task = "multiregion"``) holds the encoder, every decoder and
head (tensor keys ``encoder.*``, ``decoders.<region>.*``, ``heads.<region>.*``),
and per region (``metadata.extra["regions"]``): the bands, the normalisation,
the probability threshold, the training data and the validation metrics; the
history of added regions with their forgetting tables is in
``metadata.extra["events"]``. Regions may use different band names (the same
band count: the encoder is shared) and always use their own normalisation.
:class:`RegionView` (``model.view(region)``) is an ``nn.Module`` with one
decoder that the tiling can run. :func:`distillation_loss` is the
learning-without-forgetting term, shared with encoder pre-training.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from slidewise.engine.core.errors import InputError, ModelFileError
from slidewise.engine.core.modelfile import (
    ModelMetadata,
    load_model,
    load_strict,
    read_metadata,
    save_model,
)
from slidewise.engine.imagery.segmodels import SegModelConfig, build_model

#: The only architecture with per-region decoders (smp U-Net, as in TSMU).
ARCHITECTURE = "unet"
#: Region names: letters, digits, ``_``, ``-`` and spaces, starting with a letter or digit.
REGION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\- ]{0,63}$")
#: The name given to the region of a converted single-region mapping model.
DEFAULT_BASE_REGION = "base"
#: Region index of pixels no decoder predicted (see :func:`iter_region_predictions`).
NO_REGION = 255
#: Decoder channels of new models (the trainmapping default recipe's light decoder).
DEFAULT_DECODER_CHANNELS = [128, 64, 32, 16, 8]


def check_region_name(name: Any) -> str:
    """Validate a region name and return it stripped.

    Raises:
        InputError: empty, too long, with characters other than letters,
            digits, ``_``, ``-`` and spaces, or a name reserved by PyTorch.
    """
    text = str(name if name is not None else "").strip()
    if not REGION_NAME.match(text):
        raise InputError(
            f"Invalid region name '{text}': use 1-64 letters, digits, '_', '-' or spaces, "
            "starting with a letter or digit (for example bijie or alps-2020)."
        )
    if hasattr(nn.ModuleDict(), text):
        raise InputError(f"The region name '{text}' is reserved: choose another name.")
    return text


# --------------------------------------------------------------------------- the model


class MultiRegionModel(nn.Module):
    """A shared smp encoder with one U-Net decoder and segmentation head per region.

    Args:
        config: The smp U-Net configuration shared by every region (architecture
            ``unet``; ``extra`` holds smp options such as ``decoder_channels``).
        regions: Region names, in order; the first is the default region.

    Attributes:
        config: The shared configuration.
        encoder: The shared smp encoder.
        decoders: Region name -> smp U-Net decoder.
        heads: Region name -> segmentation head (one logit per pixel).
        records: Region name -> metadata (bands, normalisation, threshold,
            training data, metrics); written to ``metadata.extra["regions"]``.
        events: Regions added so far, with their forgetting tables.
        provenance: How the model was made (first region, conversions).

    Raises:
        InputError: another architecture than ``unet``, or a bad region name.
    """

    def __init__(self, config: SegModelConfig, regions: Sequence[str] = ()) -> None:
        super().__init__()
        if config.architecture.lower() != ARCHITECTURE:
            raise InputError(
                f"Per-region decoders need an smp U-Net (architecture unet), not "
                f"'{config.architecture}': train the base model with ARCHITECTURE unet."
            )
        self.config = config
        base = build_model(config)
        self.encoder = base.encoder
        self.decoders = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.records: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.provenance: dict[str, Any] = {}
        for k, region in enumerate(regions):
            name = check_region_name(region)
            if name in self.decoders:
                raise InputError(f"The region '{name}' is listed twice.")
            if k == 0:
                self.decoders[name], self.heads[name] = base.decoder, base.segmentation_head
            else:
                self.decoders[name], self.heads[name] = self._fresh_decoder()

    @property
    def regions(self) -> list[str]:
        """Region names in order (the first is the default region)."""
        return list(self.decoders.keys())

    @property
    def output_stride(self) -> int:
        """Tile alignment for tiled inference (the encoder's total downsampling)."""
        return max(32, 2 ** int(self.config.encoder_depth))

    def _fresh_decoder(self) -> tuple[nn.Module, nn.Module]:
        unet = build_model(self.config)
        return unet.decoder, unet.segmentation_head

    def require(self, region: str) -> str:
        """Return ``region`` if the model has it.

        Raises:
            InputError: naming the existing regions.
        """
        if region not in self.decoders:
            raise InputError(
                f"The model has no region '{region}': its regions are "
                f"{', '.join(self.regions) or 'none'}. Choose one of them, or add the region "
                "with the addregion algorithm."
            )
        return region

    def add_region(self, name: str, init_from: str | None = None, replace: bool = False) -> str:
        """Add a decoder and head for region ``name``.

        Args:
            name: The new region's name.
            init_from: Copy the decoder and head of this region (``None``: random start).
            replace: Allow ``name`` to exist already (its decoder is replaced).

        Returns:
            The checked name.

        Raises:
            InputError: bad or existing name (without ``replace``), unknown ``init_from``.
        """
        name = self.check_new(name, replace)
        if init_from is not None:
            self.require(init_from)
            decoder = copy.deepcopy(self.decoders[init_from])
            head = copy.deepcopy(self.heads[init_from])
        else:
            decoder, head = self._fresh_decoder()
        device = next(self.encoder.parameters()).device
        self.decoders[name] = decoder.to(device)
        self.heads[name] = head.to(device)
        return name

    def check_new(self, name: str, replace: bool = False) -> str:
        """Check a name for a new region and return it stripped.

        Raises:
            InputError: bad name, or an existing region without ``replace``.
        """
        name = check_region_name(name)
        if name in self.decoders and not replace:
            raise InputError(
                f"The model already has a region '{name}' (regions: {', '.join(self.regions)}): "
                "choose another REGION name, or set REPLACE to true to retrain its decoder."
            )
        return name

    def remove_region(self, name: str) -> None:
        """Remove a region's decoder, head and record."""
        self.require(name)
        del self.decoders[name]
        del self.heads[name]
        self.records.pop(name, None)

    def decode(self, features: list[torch.Tensor], region: str) -> torch.Tensor:
        """Logits (B, 1, H, W) of ``region``'s decoder for encoder ``features``."""
        return self.heads[region](self.decoders[region](features))

    def forward(self, x: torch.Tensor, region: str) -> torch.Tensor:
        """Landslide logits (B, 1, H, W) of ``x`` with the decoder of ``region``."""
        self.require(region)
        return self.decode(self.encoder(x), region)

    def view(self, region: str) -> RegionView:
        """A single-input module predicting with ``region``'s decoder."""
        return RegionView(self, region)

    def record(self, region: str) -> dict[str, Any]:
        """The metadata of ``region`` (bands, normalisation, threshold, ...)."""
        self.require(region)
        return self.records.get(region, {})


class RegionView(nn.Module):
    """A :class:`MultiRegionModel` seen as a one-region model: ``forward(x)``.

    For :func:`slidewise.engine.imagery.tiling.predict_raster`,
    :func:`slidewise.engine.mapping.validation.validate` and anything else that calls
    ``model(x)``. Moving or switching the mode of the view acts on the whole
    shared model.
    """

    def __init__(self, model: MultiRegionModel, region: str) -> None:
        super().__init__()
        self.model = model
        self.region = model.require(region)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Landslide logits (B, 1, H, W)."""
        return self.model(x, self.region)


# --------------------------------------------------------------------------- model files


def _unet_to_region(
    tensors: dict[str, torch.Tensor], region: str, source: str
) -> dict[str, torch.Tensor]:
    """Rename the tensors of an smp U-Net (encoder, decoder, segmentation_head) for a region."""
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if key.startswith("encoder."):
            out[key] = value
        elif key.startswith("decoder."):
            out[f"decoders.{region}.{key[len('decoder.') :]}"] = value
        elif key.startswith("segmentation_head."):
            out[f"heads.{region}.{key[len('segmentation_head.') :]}"] = value
        else:
            raise ModelFileError(
                f"The model '{source}' holds a tensor '{key}' that an smp U-Net does not have: "
                "choose a mapping model trained with ARCHITECTURE unet."
            )
    return out


def region_record_from_mapping(meta: ModelMetadata, source: str) -> dict[str, Any]:
    """A region record built from a single-region mapping model's metadata."""
    extra = meta.extra or {}
    prov = dict(meta.provenance or {})
    data = {
        "dataset_type": prov.get("dataset_type", ""),
        "train_images": prov.get("train_images", ""),
        "train_masks": prov.get("train_masks", ""),
        "label_polygons": prov.get("label_polygons", ""),
        "label_mapping": extra.get("label_mapping", {}),
        "band_indices": extra.get("band_indices", list(range(1, len(meta.bands) + 1))),
        "chip_size": meta.tile_size,
        "seed": prov.get("seed", 0),
        "split": prov.get("split", ""),
    }
    return {
        "bands": list(meta.bands),
        "band_indices": list(data["band_indices"]),
        "normalisation": dict(meta.normalisation or {}),
        "threshold": float(extra.get("threshold", 0.5)),
        "tile_size": meta.tile_size,
        "pixel_size": meta.pixel_size,
        "data": data,
        "training": {"job": prov.get("job", "trainmapping"), "converted_from": source, **prov},
        "metrics": dict(meta.metrics or {}),
    }


def from_unet(
    unet: nn.Module, config: SegModelConfig, region: str, record: dict[str, Any]
) -> MultiRegionModel:
    """Turn a trained smp U-Net into a one-region :class:`MultiRegionModel` (weights copied)."""
    model = MultiRegionModel(config, [region])
    tensors = _unet_to_region(unet.state_dict(), region, "the trained U-Net")
    load_strict(model, tensors, "the trained U-Net")
    model.records[region] = record
    return model.eval()


def from_mapping_model(
    path: str | os.PathLike[str], region: str = DEFAULT_BASE_REGION
) -> MultiRegionModel:
    """Convert a single-region mapping model file (smp U-Net) into a multi-region model.

    Raises:
        ModelFileError: not a mapping model, or weights that do not fit.
        InputError: the mapping model is not an smp U-Net.
    """
    name = Path(path).name
    tensors, meta = load_model(path, task="mapping")
    config = SegModelConfig(**meta.config)
    if config.architecture.lower() != ARCHITECTURE:
        raise InputError(
            f"The mapping model '{name}' is a {config.architecture} model: only smp U-Net "
            "mapping models (ARCHITECTURE unet) can get per-region decoders. Train the base "
            "model with ARCHITECTURE unet, or leave MODEL empty to train a new one."
        )
    model = MultiRegionModel(config, [check_region_name(region)])
    load_strict(model, _unet_to_region(tensors, region, name), name)
    model.records[region] = region_record_from_mapping(meta, str(path))
    model.provenance = {"converted_from": str(path), "base_region": region}
    return model.eval()


def save_multiregion(path: str | os.PathLike[str], model: MultiRegionModel) -> Path:
    """Write the model (all regions) and its metadata to one model file.

    The file's top-level bands, normalisation and tile size are those of the
    default (first) region; every region's own are in ``extra["regions"]``.

    Raises:
        ValueError: a region has no record (internal error).
    """
    regions = model.regions
    missing = [r for r in regions if r not in model.records]
    if missing or not regions:
        raise ValueError(f"regions without a record: {missing or 'no region at all'}")
    default = model.records[regions[0]]
    meta = ModelMetadata(
        task="multiregion",
        architecture=ARCHITECTURE,
        config=asdict(model.config),
        bands=list(default.get("bands", [])),
        normalisation=dict(default.get("normalisation", {})),
        pixel_size=default.get("pixel_size"),
        tile_size=default.get("tile_size"),
        provenance=dict(model.provenance),
        metrics={
            "regions": {
                r: (model.records[r].get("metrics") or {}).get("validation", {}) for r in regions
            }
        },
        extra={
            "regions": {r: model.records[r] for r in regions},
            "region_order": regions,
            "default_region": regions[0],
            "events": list(model.events),
        },
    )
    return save_model(path, model.state_dict(), meta)


def load_multiregion(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[MultiRegionModel, ModelMetadata]:
    """Load a multi-region model in eval mode with strict key checking.

    Raises:
        ModelFileError: missing or damaged file, another task (for example a
            mapping model: convert it with the addregion algorithm), region
            metadata that does not match the weights.
    """
    name = Path(path).name
    tensors, meta = load_model(path, task="multiregion", device=device)
    extra = meta.extra or {}
    order = list(extra.get("region_order") or [])
    records = dict(extra.get("regions") or {})
    if not order or set(order) != set(records):
        raise ModelFileError(
            f"The model file '{name}' has inconsistent region metadata: the file is damaged "
            "or was edited."
        )
    try:
        model = MultiRegionModel(SegModelConfig(**meta.config), order)
    except (InputError, TypeError) as exc:
        raise ModelFileError(
            f"The model file '{name}' describes a model that cannot be built ({exc})."
        ) from None
    load_strict(model, tensors, name)
    model.records = records
    model.events = list(extra.get("events") or [])
    model.provenance = dict(meta.provenance or {})
    return model.to(device).eval(), meta


def load_or_convert(
    path: str | os.PathLike[str], base_region: str = DEFAULT_BASE_REGION
) -> tuple[MultiRegionModel, str]:
    """Load a multi-region model, or convert a mapping model (region ``base_region``).

    Returns:
        The model and what the file held (``multiregion`` or ``mapping``).

    Raises:
        ModelFileError: any other task, naming the two accepted ones.
    """
    meta = read_metadata(path)
    if meta.task == "mapping":
        return from_mapping_model(path, base_region), "mapping"
    if meta.task != "multiregion":
        raise ModelFileError(
            f"The model file '{Path(path).name}' holds a {meta.task} model "
            f"({meta.architecture}), but adding a region needs a multiregion model or a "
            "mapping model (smp U-Net): choose one of those, or leave MODEL empty."
        )
    return load_multiregion(path)[0], "multiregion"


# --------------------------------------------------------------------------- training


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0
) -> torch.Tensor:
    """Per-pixel binary distillation loss ``T^2 * KL(sigmoid(t/T) || sigmoid(s/T))``, mean.

    Zero when the student's logits equal the teacher's; the gradient is the
    one of the binary cross-entropy with the teacher's soft targets (LwF).
    """
    t = float(temperature)
    target = torch.sigmoid(teacher.float() / t)
    cross = F.binary_cross_entropy_with_logits(student.float() / t, target)
    entropy = F.binary_cross_entropy_with_logits(teacher.float() / t, target)
    return (cross - entropy) * t * t


# --------------------------------------------------------------------------- data


# --------------------------------------------------------------------------- forgetting


# --------------------------------------------------------------------------- first region


# --------------------------------------------------------------------------- the job


# --------------------------------------------------------------------------- mapping
