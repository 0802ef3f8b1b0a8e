"""Per-region decoders, pre-training and detection through PyQGIS and qgis_process.

Real data: the shipped Bijie pairs (two regions cut from them), the
Landslide4Sense-derived VOC images of ``../shared/data/detection``. One epoch
each: these tests check the mechanics and the messages, not accuracy (the
benchmarks in docs/benchmarks.md do that).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from plugin_helpers import BIJIE, SHARED, assert_fails, model_metadata, run_qgis_process

DETECTION = SHARED / "detection"
needs_detection = pytest.mark.skipif(
    not DETECTION.is_dir(), reason="../shared/data/detection not available"
)


def _georeferenced(source: Path, target: Path, pixel: float = 2.0) -> Path:
    """A GeoTIFF copy of a picture, placed on a UTM grid (the pictures have no CRS)."""
    info = json.loads(
        subprocess.run(
            ["gdalinfo", "-json", str(source)], capture_output=True, text=True, check=True
        ).stdout
    )
    width, height = info["size"]
    x0, y0 = 500000.0, 3000000.0
    subprocess.run(
        [
            "gdal_translate",
            "-q",
            "-of",
            "GTiff",
            "-a_srs",
            "EPSG:32648",
            "-a_ullr",
            str(x0),
            str(y0),
            str(x0 + width * pixel),
            str(y0 - height * pixel),
            str(source),
            str(target),
        ],
        check=True,
    )
    return target


def _read(path: str):
    """Band 1 of a raster as a list of rows (QGIS block reading, no numpy needed)."""
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(path)
    assert layer.isValid(), path
    provider = layer.dataProvider()
    block = provider.block(1, layer.extent(), layer.width(), layer.height())
    return [
        [None if block.isNoData(r, c) else block.value(r, c) for c in range(layer.width())]
        for r in range(layer.height())
    ]


@pytest.fixture(scope="module")
def regions(trained, qgis_app, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The trained Bijie model converted to region 'bijie', plus a region 'bijie_test'."""
    import processing

    out = tmp_path_factory.mktemp("regions")
    result = processing.run(
        "slidewise:addregion",
        {
            "MODEL": trained["result"]["OUTPUT"],
            "BASE_REGION": "bijie",
            "REGION": "bijie_test",
            "MODE": 0,
            "DATASET_TYPE": 0,
            "TRAIN_IMAGES": str(BIJIE / "test" / "images"),
            "TRAIN_MASKS": str(BIJIE / "test" / "masks"),
            "MASK_COLOR": "255,255,0",
            "EPOCHS": 1,
            "CHIP_SIZE": 128,
            "THRESHOLD": "0.5",
            "OUTPUT": str(out / "regions.safetensors"),
        },
    )
    return {"out": out, "result": result}


def test_add_region_reports_forgetting(regions) -> None:
    result = regions["result"]
    meta = model_metadata(result["OUTPUT"])
    assert meta["task"] == "multiregion"
    assert meta["extra"]["region_order"] == ["bijie", "bijie_test"]
    assert Path(result["MANIFEST"]).is_file()
    # Frozen mode: the old region cannot change, and the table says so.
    assert result["BIJIE_F1_DELTA"] == pytest.approx(0.0, abs=1e-9)
    assert result["BIJIE_F1_BEFORE"] == pytest.approx(result["BIJIE_F1_AFTER"])


def test_map_by_region_name_and_by_polygons(regions, qgis_app, tmp_path: Path) -> None:
    import processing
    from qgis.core import (
        QgsFeature,
        QgsField,
        QgsGeometry,
        QgsProject,
        QgsRasterLayer,
        QgsRectangle,
        QgsVectorFileWriter,
        QgsVectorLayer,
    )
    from qgis.PyQt.QtCore import QVariant

    image = _georeferenced(BIJIE / "test" / "images" / "10105.png", tmp_path / "scene.tif")
    model = regions["result"]["OUTPUT"]
    whole = {}
    for region in ("bijie", "bijie_test"):
        whole[region] = processing.run(
            "slidewise:maplandslides",
            {
                "INPUT": str(image),
                "MODEL": model,
                "REGION": region,
                "OUTPUT_PROBABILITY": str(tmp_path / f"{region}.tif"),
            },
        )["OUTPUT_PROBABILITY"]
    assert _read(whole["bijie"]) != _read(whole["bijie_test"])

    # Left half of the scene: region bijie; right half: bijie_test (field "zone").
    extent = QgsRasterLayer(str(image)).extent()
    middle = (extent.xMinimum() + extent.xMaximum()) / 2
    layer = QgsVectorLayer("Polygon?crs=EPSG:32648", "zones", "memory")
    layer.dataProvider().addAttributes([QgsField("zone", QVariant.String)])
    layer.updateFields()
    features = []
    for name, (x0, x1) in (
        ("bijie", (extent.xMinimum(), middle)),
        ("bijie_test", (middle, extent.xMaximum())),
    ):
        feature = QgsFeature(layer.fields())
        rect = QgsRectangle(x0, extent.yMinimum(), x1, extent.yMaximum())
        feature.setGeometry(QgsGeometry.fromRect(rect))
        feature.setAttribute("zone", name)
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    zones = str(tmp_path / "zones.gpkg")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    QgsVectorFileWriter.writeAsVectorFormatV2(
        layer, zones, QgsProject.instance().transformContext(), options
    )
    mixed = processing.run(
        "slidewise:maplandslides",
        {
            "INPUT": str(image),
            "MODEL": model,
            "REGION_POLYGONS": zones,
            "REGION_FIELD": "zone",
            "OUTPUT_PROBABILITY": str(tmp_path / "mixed.tif"),
            "OUTPUT_MASK": str(tmp_path / "mixed_mask.tif"),
        },
    )
    assert mixed["REGIONS"] == "bijie, bijie_test"
    rows = _read(mixed["OUTPUT_PROBABILITY"])
    left, right = _read(whole["bijie"]), _read(whole["bijie_test"])
    half = len(rows[0]) // 2
    for r in range(0, len(rows), 37):
        assert rows[r][: half - 1] == pytest.approx(left[r][: half - 1], abs=1e-5)
        assert rows[r][half + 1 :] == pytest.approx(right[r][half + 1 :], abs=1e-5)


def test_region_bad_inputs(regions, trained, tmp_path: Path) -> None:
    image = BIJIE / "test" / "images" / "10105.png"
    model = regions["result"]["OUTPUT"]
    assert_fails(
        "slidewise:maplandslides",
        {"INPUT": str(image), "MODEL": model, "REGION": "nowhere", "OUTPUT_MASK": "x.tif"},
        "no region 'nowhere'",
        tmp_path,
    )
    assert_fails(
        "slidewise:maplandslides",
        {"INPUT": str(image), "MODEL": model, "OUTPUT_MASK": str(tmp_path / "m.tif")},
        "choose the region",
        tmp_path,
    )
    assert_fails(
        "slidewise:maplandslides",
        {
            "INPUT": str(image),
            "MODEL": trained["result"]["OUTPUT"],
            "REGION": "bijie",
            "OUTPUT_MASK": str(tmp_path / "m.tif"),
        },
        "single decoder",
        tmp_path,
    )
    assert_fails(
        "slidewise:addregion",
        {
            "MODEL": model,
            "REGION": "bijie",
            "TRAIN_IMAGES": str(BIJIE / "test" / "images"),
            "TRAIN_MASKS": str(BIJIE / "test" / "masks"),
            "OUTPUT": str(tmp_path / "again.safetensors"),
        },
        "already has a region 'bijie'",
        tmp_path,
    )


@pytest.fixture(scope="module")
def detector(qgis_app, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An MAE-pre-trained encoder and a detector initialised from it (one epoch each)."""
    import processing

    if not DETECTION.is_dir():
        pytest.skip("../shared/data/detection not available")
    out = tmp_path_factory.mktemp("detection")
    encoder = processing.run(
        "slidewise:pretrainencoder",
        {
            "IMAGES": str(BIJIE / "train" / "images"),
            "BACKBONE": "resnet18",
            "CHIP_SIZE": 64,
            "EPOCHS": 1,
            "BATCH_SIZE": 4,
            "OUTPUT": str(out / "encoder.safetensors"),
        },
    )
    model = processing.run(
        "slidewise:traindetection",
        {
            "FORMAT": 0,
            "TRAIN": str(DETECTION / "l4s_rgb" / "train"),
            "VALID": str(DETECTION / "l4s_rgb" / "valid"),
            "MAX_TRAIN_IMAGES": 2,
            "MAX_VALID_IMAGES": 2,
            "EPOCHS": 1,
            "BATCH_SIZE": 2,
            "IMAGE_SIZE": 96,
            "ENCODER_WEIGHTS": encoder["OUTPUT"],
            "OUTPUT": str(out / "detector.safetensors"),
        },
    )
    return {"out": out, "encoder": encoder, "model": model}


@needs_detection
def test_pretrain_then_train_detector(detector) -> None:
    assert model_metadata(detector["encoder"]["OUTPUT"])["task"] == "encoder"
    assert model_metadata(detector["model"]["OUTPUT"])["task"] == "detection"
    # The figure Processing returns is the one the model file keeps for its chosen epoch.
    validation = model_metadata(detector["model"]["OUTPUT"])["metrics"]["validation"]
    assert detector["model"]["VALID_MAP50"] == pytest.approx(validation["map50"])
    assert validation["map"] <= validation["map50"]  # mAP@[.5:.95] never exceeds mAP@.5
    assert Path(detector["model"]["MANIFEST"]).is_file()


@needs_detection
def test_detect_with_detector_and_from_segmentation(detector, trained, tmp_path: Path) -> None:
    import processing
    from qgis.core import QgsVectorLayer

    scene = _georeferenced(DETECTION / "l4s_rgb" / "valid" / "100.jpg", tmp_path / "s.tif", 10.0)
    boxes = processing.run(
        "slidewise:detectlandslides",
        {
            "INPUT": str(scene),
            "MODEL": detector["model"]["OUTPUT"],
            "SCORE_THRESHOLD": 0.0,
            "OUTPUT": str(tmp_path / "boxes.gpkg"),
        },
    )
    layer = QgsVectorLayer(boxes["OUTPUT"])
    assert layer.isValid()
    assert {"score", "class"} <= set(layer.fields().names())
    assert layer.crs().authid() == "EPSG:32648"

    bijie = _georeferenced(BIJIE / "test" / "images" / "10105.png", tmp_path / "b.tif")
    from_map = processing.run(
        "slidewise:detectlandslides",
        {
            "INPUT": str(bijie),
            "MODEL": trained["result"]["OUTPUT"],
            "SOURCE": 1,
            "THRESHOLD": 0.3,
            "OUTPUT": str(tmp_path / "seg_boxes.gpkg"),
        },
    )
    seg = QgsVectorLayer(from_map["OUTPUT"])
    assert seg.isValid() and "score" in seg.fields().names()


@needs_detection
def test_detection_bad_inputs(detector, trained, tmp_path: Path) -> None:
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "a.jpg").write_bytes((DETECTION / "l4s_rgb" / "valid" / "100.jpg").read_bytes())
    (voc / "a.xml").write_text("")
    work = tmp_path / "work"
    work.mkdir()
    assert_fails(
        "slidewise:traindetection",
        {"TRAIN": str(voc), "EPOCHS": 1, "OUTPUT": str(work / "d.safetensors")},
        "empty",
        work,
    )
    assert_fails(
        "slidewise:detectlandslides",
        {
            "INPUT": str(BIJIE / "test" / "images" / "10105.png"),
            "MODEL": trained["result"]["OUTPUT"],
            "OUTPUT": str(work / "b.gpkg"),
        },
        "mapping",
        work,
    )
    assert_fails(
        "slidewise:detectlandslides",
        {"OUTPUT": str(work / "b.gpkg")},
        "probability raster",
        work,
    )


def _qgis_process_results(env: dict, alg: str, *args: str) -> dict:
    proc = run_qgis_process(env, "--json", "run", alg, "--", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout[proc.stdout.index("{") :])["results"]


@pytest.mark.slow
def test_qgis_process_training_algorithms(trained, qgis_process_env, tmp_path: Path) -> None:
    """addregion, pretrainencoder and traindetection as batch runs (one epoch each)."""
    results = _qgis_process_results(
        qgis_process_env,
        "slidewise:addregion",
        f"MODEL={trained['result']['OUTPUT']}",
        "BASE_REGION=bijie",
        "REGION=east",
        f"TRAIN_IMAGES={BIJIE / 'test' / 'images'}",
        f"TRAIN_MASKS={BIJIE / 'test' / 'masks'}",
        "MASK_COLOR=255,255,0",
        "EPOCHS=1",
        "CHIP_SIZE=128",
        f"OUTPUT={tmp_path / 'regions.safetensors'}",
    )
    assert model_metadata(results["OUTPUT"])["extra"]["region_order"] == ["bijie", "east"]
    assert results["BIJIE_F1_DELTA"] == pytest.approx(0.0, abs=1e-9)
    encoder = _qgis_process_results(
        qgis_process_env,
        "slidewise:pretrainencoder",
        f"IMAGES={BIJIE / 'train' / 'images'}",
        "CHIP_SIZE=64",
        "EPOCHS=1",
        "BATCH_SIZE=4",
        f"OUTPUT={tmp_path / 'encoder.safetensors'}",
    )
    assert model_metadata(encoder["OUTPUT"])["task"] == "encoder"
    if not DETECTION.is_dir():
        pytest.skip("../shared/data/detection not available")
    detector = _qgis_process_results(
        qgis_process_env,
        "slidewise:traindetection",
        f"TRAIN={DETECTION / 'l4s_rgb' / 'train'}",
        f"VALID={DETECTION / 'l4s_rgb' / 'valid'}",
        "MAX_TRAIN_IMAGES=2",
        "MAX_VALID_IMAGES=2",
        "EPOCHS=1",
        "BATCH_SIZE=2",
        "IMAGE_SIZE=96",
        f"ENCODER_WEIGHTS={encoder['OUTPUT']}",
        f"OUTPUT={tmp_path / 'detector.safetensors'}",
    )
    assert model_metadata(detector["OUTPUT"])["task"] == "detection"
    assert Path(detector["MANIFEST"]).is_file()


@pytest.mark.slow
def test_qgis_process_region_and_detection(
    regions, trained, qgis_process_env, tmp_path: Path
) -> None:
    image = BIJIE / "test" / "images" / "10138.png"
    results = _qgis_process_results(
        qgis_process_env,
        "slidewise:maplandslides",
        f"INPUT={image}",
        f"MODEL={regions['result']['OUTPUT']}",
        "REGION=bijie_test",
        f"OUTPUT_MASK={tmp_path / 'mask.tif'}",
    )
    assert Path(results["OUTPUT_MASK"]).is_file() and results["REGIONS"] == "bijie_test"
    results = _qgis_process_results(
        qgis_process_env,
        "slidewise:detectlandslides",
        f"INPUT={image}",
        f"MODEL={trained['result']['OUTPUT']}",
        "SOURCE=1",
        f"OUTPUT={tmp_path / 'boxes.gpkg'}",
    )
    from qgis.core import QgsVectorLayer

    boxes = QgsVectorLayer(results["OUTPUT"])
    assert boxes.isValid() and boxes.featureCount() == results["BOXES"]
