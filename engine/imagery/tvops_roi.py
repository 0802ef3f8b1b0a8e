"""Pure-PyTorch ``torchvision::roi_align`` and ``torchvision::roi_pool`` with their backwards.

The kernels follow torchvision's CPU kernels exactly (sampling points,
boundary rules, rounding, argmax), vectorised over rois and bins and chunked
to bound memory. ``roi_align_backward`` and ``roi_pool_backward`` are the
operator kernels (their flat argument lists are the operators' schemas); they
call :func:`roi_align_input_grad` and :func:`roi_pool_input_grad`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from slidewise.engine.imagery.tvops_nms import require

# Elements gathered at once by roi_align / roi_pool (64 MiB of float32).
_GATHER_BUDGET = 1 << 24
# Index/weight entries built at once by roi_align (before the gather).
_TAP_BUDGET = 1 << 22

_FLT_MAX = float(torch.finfo(torch.float32).max)


@dataclass(frozen=True)
class RoiSampling:
    """How rois are pooled: scale to the feature map, output bins, sampling points.

    Attributes:
        spatial_scale: Factor from roi coordinates to feature-map pixels.
        pooled_height: Output height.
        pooled_width: Output width.
        sampling_ratio: roi_align: sampling points per bin and axis; <= 0 for adaptive.
        aligned: roi_align: shift the roi by -0.5 pixel (Detectron2 convention).
    """

    spatial_scale: float
    pooled_height: int
    pooled_width: int
    sampling_ratio: int = -1
    aligned: bool = False


@dataclass(frozen=True)
class FeatureShape:
    """Shape ``(N, C, H, W)`` of the feature map a gradient is for."""

    batch_size: int
    channels: int
    height: int
    width: int


def _check_roi_input(input: torch.Tensor, rois: torch.Tensor, op: str) -> None:
    require(input.dim() == 4, f"{op}: input should be a Tensor[N, C, H, W]")
    require(
        rois.dim() == 2 and rois.shape[1] == 5,
        f"{op}: rois must have shape as Tensor[K, 5], got {tuple(rois.shape)}",
    )
    require(
        input.dtype == rois.dtype,
        f"{op}: expected tensor for input to have the same type as tensor for rois; "
        f"but type {input.dtype} does not equal {rois.dtype}",
    )
    require(
        input.device == rois.device,
        f"{op}: input and rois should be on the same device, got {input.device} and {rois.device}",
    )


def _axis_taps(
    start: torch.Tensor, bin_size: torch.Tensor, pooled: int, grid: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear taps along one axis for torchvision's roi_align sampling points.

    Sample ``i`` of bin ``p`` sits at ``start + p * bin + (i + 0.5) * bin / grid``.
    Points outside ``[-1, size]`` contribute nothing; others are clamped to
    ``[0, size - 1]`` (torchvision's boundary rule).

    Args:
        start: ``[K]`` roi start along the axis (in feature-map pixels).
        bin_size: ``[K]`` bin size along the axis.
        pooled: Number of output bins along the axis.
        grid: Sampling points per bin along the axis.
        size: Feature-map size along the axis.

    Returns:
        ``(index, weight)``, both ``[K, pooled, grid, 2]``: the low/high pixel
        indices and their weights (zero for points outside the map).
    """
    dtype, device = start.dtype, start.device
    p = torch.arange(pooled, dtype=dtype, device=device)
    i = torch.arange(grid, dtype=dtype, device=device) + 0.5
    coord = (start[:, None, None] + p[None, :, None] * bin_size[:, None, None]) + (
        i[None, None, :] * bin_size[:, None, None]
    ) / grid
    valid = (coord >= -1.0) & (coord <= size)  # NaN coordinates are invalid
    coord = coord.clamp(min=0)
    low = coord.to(torch.int64)
    at_edge = low >= size - 1
    low = torch.where(at_edge, size - 1, low)
    high = torch.where(at_edge, size - 1, low + 1)
    coord = torch.where(at_edge, low.to(dtype), coord)
    frac = coord - low.to(dtype)
    index = torch.stack([low, high], dim=-1).clamp(0, size - 1)
    weight = torch.where(valid[..., None], torch.stack([1.0 - frac, frac], dim=-1), 0.0)
    return index, weight


def _roi_align_taps(
    rois: torch.Tensor, sampling: RoiSampling, height: int, width: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]:
    """Indices and weights of every sampling point, by chunks of rois.

    Yields:
        ``(roi_ids, index, weight, count)``: ``index`` and ``weight`` are
        ``[len(roi_ids) * pooled_height * pooled_width, S]`` (flat positions in a
        ``[N * H * W]`` feature map and bilinear weights, ``S`` taps per bin) and
        ``count`` is the number of sampling points per bin to average over.
    """
    spatial_scale, aligned = sampling.spatial_scale, sampling.aligned
    pooled_height, pooled_width = sampling.pooled_height, sampling.pooled_width
    sampling_ratio = sampling.sampling_ratio
    num_rois = rois.shape[0]
    offset = 0.5 if aligned else 0.0
    batch_index = rois[:, 0].to(torch.int64)
    start_w = rois[:, 1] * spatial_scale - offset
    start_h = rois[:, 2] * spatial_scale - offset
    roi_width = (rois[:, 3] * spatial_scale - offset) - start_w
    roi_height = (rois[:, 4] * spatial_scale - offset) - start_h
    if not aligned:
        roi_width = roi_width.clamp(min=1.0)
        roi_height = roi_height.clamp(min=1.0)
    bin_h = roi_height / pooled_height
    bin_w = roi_width / pooled_width

    groups: list[tuple[torch.Tensor, int, int]] = []
    if sampling_ratio > 0:
        all_rois = torch.arange(num_rois, device=rois.device)
        groups.append((all_rois, sampling_ratio, sampling_ratio))
    else:
        # Adaptive sampling: ceil(roi_size / pooled_size) points per bin and axis.
        grid_h = torch.ceil(bin_h).clamp(min=0).to(torch.int64)
        grid_w = torch.ceil(bin_w).clamp(min=0).to(torch.int64)
        pairs = torch.unique(torch.stack([grid_h, grid_w], dim=1), dim=0)
        for gh, gw in pairs.tolist():
            if gh <= 0 or gw <= 0:
                continue  # no sampling point: the output stays zero
            members = torch.nonzero((grid_h == gh) & (grid_w == gw)).squeeze(1)
            groups.append((members, gh, gw))

    bins = pooled_height * pooled_width
    for members, gh, gw in groups:
        taps = gh * gw * 4
        per_chunk = max(1, _TAP_BUDGET // (bins * taps))
        for first in range(0, members.numel(), per_chunk):
            ids = members[first : first + per_chunk]
            k = ids.numel()
            ys, wy = _axis_taps(start_h[ids], bin_h[ids], pooled_height, gh, height)
            xs, wx = _axis_taps(start_w[ids], bin_w[ids], pooled_width, gw, width)
            base = batch_index[ids] * (height * width)
            # [k, PH, PW, gh, 2, gw, 2]; the corner order (y, x) matches
            # torchvision's w1..w4 = (hy*hx, hy*lx, ly*hx, ly*lx).
            index = (
                base[:, None, None, None, None, None, None]
                + ys[:, :, None, :, :, None, None] * width
                + xs[:, None, :, None, None, :, :]
            )
            weight = wy[:, :, None, :, :, None, None] * wx[:, None, :, None, None, :, :]
            yield ids, index.reshape(k * bins, taps), weight.reshape(k * bins, taps), gh * gw


def _weighted_gather(
    source: torch.Tensor, index: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """``out[r] = sum_s weight[r, s] * source[index[r, s]]``.

    ``embedding_bag`` does the weighted gather-sum in one fused kernel, without
    materialising the ``[rows, taps, channels]`` gathered values.

    Args:
        source: ``[P, C]`` rows to gather (channels-last feature map).
        index: ``[R, S]`` row indices into ``source``.
        weight: ``[R, S]`` weights, same dtype as ``source``.

    Returns:
        ``[R, C]`` weighted sums.
    """
    return torch.nn.functional.embedding_bag(index, source, per_sample_weights=weight, mode="sum")


def _weighted_scatter(
    target: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, values: torch.Tensor
) -> None:
    """``target[index[r, s]] += weight[r, s] * values[r]`` (the adjoint of the gather).

    On CPU a sparse ``[P, R]`` matrix product does it without materialising the
    ``[R * S, C]`` contributions; elsewhere ``index_add_`` runs over
    memory-bounded chunks (deterministic on CUDA under
    ``torch.use_deterministic_algorithms``).

    Args:
        target: ``[P, C]`` accumulator (channels-last input gradient).
        index: ``[R, S]`` row indices into ``target``.
        weight: ``[R, S]`` weights.
        values: ``[R, C]`` values to spread.
    """
    rows, taps = index.shape
    channels = target.shape[1]
    if target.device.type == "cpu":
        row_ids = torch.arange(rows, device=index.device).repeat_interleave(taps)
        spread = torch.sparse_coo_tensor(
            torch.stack([index.reshape(-1), row_ids]),
            weight.reshape(-1),
            (target.shape[0], rows),
            check_invariants=False,
        )
        target.add_(torch.sparse.mm(spread, values))
        return
    step = max(1, _GATHER_BUDGET // max(1, taps * channels))
    for first in range(0, rows, step):
        idx = index[first : first + step]
        n = idx.shape[0]
        contrib = weight[first : first + n, :, None] * values[first : first + n, None, :]
        target.index_add_(0, idx.reshape(-1), contrib.reshape(n * taps, channels))


def roi_align(
    input: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """RoI Align with the semantics of ``torch.ops.torchvision.roi_align``.

    Each output bin averages bilinear samples on a ``grid_h x grid_w`` grid
    (``sampling_ratio`` points per axis when > 0, else
    ``ceil(roi_size / pooled_size)``). With ``aligned`` the roi is shifted by
    -0.5 pixel; without it, rois smaller than 1 pixel are enlarged to 1.
    Samples with ``y < -1``, ``y > H``, ``x < -1`` or ``x > W`` count as 0,
    others are clamped into the map. Vectorised over rois and bins (chunked to
    bound memory).

    Args:
        input: ``Tensor[N, C, H, W]`` feature map.
        rois: ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in input
            image coordinates, same dtype as ``input``.
        spatial_scale: Factor from roi coordinates to feature-map pixels.
        pooled_height: Output height.
        pooled_width: Output width.
        sampling_ratio: Sampling points per bin and axis; <= 0 for adaptive.
        aligned: Shift the roi by -0.5 pixel (Detectron2 convention).

    Returns:
        ``Tensor[K, C, pooled_height, pooled_width]``.

    Raises:
        ValueError: Shapes, dtypes or devices do not fit.
    """
    _check_roi_input(input, rois, "roi_align")
    batch, channels, height, width = input.shape
    output = input.new_zeros((rois.shape[0], channels, pooled_height, pooled_width))
    if output.numel() == 0 or height == 0 or width == 0:
        return output
    source = input.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    sampling = RoiSampling(spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
    taps = _roi_align_taps(rois, sampling, height, width)
    for ids, index, weight, count in taps:
        pooled = _weighted_gather(source, index, weight) / count
        pooled = pooled.view(ids.numel(), pooled_height, pooled_width, channels)
        output[ids] = pooled.permute(0, 3, 1, 2)
    return output


def roi_align_backward(
    grad: torch.Tensor, rois: torch.Tensor, *schema_args: float | int | bool
) -> torch.Tensor:
    """The kernel of ``torchvision::_roi_align_backward`` (see :func:`roi_align_input_grad`).

    Args:
        grad: ``Tensor[K, C, pooled_height, pooled_width]`` output gradient.
        rois: ``Tensor[K, 5]`` as given to :func:`roi_align`.
        *schema_args: The operator's other arguments, in its order:
            ``spatial_scale, pooled_height, pooled_width, batch_size, channels,
            height, width, sampling_ratio, aligned``.

    Returns:
        ``Tensor[N, C, H, W]`` input gradient.
    """
    scale, pooled_h, pooled_w, batch, channels, height, width, ratio, aligned = schema_args
    sampling = RoiSampling(scale, pooled_h, pooled_w, ratio, aligned)  # type: ignore[arg-type]
    shape = FeatureShape(batch, channels, height, width)  # type: ignore[arg-type]
    return roi_align_input_grad(grad, rois, sampling, shape)


def roi_align_input_grad(
    grad: torch.Tensor, rois: torch.Tensor, sampling: RoiSampling, shape: FeatureShape
) -> torch.Tensor:
    """Gradient of :func:`roi_align` with respect to its input.

    Every sampling point sends ``grad * weight / count`` to its four
    neighbouring pixels.

    Args:
        grad: ``Tensor[K, C, pooled_height, pooled_width]`` output gradient.
        rois: ``Tensor[K, 5]`` as given to :func:`roi_align`.
        sampling: The pooling :func:`roi_align` ran with.
        shape: Shape of the input.

    Returns:
        ``Tensor[N, C, H, W]`` input gradient.

    Raises:
        ValueError: ``grad`` and ``rois`` differ in dtype.
    """
    require(
        grad.dtype == rois.dtype,
        "roi_align backward: expected tensor for grad to have the same type as tensor for "
        f"rois; but type {grad.dtype} does not equal {rois.dtype}",
    )
    batch_size, channels, height, width = (
        shape.batch_size,
        shape.channels,
        shape.height,
        shape.width,
    )
    grad_source = grad.new_zeros((batch_size * height * width, channels))
    if grad.numel() > 0 and height > 0 and width > 0:
        grad_rows = grad.permute(0, 2, 3, 1)
        for ids, index, weight, count in _roi_align_taps(rois, sampling, height, width):
            values = grad_rows[ids].reshape(-1, channels) / count
            _weighted_scatter(grad_source, index, weight, values)
    return grad_source.view(batch_size, height, width, channels).permute(0, 3, 1, 2).contiguous()


def _round_half_away(values: torch.Tensor) -> torch.Tensor:
    """``std::round``: nearest integer, halves away from zero (torch.round: to even)."""
    floor = torch.floor(values)
    frac = values - floor
    up = (frac > 0.5) | ((frac == 0.5) & (values >= 0))
    return torch.where(up, floor + 1, floor)


@dataclass(frozen=True)
class _PoolBins:
    """Rows and columns of every roi_pool bin, clipped to the map.

    Attributes:
        batch_index: ``[K]`` image of each roi.
        h_lo: ``[K, PH]`` first row of each bin.
        h_len: ``[K, PH]`` rows of each bin (0: empty).
        w_lo: ``[K, PW]`` first column of each bin.
        w_len: ``[K, PW]`` columns of each bin (0: empty).
    """

    batch_index: torch.Tensor
    h_lo: torch.Tensor
    h_len: torch.Tensor
    w_lo: torch.Tensor
    w_len: torch.Tensor


def roi_pool(
    input: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoI max pooling with the semantics of ``torch.ops.torchvision.roi_pool``.

    Roi corners are rounded (halves away from zero) to feature-map pixels, the
    ``(end - start + 1)`` extent (at least 1) is split in ``floor``/``ceil`` bins
    clipped to the map; empty bins give 0 and argmax -1.

    Args:
        input: ``Tensor[N, C, H, W]`` feature map.
        rois: ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)``.
        spatial_scale: Factor from roi coordinates to feature-map pixels.
        pooled_height: Output height.
        pooled_width: Output width.

    Returns:
        ``(output, argmax)``: ``Tensor[K, C, PH, PW]`` maxima and ``int32``
        positions ``h * W + w`` of the maxima in their channel plane.

    Raises:
        ValueError: Shapes, dtypes or devices do not fit.
    """
    _check_roi_input(input, rois, "roi_pool")
    batch, channels, height, width = input.shape
    shape = (rois.shape[0], channels, pooled_height, pooled_width)
    output = input.new_zeros(shape)
    argmax = torch.full(shape, -1, dtype=torch.int32, device=input.device)
    if output.numel() == 0:
        return output, argmax.zero_()
    sampling = RoiSampling(spatial_scale, pooled_height, pooled_width)
    bins = _roi_pool_bins(rois, sampling, input)
    # Channels-last rows plus one row of -inf that padded window cells point at.
    source = torch.cat(
        [
            input.permute(0, 2, 3, 1).reshape(batch * height * width, channels),
            input.new_full((1, channels), float("-inf")),
        ]
    )
    for ids in _roi_pool_chunks(bins.h_len, bins.w_len, channels):
        pooled = _pool_chunk(source, bins, ids, input.shape, sampling)
        if pooled is not None:
            output[ids], argmax[ids] = pooled
    return output, argmax


def _roi_pool_bins(rois: torch.Tensor, sampling: RoiSampling, input: torch.Tensor) -> _PoolBins:
    """Bin bounds of every roi: rounded corners, ``floor``/``ceil`` bins clipped to the map."""
    dtype, device = input.dtype, input.device
    height, width = input.shape[2], input.shape[3]
    batch_index = rois[:, 0].to(torch.int64)
    corners = _round_half_away(rois[:, 1:] * sampling.spatial_scale).to(torch.int64)
    start_w, start_h, end_w, end_h = corners.unbind(1)
    bin_h = (end_h - start_h + 1).clamp(min=1).to(dtype) / sampling.pooled_height
    bin_w = (end_w - start_w + 1).clamp(min=1).to(dtype) / sampling.pooled_width

    def bounds(
        bin_size: torch.Tensor, start: torch.Tensor, pooled: int, size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        p = torch.arange(pooled, dtype=dtype, device=device)
        lo = torch.floor(p[None, :] * bin_size[:, None]).to(torch.int64) + start[:, None]
        hi = torch.ceil((p[None, :] + 1) * bin_size[:, None]).to(torch.int64) + start[:, None]
        return lo.clamp(0, size), hi.clamp(0, size)

    h_lo, h_hi = bounds(bin_h, start_h, sampling.pooled_height, height)  # [K, PH]
    w_lo, w_hi = bounds(bin_w, start_w, sampling.pooled_width, width)  # [K, PW]
    h_len = (h_hi - h_lo).clamp(min=0)
    w_len = (w_hi - w_lo).clamp(min=0)
    return _PoolBins(batch_index, h_lo, h_len, w_lo, w_len)


def _pool_chunk(
    source: torch.Tensor,
    bins: _PoolBins,
    ids: torch.Tensor,
    shape: torch.Size,
    sampling: RoiSampling,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Maxima and argmax of the rois ``ids`` (``None`` when all their bins are empty).

    Args:
        source: Channels-last feature rows plus a final row of -inf (padding).
        bins: Bin bounds of every roi.
        ids: Rois of the chunk.
        shape: ``(N, C, H, W)`` of the input.
        sampling: Output bins.

    Returns:
        ``([k, C, PH, PW] maxima in the input dtype, [k, C, PH, PW] int32 argmax)``.
    """
    batch, channels, height, width = shape
    pooled_height, pooled_width = sampling.pooled_height, sampling.pooled_width
    device = source.device
    k = ids.numel()
    lo_h, len_h, lo_w, len_w = bins.h_lo[ids], bins.h_len[ids], bins.w_lo[ids], bins.w_len[ids]
    max_h, max_w = int(len_h.max()), int(len_w.max())
    if max_h == 0 or max_w == 0:
        return None  # only empty bins: output 0, argmax -1
    dh = torch.arange(max_h, device=device)
    dw = torch.arange(max_w, device=device)
    rows = lo_h[:, :, None] + dh  # [k, PH, max_h]
    cols = lo_w[:, :, None] + dw  # [k, PW, max_w]
    inside = (dh < len_h[:, :, None])[:, :, None, :, None] & (dw < len_w[:, :, None])[
        :, None, :, None, :
    ]  # [k, PH, PW, max_h, max_w]
    index = (
        (bins.batch_index[ids] * (height * width))[:, None, None, None, None]
        + rows[:, :, None, :, None] * width
        + cols[:, None, :, None, :]
    )
    index = torch.where(inside, index, batch * height * width)  # the padding row
    values = source.index_select(0, index.reshape(-1))
    values = values.view(k, pooled_height, pooled_width, max_h * max_w, channels)
    best, where = values.max(dim=3)  # first maximum in (h, w) order: [k, PH, PW, C]
    position = (lo_h[:, :, None, None] + torch.div(where, max_w, rounding_mode="floor")) * (
        width
    ) + (lo_w[:, None, :, None] + where % max_w)
    empty = ((len_h == 0)[:, :, None] | (len_w == 0)[:, None, :])[..., None]
    found = best > -_FLT_MAX  # torchvision starts from -FLT_MAX with a strict '>'
    best = torch.where(empty, 0.0, torch.where(found, best, -_FLT_MAX))
    position = torch.where(empty | ~found, -1, position)
    return best.permute(0, 3, 1, 2).to(source.dtype), position.permute(0, 3, 1, 2).to(torch.int32)


def _roi_pool_chunks(
    h_len: torch.Tensor, w_len: torch.Tensor, channels: int
) -> Iterator[torch.Tensor]:
    """Chunks of roi indices whose padded pooling windows fit the gather budget.

    Rois are sorted by window size so that each chunk pads its windows to a
    size close to that of its own rois.

    Args:
        h_len: ``[K, PH]`` bin heights.
        w_len: ``[K, PW]`` bin widths.
        channels: Feature channels.

    Yields:
        ``int64`` roi indices.
    """
    max_h = h_len.amax(dim=1)
    max_w = w_len.amax(dim=1)
    order = torch.argsort(max_h * max_w)
    sizes_h = max_h[order].tolist()
    sizes_w = max_w[order].tolist()
    bins = h_len.shape[1] * w_len.shape[1]
    first = 0
    chunk_h = chunk_w = 0
    for i, (size_h, size_w) in enumerate(zip(sizes_h, sizes_w, strict=True)):
        new_h, new_w = max(chunk_h, size_h), max(chunk_w, size_w)
        if i > first and (i - first + 1) * bins * new_h * new_w * channels > _GATHER_BUDGET:
            yield order[first:i]
            first, new_h, new_w = i, size_h, size_w
        chunk_h, chunk_w = new_h, new_w
    yield order[first:]


def roi_pool_backward(
    grad: torch.Tensor, rois: torch.Tensor, argmax: torch.Tensor, *schema_args: float | int
) -> torch.Tensor:
    """The kernel of ``torchvision::_roi_pool_backward`` (see :func:`roi_pool_input_grad`).

    Args:
        grad: ``Tensor[K, C, PH, PW]`` output gradient.
        rois: ``Tensor[K, 5]`` as given to :func:`roi_pool`.
        argmax: The argmax returned by :func:`roi_pool`.
        *schema_args: The operator's other arguments, in its order:
            ``spatial_scale, pooled_height, pooled_width`` (unused) and
            ``batch_size, channels, height, width`` of the input.

    Returns:
        ``Tensor[N, C, H, W]`` input gradient.
    """
    _scale, _pooled_h, _pooled_w, batch, channels, height, width = schema_args
    shape = FeatureShape(batch, channels, height, width)  # type: ignore[arg-type]
    return roi_pool_input_grad(grad, rois, argmax, shape)


def roi_pool_input_grad(
    grad: torch.Tensor, rois: torch.Tensor, argmax: torch.Tensor, shape: FeatureShape
) -> torch.Tensor:
    """Gradient of :func:`roi_pool`: each bin's gradient goes to its argmax pixel.

    Args:
        grad: ``Tensor[K, C, PH, PW]`` output gradient.
        rois: ``Tensor[K, 5]`` as given to :func:`roi_pool`.
        argmax: The argmax returned by :func:`roi_pool`.
        shape: Shape of the input.

    Returns:
        ``Tensor[N, C, H, W]`` input gradient.

    Raises:
        ValueError: ``grad`` and ``rois`` differ in dtype.
    """
    require(
        grad.dtype == rois.dtype,
        f"roi_pool backward: grad and rois must have the same dtype, got {grad.dtype} and "
        f"{rois.dtype}",
    )
    channels, height, width = shape.channels, shape.height, shape.width
    grad_input = grad.new_zeros((shape.batch_size * channels * height * width,))
    if grad.numel() > 0:
        batch_index = rois[:, 0].to(torch.int64)
        channel = torch.arange(channels, device=grad.device)
        plane = (batch_index[:, None] * channels + channel[None, :]) * (height * width)
        position = argmax.to(torch.int64)
        valid = position != -1
        flat = plane[:, :, None, None] + position
        grad_input.index_add_(0, flat[valid], grad[valid])
    return grad_input.view(shape.batch_size, channels, height, width)
