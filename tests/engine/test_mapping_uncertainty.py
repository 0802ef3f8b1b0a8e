"""maplandslides' OUTPUT_UNCERTAINTY: the spread of the 8 TTA members, tiled without seams.

Real data: a 160 x 192 crop of the held-out Bijie image 10105 (landslide edges inside),
mapped with the landslide model shipped with Slidewise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from engine_helpers import job_context, log_messages, write_geotiff
from torch import nn

from slidewise.engine.imagery.tile_cache import TileRowCache
from slidewise.engine.imagery.tiling import (
    D4_TRANSFORMS,
    TileRow,
    TilingOptions,
    make_runner,
    member_moments,
    predict_raster,
)
from slidewise.engine.mapping.apply import run_map
from slidewise.engine.mapping.shipped import shipped_model_path

BIJIE_IMAGE = (
    Path(__file__).resolve().parents[1] / "data" / "bijie" / "test" / "images" / "10105.png"
)
#: Rows and columns of the crop: a landslide body and its edges, and ground around it.
CROP = (slice(300, 460), slice(96, 288))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def crop(tmp_path_factory: pytest.TempPathFactory) -> str:
    from PIL import Image

    rgb = np.asarray(Image.open(BIJIE_IMAGE).convert("RGB"))[CROP].transpose(2, 0, 1)
    return write_geotiff(tmp_path_factory.mktemp("bijie") / "crop.tif", rgb)


def _map(crop: str, folder: Path, **extra: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    params = {
        "INPUT": crop,
        "OUTPUT_PROBABILITY": str(folder / "p.tif"),
        "OUTPUT_UNCERTAINTY": str(folder / "u.tif"),
        "BACKEND": "torch",
        **extra,
    }
    folder.mkdir(parents=True, exist_ok=True)
    ctx, stream = job_context("maplandslides")
    result = run_map(params, ctx)
    logs = log_messages(stream)
    with rasterio.open(folder / "p.tif") as p, rasterio.open(folder / "u.tif") as u:
        return p.read(1), u.read(1), {**result.figures, "log": logs}


@pytest.fixture(scope="module")
def mapped(crop: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, ...]:
    return _map(crop, tmp_path_factory.mktemp("one"))


def test_uncertainty_is_the_std_of_the_eight_members(crop: str, mapped: tuple[Any, ...]) -> None:
    prob, unc, figures = mapped
    assert figures["tta"] is True  # turned on by the output, and said so
    assert any("TTA is turned on" in m for m in figures["log"])
    assert np.isfinite(unc).all() and unc.min() >= 0.0
    # The crop is one tile: the output is exactly the members' mean and population std.
    from slidewise.engine.imagery.segmodels import load_mapping_model

    net, meta = load_mapping_model(str(shipped_model_path()))
    with rasterio.open(crop) as src:
        image = src.read().astype(np.float32)
    members = []
    for k, flip in D4_TRANSFORMS:
        turned = np.rot90(image[:, :, ::-1] if flip else image, k, axes=(1, 2))
        out = predict_raster(net, np.ascontiguousarray(turned), normalisation=meta.normalisation)
        assert out is not None
        back = np.rot90(out, -k)
        members.append(back[:, ::-1] if flip else back)
    stack = np.stack(members)
    np.testing.assert_allclose(prob, stack.mean(axis=0), atol=2e-5)
    np.testing.assert_allclose(unc, stack.std(axis=0), atol=2e-5)
    assert figures["uncertainty_mean"] == pytest.approx(float(unc.mean()), rel=1e-4)


def test_uncertainty_is_higher_along_predicted_edges(mapped: tuple[Any, ...]) -> None:
    from scipy import ndimage

    prob, unc, figures = mapped
    slide = prob >= figures["threshold"]
    assert 0.05 < slide.mean() < 0.6  # the crop holds landslide and ground
    edges = ndimage.binary_dilation(slide, iterations=2) & ~ndimage.binary_erosion(
        slide, iterations=2
    )
    inside = ndimage.binary_erosion(slide, iterations=6)
    # Along the outline of a mapped landslide a flip or turn of the image moves the
    # outline, so the members disagree more than inside the landslide (1.5x here).
    assert unc[edges].mean() > 1.3 * unc[inside].mean()


class _Symmetric(nn.Module):
    """Equivariant under flips and quarter turns: a 3 x 3 kernel with the D4 symmetries."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1, bias=False)
        kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, -4.0, 2.0], [1.0, 2.0, 1.0]]) / 20
        self.conv.weight.data[:] = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_members_that_agree_give_exactly_zero() -> None:
    image = np.random.default_rng(0).normal(size=(3, 96, 80)).astype(np.float32)
    options = TilingOptions(tile=64, overlap=32, tta=True, spread=True)
    both = predict_raster(_Symmetric(), image, options)
    assert both is not None and both.shape == (96, 80, 2)
    assert np.abs(both[..., 1]).max() < 1e-6  # float rounding of the turned convolutions
    moments = member_moments(iter([torch.full((2, 3), 0.7)] * 8))
    assert torch.all(moments[1] == 0.0)


def test_spread_is_seam_free_across_tiles() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    image = np.random.default_rng(1).normal(size=(3, 150, 130)).astype(np.float32)
    tiled = predict_raster(net, image, TilingOptions(tile=64, overlap=32, tta=True, spread=True))
    whole = predict_raster(net, image, TilingOptions(tile=256, overlap=32, tta=True, spread=True))
    assert tiled is not None and whole is not None
    assert whole[..., 1].mean() > 0.01  # a net that is not equivariant: members differ
    # The bound of tiling's own seam test (tests/engine/test_tiling.py).
    np.testing.assert_allclose(tiled, whole, atol=2e-3)
    hard = predict_raster(net, image, TilingOptions(tile=64, overlap=0, tta=True, spread=True))
    assert hard is not None and np.abs(hard[..., 1] - whole[..., 1]).max() > 2e-3
    # And the spread's probability is the TTA probability.
    plain = predict_raster(net, image, TilingOptions(tile=64, overlap=32, tta=True))
    np.testing.assert_allclose(tiled[..., 0], plain, atol=1e-6)
    runner = make_runner(net, tta=True, spread=True)
    assert runner(image[None, :, :64, :64]).shape == (1, 2, 64, 64)


def test_tile_cache_keeps_the_spread(tmp_path: Path) -> None:
    tile = np.random.default_rng(2).random((2, 32, 32)).astype(np.float32)
    row = TileRow(0, [(0, tile)], np.ones((32, 40), dtype=bool), None, 0, 8)
    cache = TileRowCache(tmp_path / "cache.npy")
    assert len(list(cache.keep([row]))) == 1
    cache.done = cache.count()
    (back,) = list(cache.rows())
    np.testing.assert_array_equal(back.tiles[0][1], tile)


def test_a_dask_task_sends_the_spread(crop: str) -> None:
    """What a Dask worker returns for a tile row (the task pickled, run here: no cluster).

    The job blends remote tile rows with the one-process code, in the same order
    (tests/engine/test_mapping_cluster.py), so the spread arrives intact.
    """
    import pickle

    from slidewise.engine.imagery.segmodels import load_mapping_model
    from slidewise.engine.imagery.tiling import TileLayout, open_source, predict_tile_row
    from slidewise.engine.mapping.map_cluster import MapTileRowTask

    model = str(shipped_model_path())
    tiling = TilingOptions(tile=96, overlap=32, device="cpu", tta=True, spread=True)
    task = pickle.loads(pickle.dumps(MapTileRowTask.for_tiling(crop, model, [1, 2, 3], tiling)))
    layout = TileLayout.plan(160, 192, 3, 96, 32, 1)
    remote = task((layout, 1))
    net, meta = load_mapping_model(model, device="cpu")
    runner = make_runner(net, meta.normalisation, tta=True, spread=True)
    source, reader = open_source(crop, [1, 2, 3])
    with reader:
        local = predict_tile_row(source, layout, runner, None, 1)
    assert len(remote.tiles) == len(layout.cols.starts) > 1
    for (_, a), (_, b) in zip(remote.tiles, local.tiles, strict=True):
        assert a.shape == (2, 96, 96) and a[1].max() > 0
        np.testing.assert_array_equal(a, b)


def test_multi_region_models_are_refused_before_any_output(crop: str, tmp_path: Path) -> None:
    from slidewise.engine.core.errors import InputError
    from slidewise.engine.core.modelfile import ModelMetadata, save_model

    # Only the model file's task matters to the refusal: a stand-in with one tensor.
    meta = ModelMetadata(task="multiregion", architecture="unet", bands=["r", "g", "b"])
    path = save_model(tmp_path / "regions.safetensors", {"w": torch.zeros(1)}, meta)
    out = tmp_path / "u.tif"
    params = {"INPUT": crop, "MODEL": str(path), "OUTPUT_UNCERTAINTY": str(out)}
    with pytest.raises(InputError, match="OUTPUT_UNCERTAINTY is written for single-decoder"):
        run_map(params, job_context("maplandslides")[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["regions.safetensors"]
