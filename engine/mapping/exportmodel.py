"""The ``exportmodel`` job: a mapping model as an ONNX file that Deepness and ONNX runtimes load.

The graph (:mod:`slidewise.engine.imagery.onnxexport`) takes standardised
bands and returns the landslide probability; the file's metadata holds the
keys Deepness reads (standardisation, tile, overlap, threshold, classes,
resolution) and Slidewise's model card. Before the file is kept, ONNX Runtime
runs it on one tile and its probabilities are compared with PyTorch's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from slidewise.contract.specs.exportmodel import SPEC as EXPORT_SPEC
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.modelfile import ModelMetadata, read_metadata
from slidewise.engine.core.outputs import atomic_output, check_writable
from slidewise.engine.core.params import JobParams

CHECK_TOLERANCE = 1e-4
"""Largest probability difference between ONNX Runtime and PyTorch accepted."""


@dataclass(frozen=True)
class ExportParams(JobParams):
    """Parameters of the ``exportmodel`` job (declared in ``contract/specs/exportmodel.py``).

    Attributes:
        model: Mapping model (``.safetensors``) from ``trainmapping`` or ``addregion``.
        region: Multi-region models: the region whose decoder is exported.
        tile_size: Tile side of the input shape and of the metadata; ``None``: the
            tile ``maplandslides`` would use.
        overlap: Tile overlap in pixels (written as a percentage of the tile).
        dynamic_size: Leave height and width free instead of one fixed tile.
        threshold: Landslide threshold written for Deepness; ``None``: the stored one.
        small_segment: Deepness's small-segment removal kernel (0: off).
        opset: ONNX operator set version.
        output: The ``.onnx`` file.
    """

    SPEC = EXPORT_SPEC

    model: str = ""
    region: str | None = None
    tile_size: int | None = None
    overlap: int = 64
    dynamic_size: bool = False
    threshold: float | None = None
    small_segment: int = 0
    opset: int = 17
    output: str = ""


@dataclass
class Exportable:
    """A model ready to export and what its metadata says.

    Attributes:
        net: The single-input model (a region view for multi-region models).
        meta: Metadata describing it (the region's bands and normalisation).
        threshold: Stored landslide threshold, if any.
        default_tile: Tile used when TILE_SIZE is unset.
        multiple: Tile alignment (output stride).
    """

    net: nn.Module
    meta: ModelMetadata
    threshold: float | None
    default_tile: int
    multiple: int


def run_export(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Export a mapping model to ONNX with Deepness metadata (parameters: :class:`ExportParams`)."""
    from slidewise.engine.core.runtime import apply

    options = ExportParams.from_params(params)
    check_writable(options.output)
    if Path(options.output).suffix.lower() != ".onnx":
        raise InputError(f"OUTPUT '{Path(options.output).name}' must be an .onnx file.")
    apply(ctx.options)
    model = load_exportable(options)
    tile = _aligned(options.tile_size or model.default_tile, model.multiple)
    overlap = min(_aligned(options.overlap, model.multiple), tile - model.multiple)
    threshold = options.threshold if options.threshold is not None else model.threshold
    ctx.log(
        f"Exporting {model.meta.architecture} (bands in order: {', '.join(model.meta.bands)}) "
        f"to ONNX opset "
        f"{options.opset}: input {'dynamic' if options.dynamic_size else f'{tile} x {tile}'}."
    )
    ctx.progress(10)
    difference = write_onnx(options, model, tile, overlap, 0.5 if threshold is None else threshold)
    ctx.log(f"ONNX Runtime matches PyTorch on a test tile (largest difference {difference:.1e}).")
    figures = {
        "tile_size": tile,
        "tiles_overlap_percent": round(100.0 * overlap / tile),
        "dynamic_size": options.dynamic_size,
        "opset": options.opset,
        "threshold": 0.5 if threshold is None else threshold,
        "max_abs_difference": difference,
        "bytes": Path(options.output).stat().st_size,
    }
    return JobResult(outputs={"OUTPUT": options.output}, figures=figures, inputs=[options.model])


def _aligned(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


def load_exportable(options: ExportParams) -> Exportable:
    """Load the mapping model (or one region of a multi-region model) on the CPU.

    Raises:
        InputError: a detection or susceptibility model, or a missing or unknown REGION.
        ModelFileError: the file is not a readable Slidewise model.
    """
    from slidewise.engine.imagery.tiling import default_tile_size, model_multiple

    task = read_metadata(options.model).task
    if task == "multiregion":
        return _load_region(options)
    if task != "mapping":
        raise InputError(
            f"'{Path(options.model).name}' is a {task} model: exportmodel exports mapping models "
            "(Train mapping model, Add region to mapping model). Deepness runs YOLO-style "
            "detectors only, which a Slidewise Faster R-CNN detector is not."
        )
    if options.region:
        raise InputError(
            f"REGION chooses a decoder of a multi-region model, but '{Path(options.model).name}' "
            "has a single decoder: leave REGION empty."
        )
    from slidewise.engine.imagery.segmodels import load_mapping_model

    net, meta = load_mapping_model(options.model, device="cpu")
    stored = (meta.extra or {}).get("threshold")
    threshold = float(stored) if isinstance(stored, int | float) else None
    return Exportable(net, meta, threshold, default_tile_size(meta), model_multiple(meta))


def _load_region(options: ExportParams) -> Exportable:
    from slidewise.engine.imagery.regions import load_multiregion
    from slidewise.engine.imagery.tiling import default_tile_size

    multi, meta = load_multiregion(options.model, device="cpu")
    if options.region:
        region = multi.require(options.region)
    elif len(multi.regions) == 1:
        region = multi.regions[0]
    else:
        raise InputError(
            f"The model has regions {', '.join(multi.regions)}: choose the REGION whose decoder "
            "is exported (a Deepness model has one decoder)."
        )
    record = multi.record(region)
    region_meta = dc_replace(
        meta,
        bands=list(record.get("bands") or meta.bands),
        normalisation=dict(record.get("normalisation") or {}),
        pixel_size=record.get("pixel_size") or meta.pixel_size,
        tile_size=record.get("tile_size") or meta.tile_size,
        extra={**(meta.extra or {}), "exported_region": region},
    )
    stored = record.get("threshold")
    threshold = float(stored) if isinstance(stored, int | float) else None
    tile = default_tile_size(region_meta)
    return Exportable(multi.view(region), region_meta, threshold, tile, int(multi.output_stride))


def write_onnx(
    options: ExportParams, model: Exportable, tile: int, overlap: int, threshold: float
) -> float:
    """Write the ONNX file atomically and check it against PyTorch; the largest difference.

    Raises:
        InputError: ONNX Runtime's probabilities differ from PyTorch's by more than
            :data:`CHECK_TOLERANCE` (the file is not kept).
    """
    from slidewise.engine.imagery.onnxexport import (
        add_metadata,
        compare_with_torch,
        deepness_metadata,
        export_onnx,
    )

    meta = model.meta
    bands = len(meta.bands) or int((meta.config or {}).get("in_channels", 0))
    norm = dict(meta.normalisation or {})
    props = deepness_metadata(
        meta,
        norm,
        tile=tile,
        overlap=overlap,
        threshold=threshold,
        small_segment=options.small_segment,
    )
    props["slidewise"] = meta.to_json()
    props["slidewise_bands"] = json.dumps(list(meta.bands))
    size = None if options.dynamic_size else tile
    with atomic_output(options.output) as tmp:
        export_onnx(model.net, tmp, bands, size=size, probability=True, opset=options.opset)
        add_metadata(tmp, props)
        sample = _test_tile(norm, bands, tile if size else min(tile, 256))
        difference = compare_with_torch(model.net, tmp, sample, norm)
        if not difference <= CHECK_TOLERANCE:
            raise InputError(
                f"The ONNX graph's probabilities differ from PyTorch's by {difference:.2g} on a "
                f"test tile (more than {CHECK_TOLERANCE:g}): this architecture does not export "
                "faithfully with this opset; try another OPSET, or use the model in Slidewise."
            )
    return difference


def _test_tile(norm: dict[str, Any], bands: int, side: int) -> np.ndarray:
    """One raw ``side`` x ``side`` tile drawn around the training band statistics (fixed seed)."""
    mean = np.asarray(norm.get("mean") or [0.0] * bands, np.float32)[:, None, None]
    std = np.asarray(norm.get("std") or [1.0] * bands, np.float32)[:, None, None]
    rng = np.random.default_rng(0)
    return (mean + std * rng.standard_normal((bands, side, side), np.float32))[None]
