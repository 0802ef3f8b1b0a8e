"""Detection data: VOC (real l4s_rgb and events_rgb), size mismatch, COCO, masks, bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import SHARED
from PIL import Image

from slidewise.engine.core.errors import InputError
from slidewise.engine.detection.annotations import (
    read_coco,
    read_mask_pairs,
    read_voc,
    resolve_box_frame,
)
from slidewise.engine.detection.boxes import boxes_from_mask, boxes_from_polygons
from slidewise.engine.detection.data import DetectionDataset, d4_boxes
from slidewise.engine.detection.metrics import detection_map
from slidewise.engine.imagery.augment import d4_transform

DATA = SHARED / "detection"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="detection data not available")


def _jpg(path: Path, width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)


def _xml(path: Path, boxes: list[list[float]], size: tuple[int, int] | None = None) -> None:
    objs = "".join(
        f"<object><name>landslide</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for b in boxes
    )
    sz = (
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        if size
        else ""
    )
    path.write_text(f"<annotation><filename>{path.stem}.jpg</filename>{sz}{objs}</annotation>")


# --------------------------------------------------------------------------- real data


@needs_data
def test_voc_l4s_rgb_boxes_are_image_pixels_despite_xml_size() -> None:
    warnings: list[str] = []
    data = read_voc(DATA / "l4s_rgb" / "valid", warn=warnings.append)
    assert len(data) == 309 and data.n_boxes == 1338 and data.n_negatives == 0
    assert data.band_names == ["red", "green", "blue"]
    assert {(s.width, s.height) for s in data.samples} == {(224, 224)}
    top = max(float(s.boxes.max()) for s in data.samples if len(s.boxes))
    assert top == 224.0  # past the stated 128: not scaled
    assert any("state 128 x 128" in w and "not scaled" in w for w in warnings)


@needs_data
def test_voc_events_rgb_names_with_spaces() -> None:
    data = read_voc(DATA / "events_rgb" / "valid")
    assert len(data) == 33 and data.n_boxes == 115
    assert all(" " in s.name and s.image.is_file() for s in data.samples)
    assert not data.notes  # sizes agree, nothing clipped


# --------------------------------------------------------------------------- frames and bad VOC


def test_box_frame_decision() -> None:
    past_stated = np.array([[0, 0, 200, 50]], np.float32)
    assert resolve_box_frame((128, 128), (224, 224), past_stated)[0] == "image"
    past_real = np.array([[0, 0, 300, 50]], np.float32)
    assert resolve_box_frame((400, 400), (200, 200), past_real)[0] == "annotation"
    inside = np.array([[0, 0, 50, 50]], np.float32)
    frame, reason = resolve_box_frame((100, 100), (200, 200), inside)
    assert frame == "image" and "BOX_COORDINATES" in reason
    with pytest.raises(InputError, match="beyond both"):
        resolve_box_frame((100, 100), (200, 200), np.array([[0, 0, 300, 10]], np.float32))


def test_voc_scales_boxes_when_they_are_in_the_stated_frame(tmp_path: Path) -> None:
    _jpg(tmp_path / "a.jpg", 100, 50)
    _xml(tmp_path / "a.xml", [[100, 20, 180, 60]], size=(200, 100))  # past the real 100 px
    data = read_voc(tmp_path)
    np.testing.assert_allclose(data.samples[0].boxes, [[50, 10, 90, 30]])
    assert "scaled by 0.5 x 0.5" in data.notes[0]
    # Ambiguous: kept unless BOX_COORDINATES says otherwise.
    _xml(tmp_path / "a.xml", [[10, 10, 40, 40]], size=(200, 100))
    np.testing.assert_allclose(read_voc(tmp_path).samples[0].boxes, [[10, 10, 40, 40]])
    scaled = read_voc(tmp_path, box_frame="annotation").samples[0].boxes
    np.testing.assert_allclose(scaled, [[5, 5, 20, 20]])


def test_voc_bad_inputs(tmp_path: Path) -> None:
    _jpg(tmp_path / "in side.jpg", 64, 64)
    _xml(tmp_path / "in side.xml", [[-5, 10, 30, 70], [70, 10, 90, 20], [5, 5, 20, 20]])
    _jpg(tmp_path / "neg.jpg", 64, 64)
    _xml(tmp_path / "neg.xml", [])
    warnings: list[str] = []
    data = read_voc(tmp_path, warn=warnings.append)
    boxes = data.samples[0].boxes
    np.testing.assert_allclose(boxes, [[0, 10, 30, 64], [5, 5, 20, 20]])  # clipped; one dropped
    assert any("1 box(es) reaching outside" in w and "1 degenerate" in w for w in warnings)
    assert data.n_negatives == 1 and any("kept as negatives" in n for n in data.notes)
    (tmp_path / "empty.xml").write_text("")
    with pytest.raises(InputError, match=r"'empty\.xml' is empty"):
        read_voc(tmp_path)
    (tmp_path / "empty.xml").write_text("<annotation><object><name>x</name></object></annotation>")
    with pytest.raises(InputError, match="no <bndbox>"):
        read_voc(tmp_path)
    (tmp_path / "empty.xml").unlink()
    _xml(tmp_path / "lonely.xml", [[1, 1, 5, 5]])
    with pytest.raises(InputError, match=r"1 annotation file.*have no image.*lonely\.xml"):
        read_voc(tmp_path)
    with pytest.raises(InputError, match=r"no \.xml"):
        read_voc(_empty_dir(tmp_path))


def _empty_dir(root: Path) -> Path:
    d = root / "void"
    d.mkdir()
    return d


# --------------------------------------------------------------------------- COCO, masks, polygons


def test_coco_reader(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    _jpg(tmp_path / "images" / "a.jpg", 40, 30)
    _jpg(tmp_path / "images" / "b.jpg", 40, 30)
    doc = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 6, 10, 8], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 30], "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "landslide"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    data = read_coco(tmp_path / "ann.json")
    np.testing.assert_allclose(data.samples[0].boxes, [[5, 6, 15, 14]])
    assert data.n_negatives == 1
    assert any("crowd" in n for n in data.notes)
    # A folder holding exactly one .json stands for it (the Processing folder picker).
    np.testing.assert_allclose(read_coco(tmp_path).samples[0].boxes, [[5, 6, 15, 14]])
    (tmp_path / "bad.json").write_text("")
    with pytest.raises(InputError, match=r"holds 2 \.json files"):
        read_coco(tmp_path)
    with pytest.raises(InputError, match="is empty"):
        read_coco(tmp_path / "bad.json")
    doc["images"].append({"id": 3, "file_name": "gone.jpg"})
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"gone\.jpg"):
        read_coco(tmp_path / "ann.json")


def test_boxes_from_mask_and_pairs(tmp_path: Path) -> None:
    mask = np.zeros((40, 50), bool)
    mask[2:12, 3:13] = True  # 100 px
    mask[12, 13] = True  # diagonal neighbour: joins with 8-connectivity
    mask[30:33, 40:43] = True  # 9 px: below min_area
    boxes, areas, _ = boxes_from_mask(mask, min_area=50)
    np.testing.assert_array_equal(boxes, [[3, 2, 14, 13]])
    assert areas.tolist() == [101]
    boxes4, _, _ = boxes_from_mask(mask, min_area=1, connectivity=1)
    assert len(boxes4) == 3
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    _jpg(tmp_path / "images" / "t1.jpg", 50, 40)
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "masks" / "t1.png")
    data = read_mask_pairs(tmp_path, min_area=50)
    np.testing.assert_array_equal(data.samples[0].boxes, [[3, 2, 14, 13]])


def test_boxes_from_polygons() -> None:
    import shapely
    from rasterio.transform import from_origin

    t = from_origin(1000.0, 2000.0, 10.0, 10.0)
    polys = [shapely.box(1050, 1900, 1100, 1950), shapely.box(900, 1990, 1020, 2100)]
    boxes = boxes_from_polygons(polys, t, 20, 20)
    np.testing.assert_allclose(boxes, [[5, 5, 10, 10], [0, 0, 2, 1]])


def test_d4_boxes_follow_the_image() -> None:
    h, w = 12, 20
    mask = torch.zeros(h, w)
    mask[2:5, 3:9] = 1
    box = torch.tensor([[3.0, 2.0, 9.0, 5.0]])
    for k in range(8):
        moved = d4_transform(mask, k).numpy() > 0
        expected, _, _ = boxes_from_mask(moved)
        np.testing.assert_allclose(d4_boxes(box, k, w, h).numpy(), expected, err_msg=f"k={k}")


def test_dataset_fills_nodata_and_augments(tmp_path: Path) -> None:
    rgba = np.full((16, 16, 4), 200, np.uint8)
    rgba[:4, :4, 3] = 0  # transparent = nodata
    Image.fromarray(rgba).save(tmp_path / "a.png")
    _xml(tmp_path / "a.xml", [[2, 3, 6, 9]])
    data = read_voc(tmp_path)
    ds = DetectionDataset(data.samples, [0, 1, 2], [7.0, 8.0, 9.0], augment=True)
    image, target = ds[0]
    assert torch.isfinite(image).all() and float(image[0].min()) == 7.0
    assert target["boxes"].shape == (1, 4) and target["labels"].tolist() == [1]


# --------------------------------------------------------------------------- metrics


def test_map_hand_computed() -> None:
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)]
    # One hit, one false positive ranked below it, one miss: precision 1 up to
    # recall 0.5 -> 51 of COCO's 101 recall points.
    r = detection_map(
        gt, [np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float)], [np.array([0.9, 0.8])]
    )
    assert r["map50"] == pytest.approx(51 / 101) and r["map"] == pytest.approx(51 / 101)
    # IoU 0.62: a hit at thresholds 0.50, 0.55, 0.60 only -> mAP = 3/10.
    r = detection_map([gt[0][:1]], [np.array([[0, 0, 10, 6.2]])], [np.array([0.9])])
    assert r["map50"] == pytest.approx(1.0) and r["map"] == pytest.approx(0.3)
    # A false positive on a negative image ranked above the hit: precision 1/2.
    r = detection_map(
        [gt[0][:1], np.zeros((0, 4))],
        [np.array([[0, 0, 10, 10]]), np.array([[0, 0, 5, 5]])],
        [np.array([0.5]), np.array([0.9])],
    )
    assert r["map50"] == pytest.approx(0.5)
    assert detection_map(gt, [np.zeros((0, 4))], [np.zeros(0)])["map50"] == 0.0
    assert math.isnan(detection_map([np.zeros((0, 4))], [np.zeros((0, 4))], [np.zeros(0)])["map"])
