"""Mapping datasets on the real files: L4S h5, Bijie pairs, Chattogram GeoTIFF tiles."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import SHARED, bijie_subset

from slidewise.engine.core.errors import InputError
from slidewise.engine.imagery.augment import d4_inverse, d4_transform, random_d4
from slidewise.engine.imagery.chips import (
    L4S_MEAN,
    L4S_STD,
    ChipDataset,
    chip_grid,
    l4s_normalisation,
    make_chips,
)
from slidewise.engine.imagery.datasets import (
    ChipRequest,
    DatasetSpec,
    discover_l4s,
    discover_pairs,
    load_scenes,
    prepare_mapping_data,
    resolve_bands,
)
from slidewise.engine.imagery.labels import IGNORE, LabelMapping, decode_mask, parse_color
from slidewise.engine.imagery.scenes import Chip, PairScene, RasterScene
from slidewise.engine.imagery.splits import spatial_split

DATA = SHARED / "mapping"
L4S = DATA / "l4s_patches"
BIJIE = DATA / "bijie"
CHATTOGRAM = DATA / "chattogram_s2"

needs_l4s = pytest.mark.skipif(not L4S.is_dir(), reason="L4S patches not available")
needs_bijie = pytest.mark.skipif(not BIJIE.is_dir(), reason="Bijie pairs not available")
needs_chattogram = pytest.mark.skipif(not CHATTOGRAM.is_dir(), reason="Chattogram tiles missing")


# --------------------------------------------------------------------------- helpers


def _l4s_layout(tmp: Path, n: int = 3) -> tuple[Path, dict[str, np.ndarray]]:
    """Copy real L4S images to TrainData/img and write masks with the L4S layout."""
    import h5py

    root = tmp / "TrainData"
    (root / "img").mkdir(parents=True)
    (root / "mask").mkdir()
    masks = {}
    for src in sorted(L4S.glob("image_*.h5"))[:n]:
        number = src.stem.split("_")[1]
        shutil.copy(src, root / "img" / src.name)
        with h5py.File(src, "r") as f:
            slope = f["img"][:, :, 12]
        mask = (slope > np.quantile(slope, 0.8)).astype(np.uint8)  # synthetic labels
        with h5py.File(root / "mask" / f"mask_{number}.h5", "w") as f:
            f.create_dataset("mask", data=mask)
        masks[number] = mask
    return root, masks


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


# --------------------------------------------------------------------------- L4S h5


@needs_l4s
def test_l4s_reader_pairs_by_number_and_reads_real_images(tmp_path: Path) -> None:
    import h5py

    root, masks = _l4s_layout(tmp_path)
    for given in (root, root / "img"):  # TrainData folder or its img folder
        found = discover_l4s(given)
        assert [(i.stem.split("_")[1], m.stem.split("_")[1]) for i, m in found] == [
            (k, k) for k in sorted(masks)
        ]
    scenes = load_scenes(DatasetSpec("l4s_h5", str(root / "img"), str(root / "mask")))
    scene = scenes[0]
    assert (scene.height, scene.width) == (128, 128)
    assert scene.band_names[-2:] == ["slope", "dem"]
    with h5py.File(scene.image_path, "r") as f:  # type: ignore[attr-defined]
        raw = f["img"][:]
    chip = Chip(0, 10, 20, 32, 40)
    got = scene.read_image(chip, [0, 12, 13])
    assert got.shape == (3, 32, 40)
    np.testing.assert_allclose(got, np.moveaxis(raw[10:42, 20:60, [0, 12, 13]], -1, 0), rtol=1e-6)
    number = scene.name.split("_")[1].split(".")[0]
    np.testing.assert_array_equal(scene.read_label(Chip(0, 0, 0, 128, 128)), masks[number])


@needs_l4s
def test_l4s_normalisation_constants_applied(tmp_path: Path) -> None:
    root, _ = _l4s_layout(tmp_path, n=2)
    scenes = load_scenes(DatasetSpec("l4s_h5", str(root)))
    norm = l4s_normalisation([3, 2, 1], 14)
    assert norm["mean"] == [-0.0625, -0.1277, -0.3074]
    assert norm["std"] == [0.8869, 0.8860, 0.8775]
    assert len(L4S_MEAN) == len(L4S_STD) == 14
    ds = ChipDataset(scenes, make_chips(scenes, 128, 128), [3, 2, 1], norm, 128)
    image, label = ds[0]
    raw = scenes[0].read_image(Chip(0, 0, 0, 128, 128), [3, 2, 1])
    expected = (raw - np.array(norm["mean"], np.float32)[:, None, None]) / np.array(
        norm["std"], np.float32
    )[:, None, None]
    np.testing.assert_allclose(image.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert label.dtype == torch.uint8
    with pytest.raises(InputError, match="14 Landslide4Sense bands"):
        l4s_normalisation([0, 1, 2], 3)


@needs_l4s
def test_l4s_bad_layouts(tmp_path: Path) -> None:
    import h5py

    root, _ = _l4s_layout(tmp_path, n=3)
    victim = sorted((root / "mask").iterdir())[0]
    victim.unlink()
    with pytest.raises(InputError, match="without a mask"):
        load_scenes(DatasetSpec("l4s_h5", str(root)))
    with h5py.File(victim, "w") as f:
        f.create_dataset("mask", data=np.zeros((64, 64), np.uint8))
    with pytest.raises(InputError, match="image's size"):
        load_scenes(DatasetSpec("l4s_h5", str(root)))
    with h5py.File(victim, "w") as f:
        f.create_dataset("label", data=np.zeros((128, 128), np.uint8))
    with pytest.raises(InputError, match="no dataset 'mask'"):
        load_scenes(DatasetSpec("l4s_h5", str(root)))


# --------------------------------------------------------------------------- Bijie pairs


@needs_bijie
def test_bijie_yellow_masks_decode_to_landslide_fraction() -> None:
    from PIL import Image

    name = "10009.png"
    rgb = np.asarray(Image.open(BIJIE / "masks" / name).convert("RGB"))
    yellow = np.all(rgb == (255, 255, 0), axis=2)
    assert 0.05 < yellow.mean() < 0.08  # 6.35 % landslide in this mask
    for mapping in (LabelMapping(), LabelMapping(mask_color=parse_color("255,255,0"))):
        scene = PairScene(BIJIE / "images" / name, BIJIE / "masks" / name, mapping)
        labels = scene.read_label(Chip(0, 0, 0, scene.height, scene.width))
        assert set(np.unique(labels).tolist()) == {0, 1}
        np.testing.assert_array_equal(labels == 1, yellow)
    image = scene.read_image(Chip(0, 0, 0, 8, 8), [0, 1, 2])
    assert image.shape == (3, 8, 8) and image.dtype == np.float32


def test_grey_mask_conventions() -> None:
    assert decode_mask(np.array([[0, 255]], np.uint8), LabelMapping()).tolist() == [[0, 1]]
    assert decode_mask(np.array([[0, 1]], np.uint8), LabelMapping()).tolist() == [[0, 1]]
    chatto = LabelMapping(landslide=(2,), ignore=(0,))
    assert decode_mask(np.array([[0, 1, 2]]), chatto).tolist() == [[IGNORE, 0, 1]]
    with pytest.raises(InputError, match="LANDSLIDE_VALUES"):
        decode_mask(np.array([[0, 1, 2]]), LabelMapping())
    two_colours = np.zeros((10, 10, 3), np.uint8)
    two_colours[:5] = (255, 255, 0)
    two_colours[5:] = (255, 0, 0)
    with pytest.raises(InputError, match="MASK_COLOR"):
        decode_mask(two_colours, LabelMapping())
    red = decode_mask(two_colours, LabelMapping(mask_color=(255, 0, 0)))
    assert red[:5].sum() == 0 and red[5:].all()
    assert parse_color("#ffff00") == (255, 255, 0)
    with pytest.raises(InputError, match="MASK_COLOR"):
        parse_color("yellowish")


@needs_bijie
def test_pairs_bad_inputs(tmp_path: Path) -> None:
    from PIL import Image

    img, msk = bijie_subset(tmp_path, ["10009.png", "10013.png"])
    (img / "10040.png").symlink_to(BIJIE / "images" / "10040.png")  # no mask
    with pytest.raises(InputError, match=r"1 image\(s\) without a mask: 10040\.png"):
        discover_pairs(img, msk)
    (img / "10040.png").unlink()
    (msk / "10013.png").unlink()
    Image.new("RGB", (100, 100)).save(msk / "10013.png")
    with pytest.raises(InputError, match="masks must have the image's size"):
        load_scenes(DatasetSpec("pairs", str(img), str(msk)))
    (msk / "10013.png").unlink()
    with pytest.raises(InputError, match="do not match"):
        discover_pairs(img, msk)
    # No landslide pixels in the training data: an error (a label mapping problem).
    for name in ("10009.png", "10013.png"):
        if (msk / name).exists():
            (msk / name).unlink()
        size = Image.open(img / name).size
        Image.new("L", size, 0).save(msk / name)
    with pytest.raises(InputError, match="no landslide pixels"):
        prepare_mapping_data(ChipRequest(DatasetSpec("pairs", str(img), str(msk)), chip_size=256))


def test_band_selection() -> None:
    names = ["red", "green", "blue", "nir"]
    assert resolve_bands(None, names) == [0, 1, 2, 3]
    assert resolve_bands("4,3,2", names) == [3, 2, 1]
    assert resolve_bands(["NIR", "red"], names) == [3, 0]
    with pytest.raises(InputError, match="Band 5 is out of range"):
        resolve_bands("1,5", names)
    with pytest.raises(InputError, match="Unknown band 'swir'"):
        resolve_bands("swir", names)


@needs_bijie
def test_split_by_whole_images_and_normalisation_fitted_on_train_only(tmp_path: Path) -> None:
    names = sorted(p.name for p in (BIJIE / "images").iterdir())[:8]
    img, msk = bijie_subset(tmp_path, names)
    data = prepare_mapping_data(
        ChipRequest(
            DatasetSpec("pairs", str(img), str(msk)), chip_size=256, valid_fraction=0.25, seed=3
        )
    )
    assert data.split.method == "scenes"
    train_scenes = {c.scene for c in data.train.chips}
    valid_scenes = {c.scene for c in data.valid.chips}
    assert train_scenes and valid_scenes and not train_scenes & valid_scenes
    assert data.valid_stats[:, 0].sum() > 0
    # The fitted mean is the mean of training chips only.
    scenes = data.train.scenes
    s = np.zeros(3)
    n = 0
    for chip in data.train.chips:
        a = scenes[chip.scene].read_image(chip, [0, 1, 2]).reshape(3, -1)
        s += a.sum(axis=1)
        n += a.shape[1]
    np.testing.assert_allclose(data.normalisation["mean"], s / n, rtol=1e-6)
    everything = np.mean(
        [scenes[c.scene].read_image(c, [0]).mean() for c in data.train.chips + data.valid.chips]
    )
    assert abs(everything - data.normalisation["mean"][0]) > 1e-3
    assert data.normalisation["kind"] == "fit" and data.band_names == ["red", "green", "blue"]


# --------------------------------------------------------------------------- Chattogram GeoTIFF


@needs_chattogram
def test_chattogram_labels_mapped() -> None:
    import rasterio

    tile = "000000000001.tif"
    scene = RasterScene(
        CHATTOGRAM / "images" / tile,
        CHATTOGRAM / "labels" / tile,
        LabelMapping(landslide=(2,), ignore=(0,)),
    )
    with rasterio.open(CHATTOGRAM / "labels" / tile) as src:
        raw = src.read(1)
    labels = scene.read_label(Chip(0, 0, 0, 256, 256))
    np.testing.assert_array_equal(labels == 1, raw == 2)
    np.testing.assert_array_equal(labels == 0, raw == 1)
    np.testing.assert_array_equal(labels == IGNORE, raw == 0)
    assert scene.read_image(Chip(0, 0, 0, 16, 16), [3, 2, 1]).shape == (3, 16, 16)


@needs_chattogram
def test_chattogram_polygons_rasterised_like_the_label_raster(tmp_path: Path) -> None:
    import rasterio
    import shapely
    from rasterio.features import shapes

    from slidewise.engine.geo.vectors import read_vector, write_vector

    tile = "000000000001.tif"
    with rasterio.open(CHATTOGRAM / "labels" / tile) as src:
        raw = src.read(1)
        geoms = [
            shapely.geometry.shape(g)
            for g, v in shapes((raw == 2).astype(np.uint8), transform=src.transform)
            if v == 1
        ]
        crs = src.crs
    gpkg = tmp_path / "slides.gpkg"
    write_vector(gpkg, geoms, {"id": np.arange(len(geoms))}, crs)
    scene = RasterScene(CHATTOGRAM / "images" / tile, polygons=read_vector(gpkg))
    labels = scene.read_label(Chip(0, 0, 0, 256, 256))
    np.testing.assert_array_equal(labels == 1, raw == 2)
    part = scene.read_label(Chip(0, 100, 40, 64, 64))
    np.testing.assert_array_equal(part == 1, raw[100:164, 40:104] == 2)


@needs_chattogram
def test_chattogram_stripe_split_has_no_overlapping_chips() -> None:
    spec = DatasetSpec(
        "geotiff",
        str(CHATTOGRAM / "images"),
        str(CHATTOGRAM / "labels"),
        mapping=LabelMapping(landslide=(2,), ignore=(0,)),
    )
    scenes = load_scenes(spec)
    assert len(scenes) == 100 and len({s.group for s in scenes}) == 1
    train = make_chips(scenes, 128, 64)
    valid = make_chips(scenes, 128, 128)
    split = spatial_split(scenes, train, valid, 0.2, seed=0)
    assert split.method == "stripes" and split.dropped > 0
    tb = [scenes[c.scene].bounds(c) for c in split.train]
    vb = [scenes[c.scene].bounds(c) for c in split.valid]
    assert tb and vb
    assert not any(_overlap(a, b) for a in tb for b in vb)


def test_exclusive_validation_chips_count_each_pixel_once() -> None:
    class Blank(PairScene):
        def __init__(self, height: int, width: int) -> None:
            self.height, self.width = height, width

    scenes = [Blank(300, 130), Blank(256, 256), Blank(90, 70)]
    for i, scene in enumerate(scenes):
        counts = np.zeros((scene.height, scene.width), int)
        for chip in make_chips(scenes, 128, 128, exclusive=True):
            if chip.scene == i:
                r, c = chip.row + chip.own_row, chip.col + chip.own_col
                counts[r : chip.row + chip.height, c : chip.col + chip.width] += 1
        assert (counts == 1).all()


def test_chip_grid_covers_and_stays_inside() -> None:
    grid = chip_grid(300, 130, 128, 100)
    covered = np.zeros((300, 130), bool)
    for r, c, h, w in grid:
        assert r + h <= 300 and c + w <= 130 and (h, w) == (128, 128)
        covered[r : r + h, c : c + w] = True
    assert covered.all()
    assert chip_grid(50, 60, 128, 128) == [(0, 0, 50, 60)]


# --------------------------------------------------------------------------- augmentation


def test_d4_transforms_are_the_eight_symmetries() -> None:
    x = torch.arange(12.0).view(1, 3, 4)[..., :3]  # asymmetric 3 x 3
    x = torch.arange(9.0).view(1, 3, 3)
    outs = {tuple(d4_transform(x, k).flatten().tolist()) for k in range(8)}
    assert len(outs) == 8
    for k in range(8):
        assert torch.equal(d4_inverse(d4_transform(x, k), k), x)


def test_random_d4_keeps_image_and_mask_aligned() -> None:
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(16, 12, 12, generator=g) > 0.5).to(torch.uint8)
    image = torch.stack([mask.float() * 10, torch.rand(16, 12, 12, generator=g)], dim=1)
    out_img, out_mask = random_d4(image, mask, g)
    assert torch.equal(out_img[:, 0], out_mask.float() * 10)
    assert not torch.equal(out_mask, mask)  # something moved
    # Non-square chips keep their shape.
    rect_img, rect_mask = random_d4(image[..., :8], mask[..., :8], g)
    assert rect_img.shape == image[..., :8].shape
    assert torch.equal(rect_img[:, 0], rect_mask.float() * 10)
