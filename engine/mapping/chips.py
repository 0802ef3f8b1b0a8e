"""The training data of the mapping jobs: datasets, chips, split and normalisation.

trainmapping and addregion take the same dataset and chip parameters
(:class:`MappingDataParams`, declared once in
``contract/specs/imagery.py`` and ``contract/specs/trainmapping.py``); this
module turns them into a :class:`~slidewise.engine.imagery.datasets.ChipRequest`
and reads the chips.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext
from slidewise.engine.core.params import JobParams
from slidewise.engine.imagery.datasets import (
    ChipRequest,
    DatasetSpec,
    MappingData,
    prepare_mapping_data,
)
from slidewise.engine.imagery.labels import LabelMapping, parse_color, parse_values

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class MappingDataParams(JobParams):
    """Dataset and chip parameters shared by trainmapping and addregion (see their specs).

    Attributes:
        dataset_type: ``pairs``, ``l4s_h5`` or ``geotiff``.
        train_images: Training images (folder or file).
        train_masks: Masks or label rasters of the training images.
        valid_images: Separate validation images.
        valid_masks: Their masks.
        label_polygons: Landslide polygons (geotiff only).
        landslide_values: Label values meaning landslide (text).
        ignore_values: Label values not counted (text).
        mask_color: RGB of landslide pixels in colour masks (text).
        bands: Bands to use (text).
        normalisation: ``fit``, ``l4s`` or ``none``.
        chip_size: Chip side in pixels.
        stride: Step between training chips (``None``: the chip size).
        valid_fraction: Share split off for validation without validation images.
        seed: Seed of the job (``None``: the runtime seed).
    """

    dataset_type: str = "pairs"
    train_images: str = ""
    train_masks: str | None = None
    valid_images: str | None = None
    valid_masks: str | None = None
    label_polygons: str | None = None
    landslide_values: str | None = None
    ignore_values: str | None = None
    mask_color: str | None = None
    bands: str | None = None
    normalisation: str = "fit"
    chip_size: int = 256
    stride: int | None = None
    valid_fraction: float = 0.2
    seed: int | None = None

    def inputs(
        self, before: tuple[str | None, ...] = (), after: tuple[str | None, ...] = ()
    ) -> list[str]:
        """The input files and folders given, for the run manifest.

        Args:
            before: Other inputs listed after the training images, before their masks.
            after: Other inputs listed last.
        """
        given = (self.train_masks, self.valid_images, self.valid_masks, self.label_polygons)
        return [self.train_images] + [str(p) for p in (*before, *given, *after) if p]


def job_runtime(seed: int | None, ctx: JobContext) -> tuple[int, torch.device]:
    """Apply the runtime options with the job's seed; the seed and the device.

    Args:
        seed: SEED as given (``None``: the runtime seed).
        ctx: The job's context.
    """
    from slidewise.engine.core.runtime import apply, select_device

    seed = ctx.options.seed if seed is None else seed
    apply(replace(ctx.options, seed=seed))
    return seed, select_device(ctx.options.device)


def dataset_specs(options: MappingDataParams) -> tuple[DatasetSpec, DatasetSpec | None]:
    """The training and (optional) validation datasets named by the parameters.

    Raises:
        InputError: polygons without geotiff data, validation masks without images,
            unreadable label values or mask colour.
    """
    kind = options.dataset_type
    mapping = LabelMapping(
        landslide=parse_values(options.landslide_values, "LANDSLIDE_VALUES"),
        ignore=parse_values(options.ignore_values, "IGNORE_VALUES") or (),
        mask_color=parse_color(options.mask_color),
    )
    polygons = options.label_polygons or None
    if polygons and kind != "geotiff":
        raise InputError("LABEL_POLYGONS needs DATASET_TYPE geotiff (georeferenced images).")
    train = DatasetSpec(kind, options.train_images, options.train_masks or None, polygons, mapping)
    valid = None
    if options.valid_images:
        valid = DatasetSpec(
            kind, options.valid_images, options.valid_masks or None, polygons, mapping
        )
    elif options.valid_masks:
        raise InputError("VALID_MASKS was given without VALID_IMAGES: give both or neither.")
    return train, valid


def chip_request(options: MappingDataParams, seed: int) -> ChipRequest:
    """The datasets, chips, split and normalisation the parameters ask for.

    Raises:
        InputError: a bad value (see :func:`dataset_specs`), naming the parameter.
    """
    train, valid = dataset_specs(options)
    return ChipRequest(
        train=train,
        valid=valid,
        chip_size=options.chip_size,
        stride=options.stride,
        valid_fraction=options.valid_fraction,
        bands=options.bands,
        normalisation=options.normalisation,
        seed=seed,
    )


def read_chips(request: ChipRequest, ctx: JobContext, what: str) -> MappingData:
    """Read, split and normalise the chips of ``request`` and log what was read.

    Args:
        request: From :func:`chip_request`.
        ctx: The job's context (log and warnings).
        what: What is being read, for the log (e.g. "the training data").
    """
    ctx.log(f"Reading {what} ({request.train.kind}) ...")
    ctx.progress(1)
    data = prepare_mapping_data(request, warn=ctx.warn)
    ctx.log(
        f"{len(data.train)} training and {len(data.valid)} validation chips of "
        f"{data.chip_size} px; bands {', '.join(data.band_names)}; landslide pixels "
        f"{data.landslide_fraction:.2%} of labelled training pixels; split: "
        f"{data.split.detail}."
    )
    return data
