"""Tiled inference: seams, borders, nodata, memory bound, test-time augmentation."""

from __future__ import annotations

import tracemalloc
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from engine_helpers import write_geotiff
from rasterio.transform import from_origin
from rasterio.windows import Window
from torch import nn

from slidewise.engine.imagery.tiling import (
    CPU_TILE,
    D4_TRANSFORMS,
    DEFAULT_TILE,
    AxisLayout,
    PredictionStats,
    TileLayout,
    TilingOptions,
    default_tile_size,
    fold_batch_norms,
    make_runner,
    predict_raster,
    predict_whole_image,
    reflect_indices,
    seam_error,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _conv_net(bands: int = 4, seed: int = 0) -> nn.Module:
    """A small fully convolutional net with two 2x poolings (output stride 4)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(bands, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Upsample(scale_factor=4, mode="nearest"),
        nn.Conv2d(8, 1, 3, padding=1),
    ).eval()


def _image(bands: int, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(bands, rows, cols)).astype(np.float32)


def _write(path, image: np.ndarray, nodata: float | None = None) -> str:
    return write_geotiff(
        path, image.astype(np.float32), "EPSG:32645", 10.0, (400000, 2500000), nodata
    )


def test_reflect_indices_match_numpy_pad() -> None:
    for length in (1, 2, 5, 37):
        x = np.arange(length)
        padded = np.pad(x, 200, mode="reflect") if length > 1 else np.zeros(401, int)
        for start in (-200, -37, -3, 0, 4, length - 2, length + 5):
            size = 60
            got = x[reflect_indices(start, size, length)]
            want = padded[start + 200 : start + 200 + size]
            np.testing.assert_array_equal(got, want)


def test_layout_is_aligned_and_covers_the_raster_with_margin() -> None:
    for length in (100, 500, 1024, 3001):
        axis = AxisLayout.plan(length, 512, 64, 32)
        assert axis.tile % 32 == 0 and axis.tile <= 512
        assert axis.starts[0] == -axis.margin == -32
        strides = np.diff(axis.starts)
        assert np.all(strides % 32 == 0) and np.all(strides <= axis.tile - axis.overlap)
        assert axis.starts[-1] + axis.tile >= length + axis.margin
        w = axis.weights()
        assert w.min() > 0 and w.max() == pytest.approx(1.0)
    # Ramps of neighbours sum to one over the overlap (partition of unity).
    axis = AxisLayout.plan(2000, 256, 64, 32)
    w = axis.weights()
    np.testing.assert_allclose(w[-64:] + w[:64], 1.0, atol=2e-3)


def test_tiled_prediction_matches_whole_image() -> None:
    model = _conv_net()
    image = _image(4, 200, 333)
    for tile, overlap in ((128, 64), (512, 64)):
        stats = PredictionStats()
        tiled = predict_raster(model, image, TilingOptions(tile=tile, overlap=overlap, stats=stats))
        whole = predict_whole_image(model, image, pad=stats.margin)
        assert tiled.shape == (200, 333)
        assert np.isfinite(tiled).all()
        assert seam_error(tiled, whole) < 2e-3, (tile, overlap)
    assert stats.tiles_run == stats.tiles_total


def test_hard_seams_without_overlap_are_visible() -> None:
    """The seam test has teeth: without overlap the tile borders differ."""
    model = _conv_net()
    image = _image(4, 256, 256)
    tiled = predict_raster(model, image, TilingOptions(tile=64, overlap=0))
    whole = predict_whole_image(model, image, pad=0)
    assert seam_error(tiled, whole) > 1e-2


def test_borders_are_predicted_from_a_raster_file(tmp_path) -> None:
    image = _image(4, 200, 333, seed=1)
    path = _write(tmp_path / "img.tif", image)
    model = _conv_net()
    strips = []
    out = predict_raster(
        model,
        path,
        TilingOptions(tile=128, overlap=64),
        sink=lambda w, p: strips.append((w, p.copy())),
    )
    assert out is None
    rows = sorted((int(w.row_off), int(w.height)) for w, _ in strips)
    assert rows[0][0] == 0 and sum(h for _, h in rows) == 200
    full = np.concatenate([p for _, p in sorted(strips, key=lambda s: s[0].row_off)])
    assert full.shape == (200, 333)
    assert np.isfinite(full).all()  # first/last rows and columns included
    assert np.isfinite(full[[0, -1]]).all() and np.isfinite(full[:, [0, -1]]).all()
    whole = predict_whole_image(model, image, pad=32)
    assert seam_error(full, whole) < 2e-3


def test_nodata_gives_nan_and_empty_tiles_are_skipped(tmp_path) -> None:
    image = _image(4, 256, 256, seed=2)
    image[:, 10:20, 30:50] = -9999.0  # a nodata hole
    image[:, 128:, 128:] = -9999.0  # a whole quadrant without data
    image[2, 100, 100] = np.nan  # one band not finite -> pixel invalid
    path = _write(tmp_path / "nodata.tif", image, nodata=-9999.0)
    stats = PredictionStats()
    prob = predict_raster(_conv_net(), path, TilingOptions(tile=64, overlap=32, stats=stats))
    invalid = np.zeros((256, 256), bool)
    invalid[10:20, 30:50] = True
    invalid[128:, 128:] = True
    invalid[100, 100] = True
    np.testing.assert_array_equal(np.isnan(prob), invalid)
    assert stats.tiles_skipped > 0
    assert np.all((prob[~invalid] >= 0) & (prob[~invalid] <= 1))


def test_output_mask_limits_prediction() -> None:
    image = _image(4, 128, 160, seed=3)

    def left_half(window: Window) -> np.ndarray:
        cols = np.arange(window.col_off, window.col_off + window.width)
        return np.broadcast_to(cols < 80, (int(window.height), int(window.width))).copy()

    prob = predict_raster(
        _conv_net(), image, TilingOptions(tile=64, overlap=32), output_mask=left_half
    )
    assert np.isfinite(prob[:, :80]).all() and np.isnan(prob[:, 80:]).all()


def _tall_raster(path, rows: int, cols: int, bands: int) -> str:
    profile = {
        "driver": "GTiff",
        "width": cols,
        "height": rows,
        "count": bands,
        "dtype": "float32",
        "crs": "EPSG:32645",
        "transform": from_origin(0, 0, 10, 10),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, rows, 512):
            block = rng.normal(size=(bands, 512, cols)).astype(np.float32)
            dst.write(block, window=Window(0, top, cols, 512))
    return str(path)


def _peak_numpy_bytes(model: nn.Module, path: str) -> tuple[int, PredictionStats, list[int]]:
    seen: list[int] = []
    stats = PredictionStats()
    tracemalloc.start()
    try:
        predict_raster(
            model,
            path,
            TilingOptions(tile=256, overlap=32, stats=stats),
            sink=lambda w, p: seen.append(int(w.height)),
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, stats, seen


def test_memory_is_bounded_by_a_row_band(tmp_path) -> None:
    """A raster many tiles high: buffers depend on the width, never on the height."""
    rows, cols, bands = 4096, 512, 4
    raster_bytes = rows * cols * bands * 4  # 32 MiB
    short = TileLayout.plan(1024, cols, bands, 256, 32)
    tall = TileLayout.plan(rows, cols, bands, 256, 32)
    assert short.buffer_bytes() == tall.buffer_bytes() < raster_bytes / 10
    model = nn.Conv2d(bands, 1, 1).eval()
    peak_short, _, _ = _peak_numpy_bytes(model, _tall_raster(tmp_path / "s.tif", 1024, cols, bands))
    peak, stats, seen = _peak_numpy_bytes(
        model, _tall_raster(tmp_path / "t.tif", rows, cols, bands)
    )
    assert sum(seen) == rows and max(seen) <= 256
    assert stats.buffer_bytes == tall.buffer_bytes()
    assert peak < raster_bytes / 4, f"peak numpy allocation {peak / 2**20:.1f} MiB"
    assert peak < 1.25 * peak_short, "memory grows with the raster height"


class _SymmetricConv(nn.Module):
    """Equivariant under flips and quarter turns: a D4-symmetrised kernel."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        k = torch.randn(1, 3, 5, 5)
        sym = sum(torch.rot90(torch.flip(k, (3,)) if f else k, r, (2, 3)) for r, f in D4_TRANSFORMS)
        self.conv = nn.Conv2d(3, 1, 5, padding=2)
        with torch.no_grad():
            self.conv.weight.copy_(sym / 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.relu(x))


def test_tta_leaves_an_equivariant_model_unchanged() -> None:
    model = _SymmetricConv().eval()
    image = _image(3, 150, 170, seed=4)
    plain = predict_raster(model, image, TilingOptions(tile=128, overlap=32))
    tta = predict_raster(model, image, TilingOptions(tile=128, overlap=32, tta=True))
    np.testing.assert_allclose(tta, plain, atol=1e-5)


def test_tta_averages_the_eight_dihedral_transforms() -> None:
    model = _conv_net(bands=3, seed=5)
    batch = _image(3, 64, 96, seed=6)[None]  # not square: quarter turns swap the sides
    runner = make_runner(model, tta=True, channels_last=False)
    with torch.inference_mode():
        got = runner(batch)
        x = torch.from_numpy(batch)
        want = torch.zeros(1, 64, 96)
        for k, flip in D4_TRANSFORMS:
            t = torch.flip(x, (3,)) if flip else x
            y = torch.sigmoid(model(torch.rot90(t, k, (2, 3))))
            y = torch.rot90(y, -k, (2, 3))
            want += (torch.flip(y, (3,)) if flip else y)[:, 0] / 8
    np.testing.assert_allclose(got, want.numpy(), atol=1e-6)
    assert runner.calls == 8
    plain = make_runner(model, channels_last=False)(batch)
    assert np.abs(plain - got).max() > 1e-3  # the model is not equivariant


def test_channels_last_gives_the_same_probabilities() -> None:
    model = _conv_net()
    batch = _image(4, 64, 64, seed=7)[None]
    with torch.inference_mode():
        a = make_runner(model, channels_last=False)(batch)
        b = make_runner(model, channels_last=True)(batch)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_normalisation_and_nodata_fill_use_the_band_mean() -> None:
    """Nodata pixels are fed as the band mean (0 after normalisation)."""
    model = nn.Conv2d(2, 1, 1, bias=False).eval()
    with torch.no_grad():
        model.weight.fill_(1.0)
    image = np.full((2, 64, 64), 5.0, np.float32)
    image[:, :, 32:] = np.nan
    norm = {"mean": [5.0, 5.0], "std": [2.0, 2.0]}
    prob = predict_raster(model, image, TilingOptions(tile=64, overlap=0), normalisation=norm)
    np.testing.assert_allclose(prob[:, :32], 0.5, atol=1e-6)  # (5-5)/2 -> logit 0
    assert np.isnan(prob[:, 32:]).all()


def test_layout_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        TileLayout.plan(100, 100, 3, tile=64, overlap=64)
    with pytest.raises(ValueError):
        TileLayout.plan(100, 100, 3, tile=0, overlap=0)


def test_fold_batch_norms_matches_and_leaves_the_model_alone() -> None:
    from slidewise.engine.imagery.segmodels import SegModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(SegModelConfig("unet", "resnet18", 4, 3)).eval()
    with torch.no_grad():  # batch norms with non-trivial statistics
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = {name: id(m) for name, m in model.named_modules()}
    folded = fold_batch_norms(model)
    assert folded is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert {name: id(m) for name, m in model.named_modules()} == modules
    x = torch.randn(2, 4, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)

    class Untraceable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 1, 3), nn.BatchNorm2d(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return self.bn(self.conv(x))
            return x

    odd = Untraceable().eval()
    assert fold_batch_norms(odd) is odd
    plain = nn.Conv2d(1, 1, 3)
    assert fold_batch_norms(plain) is plain


def _meta(architecture: str, encoder: str = "resnet18", tile_size: int = 0) -> Any:
    config = {"architecture": architecture, "encoder": encoder}
    return SimpleNamespace(tile_size=tile_size, config=config, architecture=architecture)


def test_default_tile_is_larger_on_a_cpu_for_fully_convolutional_models() -> None:
    unet = _meta("unet", tile_size=256)
    assert default_tile_size(unet, "cpu") == CPU_TILE == 1088
    assert default_tile_size(unet, "cuda") == DEFAULT_TILE  # GPU: batches of 576-px tiles
    assert default_tile_size(unet) == DEFAULT_TILE  # no device (exports, model cards)
    assert default_tile_size(_meta("unet"), torch.device("cpu")) == CPU_TILE  # no trained tile
    assert default_tile_size(_meta("unet", tile_size=1536), "cpu") == 1536  # trained larger
    # Global pooling or attention: always the training tile.
    assert default_tile_size(_meta("unet", "mit_b0", 512), "cpu") == 512
    assert default_tile_size(_meta("deeplabv3", tile_size=384), "cpu") == 384


def test_cpu_tile_computes_fewer_pixels_twice() -> None:
    # The reason for CPU_TILE: tiles advance by 1024 px instead of 512.
    for side in (1024, 2048, 8000):
        small = TileLayout.plan(side, side, 14, DEFAULT_TILE, 64)
        large = TileLayout.plan(side, side, 14, CPU_TILE, 64)
        assert large.redundancy < small.redundancy - 0.08, (side, large, small)
    assert TileLayout.plan(1024, 1024, 14, CPU_TILE, 64).n_tiles == 1  # 1024 + 2 x 32 margin
    assert round(TileLayout.plan(2048, 2048, 14, CPU_TILE, 64).redundancy, 3) == 1.129
    assert round(TileLayout.plan(2048, 2048, 14, DEFAULT_TILE, 64).redundancy, 3) == 1.266
