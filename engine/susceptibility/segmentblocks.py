"""Terrain blocks of a factor stack: the ``segmentblocks`` engine job.

SLIC superpixels on standardised, weighted terrain bands
(:func:`slidewise.engine.susceptibility.blocks.segment_stack`) give a block-ID
raster (int32, 0 = nodata) and, optionally, block polygons with statistics:
block, pixels, area, landslides, samples and ``mean_<band>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from slidewise.contract.specs.segmentblocks import DEFAULT_BLOCKS
from slidewise.contract.specs.segmentblocks import SPEC as SEGMENT_SPEC
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.geo.align import AlignedStack
from slidewise.engine.geo.samples import SampleSet, collect_samples
from slidewise.engine.susceptibility.blocks import (
    BlockJobParams,
    block_statistics,
    polygonise,
    sample_blocks,
    segment_stack,
    write_block_raster,
)


@dataclass(frozen=True)
class SegmentBlocksParams(BlockJobParams):
    """Parameters of the ``segmentblocks`` job (``contract/specs/segmentblocks.py``).

    The stack, sampling and block fields are those of :class:`BlockJobParams`;
    sampling happens only when INVENTORY is given (to count samples per block).

    Attributes:
        output: Block-ID raster (GeoTIFF).
        output_polygons: Block polygons with statistics (GeoPackage), optional.
    """

    SPEC = SEGMENT_SPEC

    n_blocks: int = DEFAULT_BLOCKS
    output: str = ""
    output_polygons: str | None = None


def run_segment_blocks(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Segment the factor stack into blocks (SLIC superpixels on terrain bands).

    Parameters: the factor stack, the block group (N_BLOCKS, 0 = 256, at most one block
    per 16 pixels of the segmentation grid; COMPACTNESS,
    BANDS, WEIGHTS, ITERATIONS), optionally the inventory group to count
    landslides and samples per block, OUTPUT and OUTPUT_POLYGONS (see
    ``contract/specs/segmentblocks.py``).
    """
    options = SegmentBlocksParams.from_params(params)
    output, polygons_out = options.output, options.output_polygons or ""
    check_writable(output)
    if polygons_out:
        check_writable(polygons_out)
    block_params = options.block_params(DEFAULT_BLOCKS)
    with options.open_stack() as stack:
        check_block_count(block_params.n_blocks, stack.width, stack.height, block_params.max_pixels)
        ctx.log(block_count_line(options.n_blocks, block_params.n_blocks))
        samples = None
        if options.inventory:
            sampling = options.sampling_options(ctx.options.seed)
            samples = collect_samples(stack, sampling, warn=ctx.warn)
        labels, factor, bands, weights = segment_stack(stack, block_params, ctx.stage(5, 70))
        write_block_raster(output, labels, factor, stack)
        figures: dict[str, Any] = {
            "n_blocks": int(labels.max()),
            "bands": bands,
            "weights": weights,
            "decimation": factor,
        }
        if polygons_out:
            write_block_polygons(polygons_out, labels, factor, stack, samples)
    ctx.log(f"{figures['n_blocks']} blocks from bands {', '.join(bands)} (weights {weights}).")
    outputs = {"OUTPUT": output}
    if polygons_out:
        outputs["OUTPUT_POLYGONS"] = polygons_out
    return JobResult(outputs=outputs, figures=figures, inputs=options.sample_inputs())


#: The fewest pixels of the segmentation grid a block may have on average.
MIN_BLOCK_PIXELS = 16


def check_block_count(n_blocks: int, width: int, height: int, max_pixels: int) -> None:
    """Refuse, before reading anything, more blocks than the stack's pixels can hold.

    Rasters larger than ``max_pixels`` are segmented on a decimated grid (as
    :func:`~slidewise.engine.susceptibility.blocks.segment_stack` does); each block needs
    :data:`MIN_BLOCK_PIXELS` pixels of that grid on average.

    Raises:
        InputError: naming the limit for this stack and the fix.
    """
    factor = 1
    while (width // factor) * (height // factor) > max_pixels:
        factor += 1
    pixels = (width // factor) * (height // factor)
    limit = max(1, pixels // MIN_BLOCK_PIXELS)
    if n_blocks > limit:
        grid = f"{width // factor} x {height // factor}"
        raise InputError(
            f"N_BLOCKS {n_blocks} is more than this factor stack can hold: its segmentation "
            f"grid of {grid} pixels allows at most {limit} blocks of {MIN_BLOCK_PIXELS} "
            f"pixels or more. Set N_BLOCKS to {limit} or fewer (0: {DEFAULT_BLOCKS})."
        )


def block_count_line(asked: int, used: int) -> str:
    """The log line that says how many blocks are asked of SLIC, and why."""
    if asked == 0:
        return f"N_BLOCKS is 0: {used} blocks asked of SLIC (the default)."
    return f"{used} blocks asked of SLIC (N_BLOCKS)."


def write_block_polygons(
    path: str, labels: np.ndarray, factor: int, stack: AlignedStack, samples: SampleSet | None
) -> None:
    """Write the blocks as polygons with their statistics (on the segmentation grid)."""
    from affine import Affine

    from slidewise.engine.geo.vectors import write_vector

    transform = stack.transform * Affine.scale(factor) if factor > 1 else stack.transform
    if factor == 1:
        from rasterio.windows import Window

        data, _ = stack.read(Window(0, 0, stack.width, stack.height))
    else:  # statistics on the decimated grid the blocks were segmented on
        from slidewise.engine.susceptibility.blocks import decimated_read

        data, _ = decimated_read(stack, list(range(stack.count)), factor)
    pixel_area = abs(transform.a * transform.e)
    sb = sample_blocks(labels, samples.rows, samples.cols, factor) if samples is not None else None
    stats = block_statistics(
        labels, data, stack.names, pixel_area, sb, samples.labels if samples is not None else None
    )
    ids, geoms = polygonise(labels, transform)
    fields = {k: v[ids - 1] for k, v in stats.items()}
    write_vector(path, geoms, fields, stack.crs, geometry_type="MultiPolygon")
