"""Tests of slidewise.engine.imagery.tvcompat: torchvision operators with or without native ops.

The pure-PyTorch operators are checked against straightforward references
written here from torchvision's documented algorithms (greedy NMS, RoI Align
bilinear sampling with its boundary rules, RoI max pooling). When torchvision's
native operators load, the comparisons through ``torchvision.ops`` compare the
native kernels with the fallback functions.

Set ``SLIDEWISE_STABLE_TV_PYTHON`` to an interpreter whose torchvision loads its
stable-ABI library (``_C_stable``, torchvision >= 0.29) to check the native
path there; ``/tmp/venv-torch215/bin/python`` is used when it exists.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from slidewise.engine.imagery import tvcompat, tvlibraries, tvops_nms

if importlib.util.find_spec("torchvision") is None:  # pragma: no cover - environment
    pytest.skip("torchvision is not installed", allow_module_level=True)

# Must run before anything imports torchvision.
MODE = tvcompat.ensure_torchvision_ops()

fallback_only = pytest.mark.skipif(MODE != tvcompat.FALLBACK, reason="native torchvision ops")


@pytest.fixture(scope="module")
def tv() -> ModuleType:
    return tvcompat.import_torchvision()


# --------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> list[int]:
    """Greedy NMS in plain Python, in the boxes' precision (float32 via NumPy)."""
    cast = np.float32 if boxes.dtype == torch.float32 else float
    rows = [[cast(v) for v in row] for row in boxes.tolist()]
    score_list = scores.tolist()
    order = sorted(range(len(rows)), key=lambda i: -score_list[i])  # stable: ties by index
    area = [(r[2] - r[0]) * (r[3] - r[1]) for r in rows]
    suppressed = [False] * len(rows)
    keep: list[int] = []
    for rank, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[rank + 1 :]:
            if suppressed[j]:
                continue
            w = max(cast(0), min(rows[i][2], rows[j][2]) - max(rows[i][0], rows[j][0]))
            h = max(cast(0), min(rows[i][3], rows[j][3]) - max(rows[i][1], rows[j][1]))
            inter = w * h
            iou = inter / (area[i] + area[j] - inter)
            if float(iou) > iou_threshold:  # torchvision compares with a double threshold
                suppressed[j] = True
    return keep


def reference_roi_align(
    input: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """RoI Align sample by sample (torchvision's algorithm, written from its docs/kernel)."""
    _, channels, height, width = input.shape
    out = torch.zeros(rois.shape[0], channels, pooled_height, pooled_width, dtype=torch.float64)
    data = input.double()
    offset = 0.5 if aligned else 0.0

    def bilinear(b: int, y: float, x: float) -> torch.Tensor:
        if y < -1.0 or y > height or x < -1.0 or x > width:
            return torch.zeros(channels, dtype=torch.float64)
        y, x = max(y, 0.0), max(x, 0.0)
        y_low, x_low = int(y), int(x)
        if y_low >= height - 1:
            y_low = y_high = height - 1
            y = float(y_low)
        else:
            y_high = y_low + 1
        if x_low >= width - 1:
            x_low = x_high = width - 1
            x = float(x_low)
        else:
            x_high = x_low + 1
        ly, lx = y - y_low, x - x_low
        hy, hx = 1.0 - ly, 1.0 - lx
        return (
            hy * hx * data[b, :, y_low, x_low]
            + hy * lx * data[b, :, y_low, x_high]
            + ly * hx * data[b, :, y_high, x_low]
            + ly * lx * data[b, :, y_high, x_high]
        )

    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        start_w, start_h = x1 * spatial_scale - offset, y1 * spatial_scale - offset
        roi_w = x2 * spatial_scale - offset - start_w
        roi_h = y2 * spatial_scale - offset - start_h
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / pooled_height, roi_w / pooled_width
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / pooled_height)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pooled_width)
        count = max(grid_h * grid_w, 1)
        for ph in range(pooled_height):
            for pw in range(pooled_width):
                total = torch.zeros(channels, dtype=torch.float64)
                for iy in range(grid_h):
                    y = start_h + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = start_w + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        total += bilinear(int(b), y, x)
                out[k, :, ph, pw] = total / count
    return out.to(input.dtype)


def reference_roi_pool(
    input: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoI max pooling element by element (strict '>' from -FLT_MAX, empty bins 0/-1)."""
    _, channels, height, width = input.shape
    shape = (rois.shape[0], channels, pooled_height, pooled_width)
    out = torch.zeros(shape, dtype=input.dtype)
    arg = torch.full(shape, -1, dtype=torch.int32)
    values = input.tolist()
    flt_max = float(np.finfo(np.float32).max)

    def round_away(v: float) -> int:
        return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)

    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        sw, sh = round_away(x1 * spatial_scale), round_away(y1 * spatial_scale)
        ew, eh = round_away(x2 * spatial_scale), round_away(y2 * spatial_scale)
        bin_h = max(eh - sh + 1, 1) / pooled_height
        bin_w = max(ew - sw + 1, 1) / pooled_width
        for ph in range(pooled_height):
            hs = min(max(math.floor(ph * bin_h) + sh, 0), height)
            he = min(max(math.ceil((ph + 1) * bin_h) + sh, 0), height)
            for pw in range(pooled_width):
                ws = min(max(math.floor(pw * bin_w) + sw, 0), width)
                we = min(max(math.ceil((pw + 1) * bin_w) + sw, 0), width)
                empty = he <= hs or we <= ws
                for c in range(channels):
                    best, best_at = (0.0 if empty else -flt_max), -1
                    for h in range(hs, he):
                        for w in range(ws, we):
                            if values[int(b)][c][h][w] > best:
                                best, best_at = values[int(b)][c][h][w], h * width + w
                    out[k, c, ph, pw] = best
                    arg[k, c, ph, pw] = best_at
    return out, arg


def random_boxes(
    n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64, span: float = 100.0
) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * span
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * span * 0.4 + 1.0
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def random_rois(
    n: int, batch: int, size: float, generator: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    """Rois inside, across and outside the image, tiny and inverted ones included."""
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * size * 1.4 - size * 0.2
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * size * 0.8
    wh[: n // 6] *= 0.02  # smaller than a pixel
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[-2] = torch.tensor([0.3 * size, 0.3 * size, 0.1 * size, 0.2 * size])  # inverted
    boxes[-1] = torch.tensor([-2.0 * size, -2.0 * size, -1.5 * size, -1.2 * size])  # outside
    index = torch.randint(0, batch, (n, 1), generator=generator).double()
    return torch.cat([index, boxes], dim=1).to(dtype)


# --------------------------------------------------------------------------
# (a) imports
# --------------------------------------------------------------------------


def test_mode_and_status_agree() -> None:
    assert MODE in (tvcompat.NATIVE, tvcompat.FALLBACK)
    assert tvcompat.ensure_torchvision_ops() == MODE  # idempotent
    assert tvcompat.torchvision_status() == MODE
    assert tvcompat.import_torchvision() is sys.modules["torchvision"]


def test_torchvision_smp_and_detection_import(tv: ModuleType) -> None:
    import segmentation_models_pytorch as smp
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    assert callable(fasterrcnn_resnet50_fpn)
    assert tv.extension._has_ops()
    model = smp.Unet(encoder_name="resnet18", encoder_weights=None, in_channels=3, classes=2)
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_torch_ops_load_library_is_restored() -> None:
    assert "load_library" not in vars(torch.ops)
    libraries = tvcompat.find_native_libraries()
    assert all(path.name.startswith("_C") and path.exists() for path in libraries)


@fallback_only
def test_ops_without_fallback_raise_clear_error(tv: ModuleType) -> None:
    x = torch.rand(1, 8, 6, 6)
    rois = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]])
    with pytest.raises(NotImplementedError, match="native compiled operators"):
        tv.ops.ps_roi_align(x, rois, output_size=2)
    with pytest.raises(NotImplementedError, match="torchvision::deform_conv2d"):
        tv.ops.deform_conv2d(x, torch.zeros(1, 18, 4, 4), torch.rand(4, 8, 3, 3))


# --------------------------------------------------------------------------
# (b) the fallback operators against references
# --------------------------------------------------------------------------


@pytest.mark.parametrize("iou_threshold", [0.0, 0.2, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nms_matches_reference_on_random_boxes(iou_threshold: float, dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(int(iou_threshold * 10) + 1)
    boxes = random_boxes(300, generator, dtype)
    scores = torch.rand(300, generator=generator, dtype=torch.float64).to(dtype)
    keep = tvcompat.nms(boxes, scores, iou_threshold)
    assert keep.dtype == torch.int64
    assert keep.tolist() == reference_nms(boxes, scores, iou_threshold)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nms_ties_and_integer_boxes(dtype: torch.dtype) -> None:
    """Integer boxes give many identical IoUs (some exactly at the threshold) and tied scores."""
    generator = torch.Generator().manual_seed(7)
    xy = torch.randint(0, 12, (250, 2), generator=generator)
    wh = torch.randint(1, 6, (250, 2), generator=generator)
    boxes = torch.cat([xy, xy + wh], dim=1).to(dtype)
    scores = torch.randint(0, 6, (250,), generator=generator).to(dtype)
    for iou_threshold in (0.25, 1 / 3, 0.5, 0.6):
        keep = tvcompat.nms(boxes, scores, iou_threshold)
        assert keep.tolist() == reference_nms(boxes, scores, iou_threshold)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nms_iou_exactly_at_threshold_is_kept(dtype: torch.dtype) -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 10]], dtype=dtype)
    scores = torch.tensor([0.9, 0.8, 0.9], dtype=dtype)  # box 2 ties box 0: index order
    assert tvcompat.nms(boxes, scores, 0.5).tolist() == [0, 1]  # IoU(0, 1) == 0.5
    assert tvcompat.nms(boxes, scores, 0.49).tolist() == [0]
    assert tvcompat.nms(boxes, scores, 1.0).tolist() == [0, 2, 1]


def test_nms_blocks_and_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small blocks/tiles exercise the chunked greedy pass against the reference."""
    monkeypatch.setattr(tvops_nms, "_NMS_BLOCK", 7)
    monkeypatch.setattr(tvops_nms, "_NMS_TILE", 20)
    generator = torch.Generator().manual_seed(3)
    boxes = random_boxes(200, generator, span=60.0)
    scores = torch.randint(0, 20, (200,), generator=generator).double()
    for iou_threshold in (0.1, 0.5):
        keep = tvcompat.nms(boxes, scores, iou_threshold)
        assert keep.tolist() == reference_nms(boxes, scores, iou_threshold)


def test_nms_empty_and_bad_shapes() -> None:
    keep = tvcompat.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert keep.dtype == torch.int64 and keep.numel() == 0
    with pytest.raises(ValueError):
        tvcompat.nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError):
        tvcompat.nms(torch.zeros(3, 4), torch.zeros(2), 0.5)


def test_nms_thousands_of_boxes_is_greedy(tv: ModuleType) -> None:
    """4000 boxes: kept boxes do not overlap earlier kept ones, dropped ones do."""
    generator = torch.Generator().manual_seed(11)
    boxes = random_boxes(4000, generator, torch.float32, span=400.0)
    scores = torch.rand(4000, generator=generator)
    keep = tvcompat.nms(boxes, scores, 0.5)
    order = torch.sort(scores, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    is_kept = torch.zeros(4000, dtype=torch.bool)
    is_kept[keep] = True
    iou = tv.ops.box_iou(boxes, boxes)
    earlier = rank[None, :] < rank[:, None]  # [i, j]: j ranks before i
    hit_by_kept = ((iou > 0.5) & earlier & is_kept[None, :]).any(dim=1)
    assert not hit_by_kept[is_kept].any()
    assert hit_by_kept[~is_kept].all()
    assert torch.equal(rank[keep], torch.sort(rank[keep]).values)  # by decreasing score


@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25, 1 / 3])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_matches_reference(
    spatial_scale: float, sampling_ratio: int, aligned: bool
) -> None:
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 9, 11, generator=generator, dtype=torch.float64)
    rois = random_rois(14, 2, 11 / spatial_scale, generator, torch.float64)
    args = (spatial_scale, 3, 4, sampling_ratio, aligned)
    expected = reference_roi_align(x, rois, *args)
    assert torch.allclose(tvcompat.roi_align(x, rois, *args), expected, rtol=0, atol=1e-12)
    x32, rois32 = x.float(), rois.float()
    got32 = tvcompat.roi_align(x32, rois32, *args)
    assert got32.dtype == torch.float32
    assert torch.allclose(got32, reference_roi_align(x32, rois32, *args), atol=1e-5)


def test_roi_align_boundary_rules() -> None:
    """Samples at y == -1 / y == H are clamped into the map, beyond them they count as 0."""
    x = torch.arange(2 * 5 * 6, dtype=torch.float64).view(1, 2, 5, 6)
    # One sample per bin (sampling_ratio=1, 1x1 output) at the roi centre.
    rois = torch.tensor(
        [
            [0, 2.0, -2.0, 3.0, 0.0],  # y = -1: row 0
            [0, 2.0, -3.0, 3.0, 0.0],  # y = -1.5: outside
            [0, 2.0, 4.0, 3.0, 6.0],  # y = 5 = H: row 4
            [0, 2.0, 4.5, 3.0, 6.5],  # y = 5.5: outside
            [0, -2.0, 1.0, 0.0, 2.0],  # x = -1, y = 1.5
            [0, 5.5, 1.0, 6.5, 2.0],  # x = 6 = W: column 5
        ],
        dtype=torch.float64,
    )
    out = tvcompat.roi_align(x, rois, 1.0, 1, 1, 1, False)[:, :, 0, 0]
    assert torch.allclose(out, reference_roi_align(x, rois, 1.0, 1, 1, 1, False)[:, :, 0, 0])
    assert torch.allclose(out[0], 0.5 * (x[0, :, 0, 2] + x[0, :, 0, 3]))
    assert torch.equal(out[1], torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(out[2], 0.5 * (x[0, :, 4, 2] + x[0, :, 4, 3]))
    assert torch.equal(out[3], torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(out[4], 0.5 * (x[0, :, 1, 0] + x[0, :, 2, 0]))
    assert torch.allclose(out[5], 0.5 * (x[0, :, 1, 5] + x[0, :, 2, 5]))


def test_roi_align_matches_torchvision_python_version(tv: ModuleType) -> None:
    """torchvision's own pure-Python roi_align (for rois inside the map) agrees too."""
    module = sys.modules.get("torchvision.ops.roi_align")
    python_roi_align = getattr(getattr(module, "_roi_align", None), "__wrapped__", None)
    if python_roi_align is None:
        pytest.skip("this torchvision has no pure-Python roi_align")
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 12, 10, generator=generator, dtype=torch.float64)
    xy = torch.rand(10, 2, generator=generator, dtype=torch.float64) * 12
    wh = torch.rand(10, 2, generator=generator, dtype=torch.float64) * 7 + 0.5
    index = torch.randint(0, 2, (10, 1), generator=generator).double()
    rois = torch.cat([index, xy, xy + wh], dim=1)
    for sampling_ratio, aligned in ((-1, False), (2, True), (3, False)):
        args = (0.5, 3, 2, sampling_ratio, aligned)
        expected = python_roi_align(x, rois, *args)
        assert torch.allclose(tvcompat.roi_align(x, rois, *args), expected, atol=1e-12)


@pytest.mark.parametrize(("sampling_ratio", "aligned"), [(-1, False), (2, True), (2, False)])
def test_roi_align_gradcheck(tv: ModuleType, sampling_ratio: int, aligned: bool) -> None:
    generator = torch.Generator().manual_seed(9)
    x = torch.randn(2, 2, 5, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.3, 0.6, 4.2, 3.9], [1, 1.1, -0.7, 6.4, 4.4], [1, 2.2, 2.1, 2.9, 2.6]],
        dtype=torch.float64,
    )

    def op(inp: torch.Tensor) -> torch.Tensor:
        return torch.ops.torchvision.roi_align(inp, rois, 1.0, 2, 3, sampling_ratio, aligned)

    assert torch.autograd.gradcheck(op, (x,))
    assert torch.autograd.gradcheck(
        lambda inp: tv.ops.roi_align(inp, rois, (3, 2), 0.9, sampling_ratio, aligned), (x,)
    )


def test_roi_align_backward_matches_autograd_of_forward() -> None:
    """The explicit backward is the adjoint of the (differentiable) forward function."""
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 8, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = random_rois(12, 2, 14.0, generator, torch.float64)
    for sampling_ratio, aligned in ((-1, False), (2, True)):
        out = tvcompat.roi_align(x, rois, 0.5, 3, 2, sampling_ratio, aligned)
        grad = torch.randn(out.shape, generator=generator, dtype=torch.float64)
        (expected,) = torch.autograd.grad(out, x, grad)
        got = tvcompat.roi_align_backward(
            grad, rois, 0.5, 3, 2, 2, 3, 8, 7, sampling_ratio, aligned
        )
        assert torch.allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.3])
def test_roi_pool_matches_reference(spatial_scale: float) -> None:
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(2, 2, 7, 9, generator=generator, dtype=torch.float64)
    x[1, :, 2:5, 3:6] = 0.25  # ties: the first maximum in (h, w) order wins
    x[0, 1, :4, :4] = -1e300  # never above -FLT_MAX: value -FLT_MAX, argmax -1
    rois = random_rois(14, 2, 9 / spatial_scale, generator, torch.float64)
    corner = torch.tensor([[0.0, 0.0, 0.0, 2.0 / spatial_scale, 2.0 / spatial_scale]])
    rois = torch.cat([rois, corner.double()])  # inside the -1e300 block
    out, argmax = tvcompat.roi_pool(x, rois, spatial_scale, 3, 2)
    expected, expected_argmax = reference_roi_pool(x, rois, spatial_scale, 3, 2)
    assert torch.equal(out, expected)
    assert torch.equal(argmax, expected_argmax)


def test_roi_pool_rounds_halves_away_from_zero() -> None:
    """torchvision rounds roi corners with std::round (2.5 -> 3, -2.5 -> -3), not to even."""
    x = torch.arange(64, dtype=torch.float64).view(1, 1, 8, 8)
    rois = torch.tensor(
        [[0, 5.0, 5.0, 9.0, 9.0], [0, 1.0, 1.0, 7.0, 7.0], [0, -5.0, -5.0, 3.0, 3.0]],
        dtype=torch.float64,
    )
    out, argmax = tvcompat.roi_pool(x, rois, 0.5, 2, 2)
    expected, expected_argmax = reference_roi_pool(x, rois, 0.5, 2, 2)
    assert torch.equal(out, expected)
    assert torch.equal(argmax, expected_argmax)
    assert argmax[0, 0, 0, 0].item() == 4 * 8 + 4  # roi 0 starts at (3, 3): bin rows/cols 3-4


def test_roi_pool_gradcheck() -> None:
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(1, 2, 6, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.0, 0.0, 4.0, 5.0], [0, 2.0, 1.0, 5.0, 3.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda inp: torch.ops.torchvision.roi_pool(inp, rois, 1.0, 2, 2)[0], (x,)
    )


def test_own_autograd_formulas_for_older_torchvision() -> None:
    """The formulas registered when torchvision does not register its own are right."""
    library = torch.library.Library("slidewise_tvcompat_test", "FRAGMENT")
    library.define(tvcompat._SCHEMAS["roi_align"])
    library.impl("roi_align", tvcompat.roi_align, "CompositeExplicitAutograd")
    library.define(tvcompat._SCHEMAS["roi_pool"])
    library.impl("roi_pool", tvcompat.roi_pool, "CompositeExplicitAutograd")
    torch.library.register_autograd(
        "slidewise_tvcompat_test::roi_align",
        tvcompat._roi_align_autograd_backward,
        setup_context=tvcompat._roi_align_setup_context,
    )
    torch.library.register_autograd(
        "slidewise_tvcompat_test::roi_pool",
        tvcompat._roi_pool_autograd_backward,
        setup_context=tvcompat._roi_pool_setup_context,
    )
    ops = torch.ops.slidewise_tvcompat_test
    generator = torch.Generator().manual_seed(10)
    x = torch.randn(2, 2, 5, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 0.6, 4.2, 3.9], [1, 1.1, -0.7, 6.4, 4.4]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda inp: ops.roi_align(inp, rois, 1.0, 2, 3, 2, True), (x,))
    assert torch.autograd.gradcheck(lambda inp: ops.roi_pool(inp, rois, 1.0, 2, 2)[0], (x,))
    del library


# --------------------------------------------------------------------------
# (c) torchvision.ops gives the same as the fallback
# --------------------------------------------------------------------------


def test_torchvision_nms_equals_fallback(tv: ModuleType) -> None:
    generator = torch.Generator().manual_seed(12)
    for dtype in (torch.float32, torch.float64):
        boxes = random_boxes(500, generator, dtype)
        scores = torch.rand(500, generator=generator, dtype=torch.float64).to(dtype)
        for iou_threshold in (0.3, 0.7):
            assert torch.equal(
                tv.ops.nms(boxes, scores, iou_threshold),
                tvcompat.nms(boxes, scores, iou_threshold),
            )


@pytest.mark.parametrize("count", [300, 1500])  # coordinate-offset path and per-class path
def test_torchvision_batched_nms_equals_per_class_fallback(tv: ModuleType, count: int) -> None:
    generator = torch.Generator().manual_seed(count)
    boxes = random_boxes(count, generator, torch.float32)
    scores = torch.randperm(count, generator=generator).float() / count  # distinct scores
    classes = torch.randint(0, 4, (count,), generator=generator)
    keep = tv.ops.batched_nms(boxes, scores, classes, 0.5)
    expected = []
    for label in classes.unique():
        members = torch.nonzero(classes == label).squeeze(1)
        expected.append(members[tvcompat.nms(boxes[members], scores[members], 0.5)])
    merged = torch.cat(expected)
    merged = merged[torch.sort(scores[merged], descending=True).indices]
    assert torch.equal(keep, merged)


def test_torchvision_roi_align_and_pool_equal_fallback(tv: ModuleType) -> None:
    generator = torch.Generator().manual_seed(13)
    x = torch.randn(2, 4, 16, 20, generator=generator)
    boxes = [random_boxes(6, generator, torch.float32, 30.0) for _ in range(2)]
    rois = torch.cat([torch.cat([torch.full((6, 1), float(i)), b], 1) for i, b in enumerate(boxes)])
    for sampling_ratio, aligned in ((-1, False), (2, True)):
        got = tv.ops.roi_align(x, boxes, (3, 4), 0.5, sampling_ratio, aligned)
        expected = tvcompat.roi_align(x, rois, 0.5, 3, 4, sampling_ratio, aligned)
        assert torch.allclose(got, expected, atol=1e-5)
    pooled = tv.ops.roi_pool(x, boxes, (3, 2), 0.5)
    assert torch.equal(pooled, tvcompat.roi_pool(x, rois, 0.5, 3, 2)[0])


def test_multiscale_roi_align_backward(tv: ModuleType) -> None:
    """Faster R-CNN's pooler sends gradients back to every feature level it samples."""
    from collections import OrderedDict

    pooler = tv.ops.MultiScaleRoIAlign(["0", "1"], output_size=7, sampling_ratio=2)
    features = OrderedDict(
        (name, torch.randn(2, 8, size, size, requires_grad=True))
        for name, size in (("0", 32), ("1", 16))
    )
    boxes = [
        torch.tensor([[4.0, 4.0, 40.0, 60.0], [0.0, 0.0, 127.0, 127.0]]),
        torch.tensor([[10.0, 20.0, 30.0, 28.0]]),
    ]
    out = pooler(features, boxes, [(128, 128), (128, 128)])
    assert out.shape == (3, 8, 7, 7)
    out.square().sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features.values())


# --------------------------------------------------------------------------
# (d) Faster R-CNN trains and predicts on CPU
# --------------------------------------------------------------------------


def test_faster_rcnn_training_step_and_eval(tv: ModuleType) -> None:
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    model = FasterRCNN(
        backbone,
        num_classes=3,
        min_size=128,
        max_size=128,
        rpn_pre_nms_top_n_train=300,
        rpn_post_nms_top_n_train=150,
        rpn_pre_nms_top_n_test=150,
        rpn_post_nms_top_n_test=100,
        box_batch_size_per_image=64,
        box_detections_per_img=20,
        box_score_thresh=0.0,
    )
    images = [torch.rand(3, 128, 128), torch.rand(3, 112, 128)]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0], [70.0, 30.0, 120.0, 100.0]]),
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": torch.tensor([[5.0, 5.0, 50.0, 40.0]]), "labels": torch.tensor([1])},
    ]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    fc6 = model.roi_heads.box_head.fc6.weight.grad
    assert fc6 is not None and fc6.abs().sum() > 0
    fpn_grad = model.backbone.fpn.layer_blocks[0][0].weight.grad
    assert fpn_grad is not None and fpn_grad.abs().sum() > 0
    optimizer.step()

    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for found in detections:
        assert found["boxes"].shape[1:] == (4,)
        assert found["boxes"].shape[0] == found["scores"].shape[0] == found["labels"].shape[0]
        assert found["boxes"].shape[0] <= 20


# --------------------------------------------------------------------------
# (e) native operators are chosen when they load
# --------------------------------------------------------------------------


def _run_python(script: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_native_selected_when_loader_succeeds_and_unavailable_without_torchvision() -> None:
    out = _run_python(
        """
        import importlib.util, sys
        from slidewise.engine.imagery import tvcompat

        real_find_spec = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: (
            None if name == "torchvision" else real_find_spec(name, *a)
        )
        status = tvcompat.torchvision_status()
        assert status.startswith("unavailable: torchvision is not installed"), status
        importlib.util.find_spec = real_find_spec

        calls = []
        def fake_loader(libraries):
            calls.append(list(libraries))
            return True
        tvcompat._load_native_ops = fake_loader
        assert tvcompat.ensure_torchvision_ops() == "native"
        assert tvcompat.torchvision_status() == "native"
        assert calls and all(p.name.startswith("_C") for p in calls[0]), calls
        assert not tvcompat._FALLBACK_LIBRARIES
        assert "torchvision" not in sys.modules  # native mode leaves the import to callers
        print("ok")
        """
    )
    assert out.strip().endswith("ok")


def test_fallback_selected_when_loader_fails() -> None:
    out = _run_python(
        """
        import sys
        import torch
        from slidewise.engine.imagery import tvcompat

        tvcompat._load_native_ops = lambda libraries: False
        assert tvcompat.ensure_torchvision_ops() == "fallback"
        assert tvcompat.ensure_torchvision_ops() == "fallback"
        assert "load_library" not in vars(torch.ops)
        import torchvision
        assert torchvision.extension._has_ops()
        boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
        assert torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]
        print("ok")
        """
    )
    assert out.strip().endswith("ok")


@fallback_only
def test_failed_torchvision_import_before_ensure_is_recovered() -> None:
    out = _run_python(
        """
        try:
            import torchvision  # fails: the native operators do not load
        except Exception:
            pass
        else:
            raise AssertionError("torchvision imported without the fallback")
        from slidewise.engine.imagery import tvcompat
        assert tvcompat.ensure_torchvision_ops() == "fallback"
        import torchvision
        assert torchvision.extension._has_ops()
        print("ok")
        """
    )
    assert out.strip().endswith("ok")


# --------------------------------------------------------------------------
# (f) torchvision's operator library, whatever its name
# --------------------------------------------------------------------------


def _fake_torchvision(
    directory: Path, files: list[str], extension_source: str | None = None
) -> Path:
    directory.mkdir(parents=True)
    for name in files:
        (directory / name).write_bytes(b"")
    if extension_source is not None:
        (directory / "extension.py").write_text(textwrap.dedent(extension_source))
    return directory


@pytest.mark.parametrize(
    ("files", "extension_source", "expected"),
    [
        (["_C.so", "image.so"], 'if _load_library("_C"):\n    pass\n', ["_C.so"]),
        (
            ["_C_stable.so", "image_stable.so"],
            'if _load_library("_C_stable"):\n    pass\n',
            ["_C_stable.so"],
        ),
        (["_C.so"], "lib_path = _get_extension_path('_C')\n", ["_C.so"]),  # torchvision < 0.16
        (["_C.so", "_C_stable.so"], '_load_library("_C_stable")\n', ["_C_stable.so"]),  # stale _C
        (["_vision_ops.so", "image.so"], '_load_library("_vision_ops")\n', ["_vision_ops.so"]),
        (["_C_stable.abi3.so"], None, ["_C_stable.abi3.so"]),  # loader unreadable: the one _C*
        (["image.so"], '_load_library("_C")\n', []),  # installed without operators
    ],
)
def test_native_libraries_are_the_ones_torchvision_loads(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: list[str],
    extension_source: str | None,
    expected: list[str],
) -> None:
    package = _fake_torchvision(tmp_path / "torchvision", files, extension_source)
    monkeypatch.setattr(tvlibraries, "_torchvision_directories", lambda: [package])
    assert [path.name for path in tvcompat.find_native_libraries()] == expected


def test_ambiguous_native_libraries_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = _fake_torchvision(tmp_path / "torchvision", ["_C.so", "_C_stable.so"])
    monkeypatch.setattr(tvlibraries, "_torchvision_directories", lambda: [package])
    with pytest.raises(tvcompat.TorchvisionUnavailableError, match="several compiled operator"):
        tvcompat.find_native_libraries()


def test_every_name_of_the_operator_library_is_skipped_in_fallback_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = _fake_torchvision(tmp_path / "torchvision", [], '_load_library("_vision_ops")\n')
    monkeypatch.setattr(tvlibraries, "_torchvision_directories", lambda: [package])
    for name in (
        "_C.so",
        "_C.cpython-311-x86_64-linux-gnu.so",
        "_C.cp311-win_amd64.pyd",
        "_C.pyd",
        "_C_stable.so",
        "_C_stable.abi3.so",
        "_C_stable.pyd",
        "_vision_ops.so",  # named by the loader
    ):
        assert tvlibraries.is_ops_library(package / name), name
    for name in ("image.so", "image_stable.so", "video_reader.so", "_Cx.so"):
        assert not tvlibraries.is_ops_library(package / name), name
    assert not tvlibraries.is_ops_library(tmp_path / "elsewhere" / "_C_stable.so")


def test_defined_operators_are_never_mixed_with_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever defined torchvision::* first wins; the fallback never defines next to it."""
    assert "nms" in tvcompat._defined_ops()  # native or fallback, defined by now
    missing = [tmp_path / "_C_stable.so"]  # a library that fails to load is tolerated
    assert tvcompat._load_native_ops(missing) is True
    count = len(tvcompat._FALLBACK_LIBRARIES)
    with pytest.raises(tvcompat.TorchvisionUnavailableError, match="cannot be mixed"):
        tvcompat._install_fallback()
    assert len(tvcompat._FALLBACK_LIBRARIES) == count
    monkeypatch.setattr(tvcompat, "_native_ops_error", lambda: "RuntimeError: no CPU kernel")
    with pytest.raises(
        tvcompat.TorchvisionUnavailableError, match="does not work: RuntimeError: no CPU kernel"
    ):
        tvcompat._load_native_ops(missing)


def _stable_abi_python() -> str | None:
    configured = os.environ.get("SLIDEWISE_STABLE_TV_PYTHON", "/tmp/venv-torch215/bin/python")
    return configured if os.path.exists(configured) else None


_STABLE_NATIVE_SCRIPT = """
    import torch
    from slidewise.engine.imagery import tvcompat

    assert tvcompat.ensure_torchvision_ops() == "native"
    assert tvcompat.ensure_torchvision_ops() == "native"
    assert not tvcompat._FALLBACK_LIBRARIES
    assert [p.name.split(".")[0] for p in tvcompat.find_native_libraries()] == ["_C_stable"]
    import torchvision
    assert torchvision.extension._has_ops()
    for op in ("nms", "roi_align"):  # the compiled CPU kernels run, not the fallback
        dump = torch._C._dispatch_dump(f"torchvision::{op}")
        cpu = [line for line in dump.splitlines() if line.startswith("CPU:")]
        assert cpu and "csrc" in cpu[0] and "tvcompat" not in dump, dump
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        xy = torch.rand(1000, 2, generator=g, dtype=torch.float64) * 200
        wh = torch.rand(1000, 2, generator=g, dtype=torch.float64) * 60 + 1
        boxes = torch.cat([xy, xy + wh], 1).to(dtype)
        scores = torch.rand(1000, generator=g, dtype=torch.float64).to(dtype)
        for t in (0.2, 0.5, 0.7):
            native = torchvision.ops.nms(boxes, scores, t)
            assert torch.equal(native, tvcompat.nms(boxes, scores, t)), (dtype, t)
    x = torch.randn(2, 4, 16, 20, generator=g)
    rois = torch.cat([torch.tensor([[0.0], [1.0], [1.0]]), boxes[:3].float() / 8], 1)
    for ratio, aligned in ((-1, False), (2, True)):
        native = torchvision.ops.roi_align(x, rois, (3, 4), 0.5, ratio, aligned)
        ours = tvcompat.roi_align(x, rois, 0.5, 3, 4, ratio, aligned)
        assert torch.allclose(native, ours, atol=1e-5)
    import segmentation_models_pytorch as smp
    model = smp.Unet(encoder_name="resnet18", encoder_weights=None, classes=2).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 2, 64, 64)
    print(torchvision.__version__, "ok")
"""

_STABLE_FALLBACK_SCRIPT = """
    import torch
    from slidewise.engine.imagery import tvcompat

    # As if the compiled library's name were unknown: it must still never load
    # over the fallback schemas (the process would abort).
    tvcompat.find_native_libraries = lambda: []
    assert tvcompat.ensure_torchvision_ops() == "fallback"
    import torchvision
    assert "load_library" not in vars(torch.ops)
    assert "csrc" not in torch._C._dispatch_dump("torchvision::nms")
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
    assert torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]
    print("ok")
"""


@pytest.mark.skipif(
    _stable_abi_python() is None,
    reason="no interpreter with a stable-ABI torchvision (/tmp/venv-torch215 or "
    "SLIDEWISE_STABLE_TV_PYTHON)",
)
def test_stable_abi_torchvision_native_and_fallback(tmp_path: Path) -> None:
    """torchvision >= 0.29 (``_C_stable``) is native; its fallback never aborts."""
    python = _stable_abi_python()
    assert python is not None
    shim = tmp_path / "shim"
    shim.mkdir()
    try:
        (shim / "slidewise").symlink_to(Path(tvcompat.__file__).resolve().parents[2])
    except OSError as exc:  # pragma: no cover - e.g. Windows without symlink rights
        pytest.skip(f"cannot link the package for the other interpreter: {exc}")
    env = {**os.environ, "PYTHONPATH": str(shim)}
    runs = {
        name: subprocess.Popen(
            [python, "-c", textwrap.dedent(script)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, script in (
            ("native", _STABLE_NATIVE_SCRIPT),
            ("fallback", _STABLE_FALLBACK_SCRIPT),
        )
    }
    for name, run in runs.items():
        output, _ = run.communicate(timeout=300)
        assert run.returncode == 0, f"{name} (rc {run.returncode}):\n{output[-4000:]}"
        assert output.strip().endswith("ok"), output
