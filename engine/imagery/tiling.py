"""Seam-free, memory-bounded tiled inference of segmentation models on rasters.

A raster of any size is cut into overlapping tiles; each tile is predicted by
the model and the tile probabilities are blended with a separable weight
window that tapers over the overlap. The blend is accumulated in a rolling
row band (one tile high, one raster wide) that is emitted strip by strip, so
memory is bounded by ``tile x raster width`` (plus one batch of tiles and a
GDAL block cache capped at :data:`GDAL_CACHE_MB`), never by the raster height.

How the result stays seam-free:

* Tile origins are aligned: tile sides and the stride (``side - overlap``) are
  multiples of ``multiple`` (32 = the output stride of a 5-level U-Net), so
  every tile sees the same pooling grid as a prediction of the whole image.
  Along each axis the fewest tiles of side at most ``tile`` are spread evenly
  (the side shrinks in steps of 32), so no tile is spent on a thin sliver.
* Tiles overlap by ``overlap`` pixels and are blended with a sine-squared
  (Hann) ramp over the overlap; ramps of neighbouring tiles sum to one, so the
  blend is a partition of unity, and the pixels a tile predicts with the least
  context (its edges) get the least weight. A small floor keeps every weight
  positive.
* Raster borders are predicted too: tiles start ``margin = ceil(overlap / 2)``
  pixels before the raster and reach as far past its end; the outside is
  filled by mirroring the raster (exactly ``numpy.pad(mode="reflect")`` of the
  whole raster, read window by window).

Nodata: pixels where any input band is nodata or not finite are fed to the
model as 0 after normalisation (the band mean) and come out as NaN. An
optional output mask (for example an area of interest) turns more pixels to
NaN, and tiles with no pixel to predict are skipped.

:func:`predict_whole_image` predicts a whole array at once with the same
border padding: the reference that measures the seam error.

Defaults (tile 576, overlap 64, batch 1 on CPU, channels-last on x86 CPUs and
CUDA, float16 autocast on CUDA) were chosen with
``python -m slidewise.bench.mapping_throughput`` on a shared 2-core x86 CPU:
3.2-4.2x (one thread, N = 1024-2048) and 3.3-4.5x (two threads) more raster
pixels per second than the 224/112 centre-crop loop of the seed study, with a
smaller seam error (random U-Net: 0.28 vs 0.34; a trained U-Net: 0.39 vs
0.71), and an 8,000 x 8,000 x 14 raster mapped in 944 MB. Those figures
assume the engine's worker process, which keeps freed memory for reuse
(:mod:`slidewise.engine.core.allocator`; without it large tiles pay page faults,
2.7-2.9x at N = 1024). Smaller tiles or larger overlaps than the defaults were
slower or no better. On a CPU, jobs map fully convolutional models with
1088-px tiles (:data:`CPU_TILE`, :func:`default_tile_size`): 1.13 instead of
1.27 computed pixels per raster pixel, for about 300 MB more memory (8,000-px
wide raster: 1.22 GB instead of 0.91 GB with PyTorch).
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rasterio.windows import Window
from torch import nn

from slidewise.engine.core.job import Progress
from slidewise.engine.imagery.segmodels import normalise

if TYPE_CHECKING:
    from slidewise.engine.imagery.tile_cache import TileCacheRequest

DEFAULT_TILE = 576
"""Default tile side in pixels (chosen by ``bench/mapping_throughput.py``)."""
DEFAULT_OVERLAP = 64
"""Default overlap between neighbouring tiles in pixels."""
CPU_TILE = 1088
"""Default tile side of fully convolutional models on a CPU: 1024 + :data:`DEFAULT_OVERLAP`,
so that tiles advance by 1024 px (:func:`default_tile_size`)."""
CPU_BATCH_SIZE = 1
"""Tiles per forward pass on a CPU (larger batches were slower per pixel: cache)."""
GPU_BATCH_SIZE = 8
"""Tiles per forward pass on a GPU."""
DEFAULT_MULTIPLE = 32
"""Tile sides, strides and shifts are multiples of this (the model's output stride)."""
GDAL_CACHE_MB = 128
"""GDAL block cache while predicting, in MB (GDAL's default is 5 % of the RAM,
which a large raster read tile by tile would fill)."""
WEIGHT_FLOOR = 1e-3
"""Smallest blending weight, so that every covered pixel has a positive weight."""

OutputMaskFn = Callable[[Window], np.ndarray]


def _round_up(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


@dataclass(frozen=True)
class AxisLayout:
    """Where the tiles lie along one axis.

    Attributes:
        length: Raster pixels along the axis.
        tile: Tile side along the axis (a multiple of the alignment multiple).
        overlap: Overlap of neighbouring tiles (blend ramp length).
        margin: Mirrored pixels predicted before the first raster pixel.
        starts: Tile origins, ``tile - overlap`` apart; the first is ``-margin``,
            the last tile ends at or past ``length + margin``.
    """

    length: int
    tile: int
    overlap: int
    margin: int
    starts: tuple[int, ...]

    @classmethod
    def plan(cls, length: int, tile: int, overlap: int, multiple: int) -> AxisLayout:
        """Lay tiles over ``length`` pixels (``tile`` and ``overlap`` already aligned).

        The fewest tiles of side at most ``tile`` cover the raster plus a
        ``margin`` on both ends; the side is then shrunk (in steps of
        ``multiple``) to spread them evenly, so that no tile is wasted on a
        sliver at the end.
        """
        margin = -(-overlap // 2)
        span = length + 2 * margin
        if span <= tile:
            return cls(length, _round_up(span, multiple), overlap, margin, (-margin,))
        count = -(-(span - overlap) // (tile - overlap))
        side = _round_up(-(-(span - overlap) // count) + overlap, multiple)
        stride = side - overlap
        starts = tuple(-margin + k * stride for k in range(count))
        return cls(length, side, overlap, margin, starts)

    def weights(self) -> np.ndarray:
        """1-D blending weights of one tile: sine-squared ramps over the overlap."""
        i = np.arange(self.tile, dtype=np.float64)
        w = np.ones(self.tile, dtype=np.float64)
        if self.overlap > 0:
            ramp_in = np.sin(0.5 * np.pi * np.minimum((i + 0.5) / self.overlap, 1.0)) ** 2
            w = np.minimum(ramp_in, ramp_in[::-1])
        return np.maximum(w, WEIGHT_FLOOR).astype(np.float32)


@dataclass(frozen=True)
class TileLayout:
    """The tiles covering a raster.

    Attributes:
        rows: Layout along the rows (y).
        cols: Layout along the columns (x).
        bands: Number of input bands.
        batch_size: Tiles per forward pass.
    """

    rows: AxisLayout
    cols: AxisLayout
    bands: int
    batch_size: int

    @classmethod
    def plan(
        cls,
        height: int,
        width: int,
        bands: int,
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        batch_size: int = CPU_BATCH_SIZE,
        multiple: int = DEFAULT_MULTIPLE,
    ) -> TileLayout:
        """Plan the tiles; ``tile`` and ``overlap`` are rounded up to ``multiple``.

        Raises:
            ValueError: non-positive tile or batch size, negative overlap, or an
                overlap that leaves no stride.
        """
        if tile <= 0 or batch_size <= 0 or multiple <= 0:
            raise ValueError("tile, batch_size and multiple must be positive")
        if overlap < 0:
            raise ValueError("overlap must not be negative")
        tile = _round_up(tile, multiple)
        overlap = _round_up(overlap, multiple)
        if overlap >= tile:
            raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
        return cls(
            rows=AxisLayout.plan(height, tile, overlap, multiple),
            cols=AxisLayout.plan(width, tile, overlap, multiple),
            bands=bands,
            batch_size=batch_size,
        )

    @property
    def n_tiles(self) -> int:
        """Number of tiles."""
        return len(self.rows.starts) * len(self.cols.starts)

    @property
    def redundancy(self) -> float:
        """Predicted pixels per raster pixel (1 = no pixel predicted twice)."""
        predicted = self.n_tiles * self.rows.tile * self.cols.tile
        return predicted / max(1, self.rows.length * self.cols.length)

    def buffer_bytes(self) -> int:
        """Bytes of the buffers held while predicting (independent of the raster height).

        The rolling band (sum of weighted probabilities, sum of weights, valid
        flags) plus one batch of input tiles and its probabilities.
        """
        band = self.rows.tile * self.cols.length * (4 + 4 + 1)
        batch = self.batch_size * self.rows.tile * self.cols.tile * (self.bands + 2) * 4
        return band + batch


@dataclass
class PredictionStats:
    """What a tiled prediction did (filled while it runs).

    Attributes:
        tiles_total: Tiles in the layout.
        tiles_run: Tiles predicted.
        tiles_skipped: Tiles without a pixel to predict.
        forward_passes: Model calls (batches x TTA transforms).
        buffer_bytes: Bytes of the rolling band and batch buffers.
        seconds: Wall time.
        tile: Tile side used.
        overlap: Overlap used.
        margin: Mirrored border predicted around the raster.
    """

    tiles_total: int = 0
    tiles_run: int = 0
    tiles_skipped: int = 0
    forward_passes: int = 0
    buffer_bytes: int = 0
    seconds: float = 0.0
    tile: int = 0
    overlap: int = 0
    margin: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TilingOptions:
    """How a raster is cut into tiles and the model run over them.

    Attributes:
        tile: Tile side in pixels (rounded up to ``multiple``).
        overlap: Overlap of neighbouring tiles in pixels (rounded up to ``multiple``).
        batch_size: Tiles per forward pass (``None``: 1 on CPU, 8 on CUDA).
        tta: Average the probabilities over the 8 dihedral transforms (8x slower).
        device: Torch device (the model's when ``None``).
        multiple: Alignment of tiles and strides (the model's output stride).
        amp: Mixed precision (``None``: on CUDA only).
        channels_last: Channels-last memory format (``None``: on CUDA and x86 CPUs).
        gdal_cache_mb: GDAL block cache while predicting (``None``: leave GDAL's).
        progress: Called with the fraction done in [0, 1].
        stats: Filled with what the prediction did.
        remote: Computes the tile rows elsewhere, e.g. on a Dask cluster
            (:mod:`slidewise.engine.imagery.tiling_cluster`); ``None``: in this process.
        cache: Keep the predicted tile rows on disk so that a killed run resumes
            (:mod:`slidewise.engine.imagery.tile_cache`); ``None``: not resumable.
        spread: Also the spread of the TTA members (needs ``tta``): each strip is
            then ``(rows, cols, 2)``, the probability and the standard deviation of
            the 8 members' probabilities (:func:`blend_tile_rows`).
    """

    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    batch_size: int | None = None
    tta: bool = False
    device: str | torch.device | None = None
    multiple: int = DEFAULT_MULTIPLE
    amp: bool | None = None
    channels_last: bool | None = None
    gdal_cache_mb: int | None = GDAL_CACHE_MB
    progress: Progress | None = None
    stats: PredictionStats | None = None
    remote: RemoteTileRows | None = None
    cache: TileCacheRequest | None = None
    spread: bool = False


# --------------------------------------------------------------------------- sources


class _Source:
    """A raster to read tiles from: bands (C, rows, cols) float32 with NaN where invalid."""

    width: int
    height: int
    count: int

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class _ReaderSource(_Source):
    def __init__(self, reader: Any, indexes: Sequence[int] | None) -> None:
        self.reader = reader
        self.indexes = list(indexes) if indexes is not None else list(range(1, reader.count + 1))
        bad = [i for i in self.indexes if not 1 <= int(i) <= reader.count]
        if bad:
            raise ValueError(f"band indexes {bad} are outside 1..{reader.count}")
        self.width, self.height, self.count = reader.width, reader.height, len(self.indexes)

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        from slidewise.engine.geo.raster import read_masked

        window = Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])
        return read_masked(self.reader, window=window, indexes=self.indexes)


class _ArraySource(_Source):
    def __init__(self, array: np.ndarray, indexes: Sequence[int] | None, nodata: float | None):
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3:
            raise ValueError("an array source must be (bands, rows, cols)")
        if indexes is not None:
            array = array[[int(i) - 1 for i in indexes]]
        self.array, self.nodata = array, nodata
        self.count, self.height, self.width = array.shape

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        data = np.array(self.array[:, rows[0] : rows[1], cols[0] : cols[1]], dtype=np.float32)
        bad = ~np.isfinite(data)
        if self.nodata is not None and np.isfinite(self.nodata):
            bad |= data == np.float32(self.nodata)
        valid = ~np.any(bad, axis=0)
        data[:, ~valid] = np.nan
        return data, valid


def reflect_indices(start: int, size: int, length: int) -> np.ndarray:
    """Source indices of ``size`` pixels from ``start`` with mirroring past the ends.

    The same as indexing ``numpy.pad(x, ..., mode="reflect")`` (the edge pixel
    is not repeated), for any distance from the raster.
    """
    idx = np.arange(start, start + size)
    if length == 1:
        return np.zeros(size, dtype=np.int64)
    period = 2 * (length - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= length, period - idx, idx).astype(np.int64)


def _read_tile(source: _Source, y: int, x: int, th: int, tw: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one tile (C, th, tw) with reflect padding outside the raster."""
    ri = reflect_indices(y, th, source.height)
    ci = reflect_indices(x, tw, source.width)
    r0, r1 = int(ri.min()), int(ri.max()) + 1
    c0, c1 = int(ci.min()), int(ci.max()) + 1
    data, valid = source.read((r0, r1), (c0, c1))
    if y >= 0 and x >= 0 and y + th <= source.height and x + tw <= source.width:
        return data, valid
    rr, cc = (ri - r0)[:, None], (ci - c0)[None, :]
    return data[:, rr, cc], valid[rr, cc]


# --------------------------------------------------------------------------- model calls


def _d4(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        x = torch.flip(x, dims=(3,))
    return torch.rot90(x, k, dims=(2, 3)) if k else x


def _d4_inverse(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if k:
        y = torch.rot90(y, -k, dims=(2, 3))
    return torch.flip(y, dims=(3,)) if flip else y


D4_TRANSFORMS: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))
"""The 8 transforms of the dihedral group D4 as (quarter turns, horizontal flip)."""


def member_moments(members: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance (population, ``ddof=0``) of ensemble members, one member at a time.

    Accumulated as sums of each member's difference to the first one, so that
    members that agree give a variance of exactly 0 and float32 loses nothing
    to the cancellation of ``E[p^2] - E[p]^2``; no member is kept.
    """
    first: torch.Tensor | None = None
    total: torch.Tensor | None = None
    squares: torch.Tensor | None = None
    n = 0
    for prob in members:
        n += 1
        if first is None:
            first = prob
            continue
        diff = prob - first
        total = diff if total is None else total + diff
        squares = diff * diff if squares is None else squares + diff * diff
    if first is None:
        raise ValueError("no ensemble member")
    if total is None or squares is None:
        return first, torch.zeros_like(first)
    shift = total / n
    return first + shift, (squares / n - shift * shift).clamp_min(0.0)


@dataclass
class _Runner:
    """Runs a model on a batch of tiles and returns probabilities."""

    model: nn.Module
    device: torch.device
    normalisation: dict[str, Any]
    tta: bool
    amp: bool
    channels_last: bool
    calls: int = 0
    spread: bool = False

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (B, rows, cols) of a batch (B, bands, rows, cols) of raw tiles.

        With :attr:`spread`: (B, 2, rows, cols), the mean of the TTA members'
        probabilities and their variance (:func:`member_moments`).
        """
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            x = normalise(x, self.normalisation)
            x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            transforms = D4_TRANSFORMS if self.tta else ((0, False),)
            members = (
                _d4_inverse(self._forward(_d4(x, k, flip)), k, flip) for k, flip in transforms
            )
            if self.spread:
                mean, var = member_moments(members)
                return torch.stack([mean[:, 0], var[:, 0]], dim=1).cpu().numpy()
            total: torch.Tensor | None = None
            for prob in members:
                total = prob if total is None else total + prob
            assert total is not None
            return (total[:, 0] / len(transforms)).cpu().numpy()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim == 3:
            out = out[:, None]
        if out.ndim != 4 or out.shape[1] != 1:
            raise ValueError(
                f"the model returns shape {tuple(out.shape)}; a mapping model returns one "
                "logit per pixel (batch, 1, rows, cols)"
            )
        return torch.sigmoid(out.float())


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _x86_onednn() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64") and bool(
        torch.backends.mkldnn.is_available()
    )


def default_batch_size(device: str | torch.device) -> int:
    """Tiles per forward pass: :data:`GPU_BATCH_SIZE` on CUDA, else :data:`CPU_BATCH_SIZE`."""
    return GPU_BATCH_SIZE if torch.device(device).type == "cuda" else CPU_BATCH_SIZE


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode ``model`` with batch norms folded into the convolutions before them.

    Inference only: each ``conv -> batch norm`` pair whose convolution feeds
    nothing else becomes one convolution (torch.fx), which saves a pass over
    every feature map. A model without batch norms, or one torch.fx cannot
    trace, is returned as it is. ``model`` itself is never changed.
    """
    from torch.fx.experimental.optimization import fuse

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    try:
        # ``inplace=True`` only skips fuse's deep copy of the whole model: it traces
        # into a new GraphModule (new containers) and each folded convolution is a
        # copy, so ``model`` keeps its modules and weights (tested).
        fused: nn.Module = fuse(model.eval(), inplace=True)
    except Exception:  # any tracing failure: run the model as it is
        return model
    return fused


def make_runner(
    model: nn.Module,
    normalisation: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
    tta: bool = False,
    amp: bool | None = None,
    channels_last: bool | None = None,
    fold_bn: bool | None = None,
    spread: bool = False,
) -> _Runner:
    """Prepare a model for inference: eval mode, device, AMP, memory format, folded batch norms.

    ``amp`` (float16 autocast) defaults to on for CUDA only. ``channels_last``
    defaults to on for CUDA and for x86 CPUs, where oneDNN's channels-last
    convolutions measured 1.3-1.9x faster than the default layout (see
    ``bench/mapping_throughput.py``). ``fold_bn`` (default: on for CPUs)
    runs a copy of the model with batch norms folded into the convolutions
    (:func:`fold_batch_norms`; 1.1-1.2x on the benchmark U-Net, outputs equal
    within 1e-4). ``spread``: the runner also returns the variance of the TTA
    members (:attr:`_Runner.spread`). The model is moved to ``device`` in place.
    """
    dev = torch.device(device) if device is not None else _model_device(model)
    is_cuda = dev.type == "cuda"
    amp = is_cuda if amp is None else bool(amp and is_cuda)
    if channels_last is None:
        channels_last = is_cuda or (dev.type == "cpu" and _x86_onednn())
    channels_last = bool(channels_last)
    model.eval().to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if fold_bn if fold_bn is not None else dev.type == "cpu":
        model = fold_batch_norms(model)  # a copy, in the memory format chosen above
        if channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return _Runner(model, dev, dict(normalisation or {}), tta, amp, channels_last, spread=spread)


# --------------------------------------------------------------------------- prediction


def open_source(
    src: Any, bands: Sequence[int] | None = None, nodata: float | None = None
) -> tuple[_Source, Any]:
    """Wrap ``src`` (path, open rasterio dataset or array); return the source and what to close."""
    if isinstance(src, np.ndarray):
        return _ArraySource(src, bands, nodata), None
    if isinstance(src, (str, os.PathLike)):
        import rasterio

        reader = rasterio.open(src)
        return _ReaderSource(reader, bands), reader
    return _ReaderSource(src, bands), None


def iter_predictions(
    model: nn.Module,
    src: Any,
    options: TilingOptions | None = None,
    *,
    bands: Sequence[int] | None = None,
    normalisation: dict[str, Any] | None = None,
    output_mask: OutputMaskFn | None = None,
    nodata: float | None = None,
) -> Iterator[tuple[Window, np.ndarray]]:
    """Predict landslide probabilities strip by strip (see :func:`predict_raster`).

    Yields:
        ``(window, probability)``: full-width row strips in order from the top,
        float32 in [0, 1] with NaN where the input is nodata or outside
        ``output_mask``. Together the strips cover the raster exactly once.
        With ``options.spread`` each strip is ``(rows, cols, 2)``: the
        probability and the standard deviation of the TTA members.
    """
    import rasterio

    opts = options or TilingOptions()
    started = time.perf_counter()
    stats = opts.stats if opts.stats is not None else PredictionStats()
    cache = opts.gdal_cache_mb
    env = rasterio.Env(GDAL_CACHEMAX=int(cache)) if cache else nullcontext()
    with env:
        source, to_close = open_source(src, bands, nodata)
        try:
            runner = make_runner(
                model,
                normalisation,
                opts.device,
                opts.tta,
                opts.amp,
                opts.channels_last,
                spread=opts.spread,
            )
            batch = opts.batch_size or default_batch_size(runner.device)
            layout = TileLayout.plan(
                source.height,
                source.width,
                source.count,
                opts.tile,
                opts.overlap,
                batch,
                opts.multiple,
            )
            _start_stats(stats, layout)
            yield from _predict_strips(source, layout, runner, output_mask, opts, stats)
            stats.seconds = time.perf_counter() - started
        finally:
            if to_close is not None:
                to_close.close()


def _start_stats(stats: PredictionStats, layout: TileLayout) -> None:
    """Record the layout in ``stats`` before the first tile runs."""
    stats.tiles_total = layout.n_tiles
    stats.buffer_bytes = layout.buffer_bytes()
    stats.tile, stats.overlap = layout.rows.tile, layout.rows.overlap
    stats.margin = layout.rows.margin
    stats.extra["tile_cols"] = layout.cols.tile


@dataclass
class TileRow:
    """The predicted tiles of one tile row, ready to be blended.

    What :func:`predict_tile_row` computes, in this process or on a Dask
    worker (:mod:`slidewise.engine.imagery.tiling_cluster`), and
    :func:`blend_tile_rows` accumulates.

    Attributes:
        index: Tile row number (0 = top).
        tiles: ``(x, probability)`` of each predicted tile, left to right;
            the probability is (tile rows, tile cols) float32.
        valid: Input validity of the tile row's raster rows (rows, width).
        aoi: The output mask on those rows (``None`` without one).
        skipped: Tiles without a pixel to predict.
        passes: Model calls made for the tile row.
    """

    index: int
    tiles: list[tuple[int, np.ndarray]]
    valid: np.ndarray
    aoi: np.ndarray | None
    skipped: int = 0
    passes: int = 0


#: Computes tile rows ``indices`` of a layout elsewhere (e.g. on a Dask cluster), in order.
RemoteTileRows = Callable[[TileLayout, range], Iterator[TileRow]]


def predict_tile_row(
    source: _Source,
    layout: TileLayout,
    runner: _Runner,
    output_mask: OutputMaskFn | None,
    index: int,
    on_batch: Callable[[int], None] | None = None,
) -> TileRow:
    """Read and predict the tiles of tile row ``index``, in batches of ``layout.batch_size``.

    Args:
        source: The raster (:func:`open_source`).
        layout: The tiles.
        runner: The model (:func:`make_runner`).
        output_mask: Pixels to predict (``None``: all).
        index: Tile row number.
        on_batch: Called with the tiles of the row done so far after each batch.
    """
    height, width = source.height, source.width
    th, tw = layout.rows.tile, layout.cols.tile
    y = layout.rows.starts[index]
    r0, r1 = max(0, -y), min(th, height - y)  # tile rows inside the raster
    aoi = None
    if output_mask is not None:
        aoi = np.asarray(output_mask(Window(0, y + r0, width, r1 - r0)), dtype=bool)
    row = TileRow(index, [], np.zeros((r1 - r0, width), dtype=bool), aoi)
    calls = runner.calls
    pending: list[tuple[int, np.ndarray]] = []
    for done, x in enumerate(layout.cols.starts, start=1):
        data, valid = _read_tile(source, y, x, th, tw)
        c0, c1 = max(0, -x), min(tw, width - x)
        inner = valid[r0:r1, c0:c1]
        row.valid[:, x + c0 : x + c1] = inner
        wanted = inner if aoi is None else inner & aoi[:, x + c0 : x + c1]
        if not wanted.any():
            row.skipped += 1
            continue
        pending.append((x, data))
        if len(pending) == layout.batch_size:
            row.tiles.extend(_run_batch(runner, pending))
            pending = []
            if on_batch is not None:
                on_batch(done)
    if pending:
        row.tiles.extend(_run_batch(runner, pending))
    row.passes = runner.calls - calls
    return row


def _run_batch(
    runner: _Runner, pending: list[tuple[int, np.ndarray]]
) -> list[tuple[int, np.ndarray]]:
    probs = runner(np.stack([d for _, d in pending]))
    return [(x, prob) for (x, _), prob in zip(pending, probs, strict=True)]


def _predict_strips(
    source: _Source,
    layout: TileLayout,
    runner: _Runner,
    output_mask: OutputMaskFn | None,
    opts: TilingOptions,
    stats: PredictionStats,
) -> Iterator[tuple[Window, np.ndarray]]:
    """Predict the tile rows (here, by ``opts.remote``, or from ``opts.cache``) and blend them."""
    n_rows, n_cols = len(layout.rows.starts), len(layout.cols.starts)
    progress = opts.progress

    def local_rows(first: int) -> Iterator[TileRow]:
        for k in range(first, n_rows):

            def on_batch(done: int, k: int = k) -> None:
                if progress is not None:
                    progress((k * n_cols + done) / layout.n_tiles)

            yield predict_tile_row(source, layout, runner, output_mask, k, on_batch)

    def compute(first: int) -> Iterable[TileRow]:
        if opts.remote is not None:
            return opts.remote(layout, range(first, n_rows))
        return local_rows(first)

    rows: Iterable[TileRow] = compute(0)
    if opts.cache is not None:
        from slidewise.engine.imagery.tile_cache import cached_rows

        rows = cached_rows(opts.cache, n_rows, compute)
    yield from blend_tile_rows(rows, layout, source.height, source.width, progress, stats)


class _BlendBand:
    """The rolling band of :func:`blend_tile_rows`: weighted sums over one tile row's height.

    Holds the sum of weighted probabilities and of weights, the valid pixels
    and, for tiles that carry the members' variance (``(2, rows, cols)``), the
    sum of weighted variances.
    """

    def __init__(self, layout: TileLayout, width: int) -> None:
        th = layout.rows.tile
        self.width = width
        self.w2d = layout.rows.weights()[:, None] * layout.cols.weights()[None, :]
        self.acc = np.zeros((th, width), dtype=np.float32)
        self.wsum = np.zeros((th, width), dtype=np.float32)
        self.valid = np.zeros((th, width), dtype=bool)
        self.var: np.ndarray | None = None

    def add(self, x: int, tile: np.ndarray) -> None:
        """Add one tile whose left column is raster column ``x``."""
        tw = tile.shape[-1]
        c0, c1 = max(0, -x), min(tw, self.width - x)
        w = self.w2d[:, c0:c1]
        prob = tile[0] if tile.ndim == 3 else tile
        self.acc[:, x + c0 : x + c1] += w * prob[:, c0:c1]
        self.wsum[:, x + c0 : x + c1] += w
        if tile.ndim == 3:
            if self.var is None:
                self.var = np.zeros_like(self.acc)
            self.var[:, x + c0 : x + c1] += w * tile[1][:, c0:c1]

    def emit(self, e0: int, e1: int, keep: np.ndarray) -> np.ndarray:
        """Band rows ``[e0, e1)``, final: the probability (and spread), NaN outside ``keep``.

        The spread is the square root of the blended variance: seam-free like
        the probability, and exactly the members' standard deviation where a
        single tile covers the pixel.
        """
        wsum = self.wsum[e0:e1]
        keep = keep & (wsum > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            prob = self.acc[e0:e1] / wsum
            prob[~keep] = np.nan
            np.clip(prob, 0.0, 1.0, out=prob)
            if self.var is None:
                return prob
            std = np.sqrt(np.maximum(self.var[e0:e1] / wsum, 0.0))
        std[~keep] = np.nan
        return np.stack([prob, np.clip(std, 0.0, 0.5, out=std)], axis=-1)

    def shift(self, rows: int) -> None:
        """Move the band down by ``rows`` raster rows (the rows above were emitted)."""
        th = self.acc.shape[0]
        for buf in (self.acc, self.wsum, self.valid, self.var):
            if buf is not None:
                buf[: th - rows] = buf[rows:]
                buf[th - rows :] = 0


def blend_tile_rows(
    rows: Iterable[TileRow],
    layout: TileLayout,
    height: int,
    width: int,
    progress: Progress | None,
    stats: PredictionStats,
) -> Iterator[tuple[Window, np.ndarray]]:
    """Blend tile rows (in order) in a rolling band; yield each strip once it is final.

    The arithmetic is the same wherever the tile rows were computed, so a
    Dask run blends the same numbers in the same order as a one-process run.
    Tiles that carry the TTA members' variance (``(2, rows, cols)``, see
    :attr:`TilingOptions.spread`) have it blended with the same weights.

    Yields:
        ``(window, probability)`` full-width strips from the top, NaN where the
        input is invalid or outside the output mask; with the variance,
        ``(rows, cols, 2)``: the probability and the members' standard deviation.
    """
    th = layout.rows.tile
    band = _BlendBand(layout, width)
    row_starts = layout.rows.starts
    for row in rows:
        # The band's row 0 is raster row y; the tile row covers band rows [0, th).
        k, y = row.index, row_starts[row.index]
        r0, r1 = max(0, -y), min(th, height - y)  # band rows inside the raster
        band.valid[r0:r1] = row.valid
        for x, tile in row.tiles:
            band.add(x, tile)
        stats.tiles_run += len(row.tiles)
        stats.tiles_skipped += row.skipped
        stats.forward_passes += row.passes
        if progress is not None:
            progress((k + 1) * len(layout.cols.starts) / layout.n_tiles)
        # Rows before the next tile row's start are final: emit them.
        last = k == len(row_starts) - 1
        shift = th if last else row_starts[k + 1] - y
        e0, e1 = max(0, -y), min(shift, height - y)
        if e1 > e0:
            keep = band.valid[e0:e1].copy()
            if row.aoi is not None:
                keep &= row.aoi[e0 - r0 : e1 - r0]
            yield Window(0, y + e0, width, e1 - e0), band.emit(e0, e1, keep)
        if not last:
            band.shift(shift)


def predict_raster(
    model: nn.Module,
    src: Any,
    options: TilingOptions | None = None,
    *,
    bands: Sequence[int] | None = None,
    normalisation: dict[str, Any] | None = None,
    output_mask: OutputMaskFn | None = None,
    sink: Callable[[Window, np.ndarray], None] | None = None,
    nodata: float | None = None,
) -> np.ndarray | None:
    """Predict landslide probabilities over a whole raster, tile by tile.

    Args:
        model: Segmentation model returning one logit per pixel (B, 1, H, W).
        src: Raster path, open rasterio dataset, or array (bands, rows, cols).
        options: Tiles, batches, device, progress and statistics
            (:class:`TilingOptions`; its defaults when ``None``).
        bands: 1-based band indexes feeding the model, in model order (all when ``None``).
        normalisation: Per-band ``mean`` / ``std`` (model metadata); none when empty.
        output_mask: ``f(window) -> bool array``: pixels to predict (e.g. an AOI);
            others come out NaN and tiles without such pixels are skipped.
        sink: Called with each strip ``(window, probability)``; when ``None`` the
            whole probability array is returned (small rasters only).
        nodata: Nodata value of an array ``src`` (rasters use their own).

    Returns:
        The (rows, cols) float32 probabilities with NaN where invalid, or ``None``
        when a ``sink`` took the strips.
    """
    strips: list[np.ndarray] = []
    for window, prob in iter_predictions(
        model,
        src,
        options,
        bands=bands,
        normalisation=normalisation,
        output_mask=output_mask,
        nodata=nodata,
    ):
        if sink is not None:
            sink(window, prob)
        else:
            strips.append(prob)
    return None if sink is not None else np.concatenate(strips, axis=0)


def predict_whole_image(
    model: nn.Module,
    image: np.ndarray,
    *,
    normalisation: dict[str, Any] | None = None,
    pad: int = DEFAULT_OVERLAP // 2,
    multiple: int = DEFAULT_MULTIPLE,
    device: str | torch.device | None = None,
    nodata: float | None = None,
) -> np.ndarray:
    """Predict a whole (bands, rows, cols) array in one forward pass.

    The image is mirrored by ``pad`` pixels on every side (and further on the
    bottom and right up to a multiple of ``multiple``), like the borders of
    :func:`predict_raster` with ``overlap = 2 * pad``: the reference that
    tiled predictions are compared with.
    """
    source = _ArraySource(np.asarray(image), None, nodata)
    height, width = source.height, source.width
    th = _round_up(height + 2 * pad, multiple)
    tw = _round_up(width + 2 * pad, multiple)
    data, valid = _read_tile(source, -pad, -pad, th, tw)
    runner = make_runner(model, normalisation, device)
    prob = np.array(runner(data[None])[0, pad : pad + height, pad : pad + width], np.float32)
    prob[~valid[pad : pad + height, pad : pad + width]] = np.nan
    return prob


def seam_error(tiled: np.ndarray, whole: np.ndarray) -> float:
    """Largest absolute difference where both predictions are defined."""
    both = np.isfinite(tiled) & np.isfinite(whole)
    if not both.any():
        return math.nan
    return float(np.max(np.abs(tiled[both] - whole[both])))


FULLY_CONVOLUTIONAL = ("unet", "unetplusplus", "fpn", "linknet", "resunet")
"""Architectures whose prediction does not depend on the tile size (no global pooling
or attention), so that tiles larger than the training chips are safe."""


STANDARDISED_TILE = CPU_TILE
"""Tile side of a model that standardises every input tile by its own statistics
(``resunet`` ``input_norm: "tile"``), on every device. Such a model's output depends on
the tile, so its validation (epoch, calibration and threshold choice), *Map landslides*
and ``bench/mapping_accuracy.py`` all predict with this one tile layout
(:func:`prediction_tile`); it is the CPU tile, so CPU throughput is unchanged."""


def is_tile_standardised(config: dict[str, Any] | None) -> bool:
    """Whether a model config (``SegModelConfig`` as a dict) standardises each input tile."""
    extra = (config or {}).get("extra") or {}
    return str(extra.get("input_norm", "none")).strip().lower() == "tile"


def prediction_tile(meta: Any) -> int | None:
    """The tile a model must be mapped with, whatever the device; ``None``: free to choose.

    A model that standardises each tile (:func:`is_tile_standardised`) stores the
    tile its validation predicted with as ``predict_window`` (model metadata
    ``extra``); older files of such models get :data:`STANDARDISED_TILE`.
    """
    stored = (getattr(meta, "extra", None) or {}).get("predict_window")
    if isinstance(stored, int) and not isinstance(stored, bool) and stored > 0:
        return stored
    return STANDARDISED_TILE if is_tile_standardised(getattr(meta, "config", None)) else None


def config_multiple(config: dict[str, Any] | None) -> int:
    """Tile alignment of a model config: its output stride ``2 ** encoder_depth``, at least 32."""
    depth = int((config or {}).get("encoder_depth", 5) or 5)
    return max(DEFAULT_MULTIPLE, 2**depth)


def default_tile_size(meta: Any, device: str | torch.device | None = None) -> int:
    """Largest tile side for a model when TILE_SIZE is empty (see :meth:`TileLayout.plan`).

    The rule:

    * architectures with global pooling or attention run on the tile size
      they were trained on (their prediction depends on the tile);
    * fully convolutional nets predict the same pixels whatever the tile, and
      a larger tile repeats less of the overlap: they get at least
      :data:`CPU_TILE` (1088 px) on a CPU, where one tile is computed per
      forward pass, and at least :data:`DEFAULT_TILE` (576 px) elsewhere (a
      GPU computes :data:`GPU_BATCH_SIZE` tiles per pass, already more pixels
      per pass than one CPU tile) and when ``device`` is not given (model
      metadata, exports).

    On a CPU a 1088-px tile computes 1.13 pixels per raster pixel instead of
    576's 1.27 (tiles advance by 1024 px instead of 512), and its forward pass
    is no slower per computed pixel. The price is memory: one forward pass of
    a 14-band ResNet-18 U-Net peaks about 350 MB higher with PyTorch (994 vs
    641 MB of process RSS) and 630 MB higher with OpenVINO (1.49 vs 0.87 GB),
    ResNet-50 alike (docs/benchmarks.md "Tile size and the per-layer floor");
    TILE_SIZE 576 gives the old layout back. A raster smaller than the tile
    gets one tile of its own size (the layout spreads the tiles evenly).

    A model that standardises each tile gets its :func:`prediction_tile` on
    every device: the tile its threshold and calibration were chosen with.
    """
    fixed = prediction_tile(meta)
    if fixed is not None:
        return fixed
    trained = int(meta.tile_size or 0)
    config = meta.config or {}
    arch = str(config.get("architecture", meta.architecture)).lower()
    encoder = str(config.get("encoder", "")).lower()
    convolutional = arch in FULLY_CONVOLUTIONAL and not encoder.startswith(("mit_", "tu-vit"))
    on_cpu = device is not None and torch.device(device).type == "cpu"
    floor = CPU_TILE if on_cpu else DEFAULT_TILE
    if trained <= 0:
        return floor if convolutional else DEFAULT_TILE
    return max(trained, floor) if convolutional else trained


def model_multiple(meta: Any) -> int:
    """Tile alignment of a mapping model: its output stride ``2 ** encoder_depth``, at least 32."""
    return config_multiple(meta.config)
