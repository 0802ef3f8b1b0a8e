"""Reports handed on: map thumbnails, summaries, provenance, units, figures in HTML and JSON.

Real data from tests/data: the Ecuador factor stack, DEM and inventories (susceptibility),
a Bijie image mask (mapping).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from engine_helpers import job_context
from rasterio.transform import from_origin
from scipy import ndimage

from slidewise.engine.core.report import UNITS_NOTE

DATA = Path(__file__).resolve().parents[1] / "data"
ECUADOR = DATA / "ecuador"
BIJIE_MASK = DATA / "bijie" / "test" / "masks" / "10105.png"
IMG = re.compile(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"')


def check_self_contained(html: str) -> None:
    """No resource is fetched: every src/href is embedded data, never a URL."""
    for attr in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert attr.startswith("data:image/png;base64,"), attr[:60]
    assert "http" not in " ".join(re.findall(r'(?:src|href)="([^"]{0,20})', html))
    assert "<script" not in html


def section_headings(html: str) -> list[str]:
    return re.findall(r"<h2>([^<]+)</h2>", html)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def susceptibility(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A logistic-regression model trained on lsl.csv, its map, and the evaluation report."""
    from slidewise.engine.susceptibility.evaluate import run_evaluate
    from slidewise.engine.susceptibility.predict import run_predict
    from slidewise.engine.susceptibility.train import run_train

    out = tmp_path_factory.mktemp("susc")
    model = out / "lr.safetensors"
    common = {"INVENTORY": str(ECUADOR / "lsl.csv"), "LABEL_FIELD": "lslpts"}
    run_train(
        {
            **common,
            "INPUT": str(ECUADOR / "ta.tif"),
            "METHOD": "lr",
            "N_BLOCKS": 4,
            "CV_FOLDS": 2,
            "OUTPUT": str(model),
            "OUTPUT_REPORT": str(out / "training.html"),
        },
        job_context("trainsusceptibility")[0],
    )
    prob = out / "prob.tif"
    run_predict(
        {"MODEL": str(model), "INPUT": str(ECUADOR / "ta.tif"), "OUTPUT": str(prob)},
        job_context("predictsusceptibility")[0],
    )
    html = out / "report.html"
    run_evaluate(
        {
            "INPUT": str(prob),
            "INVENTORY": str(ECUADOR / "landslides.csv"),
            "MODEL": str(model),
            "DEM": str(ECUADOR / "dem_10m.tif"),
            "OUTPUT": str(html),
        },
        job_context("evaluatesusceptibility")[0],
    )
    return {
        "html": html.read_text(encoding="utf-8"),
        "json": json.loads((out / "report.json").read_text()),
        "prob": prob,
        "model": model,
        "training_html": out / "training.html",
    }


def test_susceptibility_report_sections_map_and_summary(susceptibility: dict) -> None:
    html, numbers = susceptibility["html"], susceptibility["json"]
    assert section_headings(html) == [
        "Summary",
        "Map",
        "Point metrics",
        "Success and prediction rates",
        "Susceptibility classes",
        "Notes on the inputs",
        "Inputs and provenance",
    ]
    check_self_contained(html)
    figures = numbers["report"]["figures"]
    # Every figure of the HTML is in the JSON, under its key, and nothing else.
    assert len(IMG.findall(html)) == len(figures) == 6
    assert set(figures) == {
        "map",
        "precision_recall",
        "confusion_matrix",
        "roc",
        "rate_curves",
        "classes",
    }
    # The map: quantile classes over a hillshade of the DEM given.
    assert figures["map"]["data"]["hillshade_source"] == "dem_10m.tif band 1"
    shares = figures["map"]["data"]["class_area_percent"]
    assert sum(shares.values()) == pytest.approx(100, abs=0.05)
    assert all(abs(v - 20) < 2 for v in shares.values())
    # Method and training summary from the model file.
    summary = numbers["report"]["method"]
    assert summary["Method"] == "Logistic regression (one global model)"
    assert summary["Factors"] == "slope, cplan, cprof, elev, log10_carea"
    assert re.fullmatch(r"0\.\d{3} ± 0\.\d{3}", summary["Random CV AUC (2 folds, mean ± sd)"])
    assert summary["Blocks"] == "block raster lr_blocks.tif"
    assert "<td>Logistic regression (one global model)</td>" in html
    assert "<caption>Method and training</caption>" in html


def test_susceptibility_report_units_and_curves(susceptibility: dict) -> None:
    html, numbers = susceptibility["html"], susceptibility["json"]
    metrics = numbers["metrics"]
    assert UNITS_NOTE in html
    # Shares are per cent in the tables (the JSON keeps the job's fractions under metrics).
    assert f'<td class="num">{100 * metrics["f1"]:.2f}</td>' in html
    assert f'<td class="num">{metrics["f1"]:.4f}</td>' not in html
    for c in numbers["classes"]:
        assert f'<td class="num">{100 * c["area_share"]:.2f}</td>' in html
    pr = numbers["report"]["figures"]["precision_recall"]["data"]
    assert max(pr["recall_percent"]) == pytest.approx(100)
    at = int(np.argmin(np.abs(np.array(pr["threshold"]) - 0.5)))
    assert pr["recall_percent"][at] == pytest.approx(100 * metrics["recall"], abs=2)
    counts = numbers["report"]["figures"]["confusion_matrix"]["data"]["counts"]
    assert counts == [
        [metrics["true_negative"], metrics["false_positive"]],
        [metrics["false_negative"], metrics["true_positive"]],
    ]


def test_susceptibility_report_provenance(susceptibility: dict) -> None:
    record = susceptibility["json"]["report"]["provenance"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["date_utc"])
    assert record["slidewise_version"] not in ("", "unknown")
    by_name = {i["name"]: i for i in record["inputs"]}
    assert set(by_name) == {"INPUT", "INVENTORY", "MODEL", "DEM"}
    assert by_name["DEM"]["sha256"] == sha256(ECUADOR / "dem_10m.tif")
    assert by_name["INPUT"]["sha256"] == sha256(susceptibility["prob"])
    assert f"<td>{sha256(ECUADOR / 'dem_10m.tif')[:12]}</td>" in susceptibility["html"]


def test_hillshade_from_the_model_stack(susceptibility: dict) -> None:
    from slidewise.engine.susceptibility.evaluation_map import elevation_in_stack

    assert elevation_in_stack(str(susceptibility["model"])) == (str(ECUADOR / "ta.tif"), 4)


@pytest.fixture(scope="module")
def mapping(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A blurred, shifted Bijie mask as the probability map, the mask as the reference."""
    from PIL import Image as PilImage

    from slidewise.engine.mapping.evaluate import run_evaluate

    out = tmp_path_factory.mktemp("map")
    rgb = np.asarray(PilImage.open(BIJIE_MASK).convert("RGB"))
    ref = (rgb[..., 0] > 127) & (rgb[..., 1] > 127) & (rgb[..., 2] < 127)
    prob = ndimage.gaussian_filter(np.roll(ref, 6, axis=1).astype(np.float32), 5)
    prob = np.clip(prob + 0.15 * (np.indices(ref.shape)[0] % 40 < 3), 0, 1).astype(np.float32)
    paths = {}
    for name, band in (("prob", prob), ("ref", ref.astype(np.uint8))):
        paths[name] = out / f"{name}.tif"
        profile = {"driver": "GTiff", "width": band.shape[1], "height": band.shape[0]}
        profile |= {"count": 1, "dtype": str(band.dtype), "crs": "EPSG:32648"}
        profile["transform"] = from_origin(500000, 3000000, 0.8, 0.8)
        with rasterio.open(paths[name], "w", **profile) as dst:
            dst.write(band[None])
    html = out / "eval.html"
    result = run_evaluate(
        {
            "INPUT": str(paths["prob"]),
            "REFERENCE": str(paths["ref"]),
            "OUTPUT": str(out / "eval.json"),
            "OUTPUT_HTML": str(html),
        },
        job_context("evaluatemapping")[0],
    )
    return {
        "html": html.read_text(encoding="utf-8"),
        "json": json.loads((out / "eval.json").read_text()),
        "figures": result.figures,
    }


def test_mapping_report_map_curves_and_plain_labels(mapping: dict) -> None:
    html, numbers = mapping["html"], mapping["json"]
    check_self_contained(html)
    assert section_headings(html) == [
        "Summary",
        "Map",
        "Pixels",
        "Objects",
        "Inputs and provenance",
    ]
    assert "predicted_object_precision" not in html
    assert "Object precision (share of mapped landslides that hit one)" in html
    figures = numbers["report"]["figures"]
    assert set(figures) == {"map", "precision_recall", "confusion_matrix"}
    assert len(IMG.findall(html)) == 3
    # The curve at threshold 0.5 (a bin edge) is the job's own precision and recall.
    pr = figures["precision_recall"]["data"]
    at = pr["threshold"].index(0.5)
    assert pr["precision_percent"][at] == pytest.approx(100 * numbers["precision"], abs=1e-3)
    assert pr["recall_percent"][at] == pytest.approx(100 * numbers["recall"], abs=1e-3)
    # The map (not decimated at this size) counts exactly the confusion matrix.
    (_, fp), (fn, tp) = numbers["confusion_matrix"]["matrix"]
    outcome = figures["map"]["data"]["outcome_percent_of_marked_pixels"]
    assert outcome["hit"] == pytest.approx(100 * tp / (tp + fn + fp), abs=0.01)
    assert outcome["false alarm"] == pytest.approx(100 * fp / (tp + fn + fp), abs=0.01)
    assert f'<td class="num">{100 * numbers["f1"]:.2f}</td>' in html


def test_box_matching_is_greedy_by_score_at_iou_half() -> None:
    from slidewise.engine.detection.report import match_boxes

    reference = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.zeros((0, 4))]
    boxes = np.array([[1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 26, 30]], float)
    scores = np.array([0.6, 0.9, 0.8, 0.3])
    predictions = [(boxes, scores), (np.array([[0, 0, 5, 5]], float), np.array([0.7]))]
    matches = match_boxes(reference, predictions)
    # 0.9 takes the first box; 0.6 (IoU 0.81 with it) finds it taken; 0.3 has IoU 0.6.
    assert matches.scores.tolist() == [0.9, 0.8, 0.6, 0.3, 0.7]
    assert matches.hits.tolist() == [True, False, False, True, False]
    assert matches.at(0.5) == (1, 3, 1)
    assert matches.at(0.0) == (2, 3, 0)
    _, p, r = matches.curve()
    assert (p[50], r[50]) == (0.25, 0.5)


DETECTION = Path(__file__).resolve().parents[3] / "shared" / "data" / "detection"


@pytest.mark.skipif(not DETECTION.is_dir(), reason="detection data not available")
def test_detection_report_on_real_validation_boxes(tmp_path: Path) -> None:
    """Real Sichuan validation boxes; detections: each reference box shifted by a third of its
    width (IoU 0.5 only for some) and one false alarm per image."""
    from slidewise.engine.core.report import write_report
    from slidewise.engine.detection.annotations import read_detection_set
    from slidewise.engine.detection.report import detection_report, match_boxes

    data = read_detection_set(DETECTION / "events_rgb" / "valid")
    samples = data.samples[:4]
    predictions = []
    for i, s in enumerate(samples):
        shifted = s.boxes + np.array([1, 0, 1, 0]) * (s.boxes[:, 2:3] - s.boxes[:, 0:1]) / 3
        alarm = np.array([[0, 0, 20, 20]], np.float32)
        scores = [*np.linspace(0.9, 0.55, len(shifted)).tolist(), 0.6 + 0.05 * i]
        predictions.append((np.vstack([shifted, alarm]), np.asarray(scores)))
    training = {"metrics": {"map50": 0.4, "map": 0.2}, "history": [], "method": []}
    report = detection_report(samples, predictions, [0, 1, 2], training)
    html = report.html()
    check_self_contained(html)
    assert section_headings(html) == ["Summary", "Example", "Boxes"]
    figures = report.figures()
    assert (
        set(figures["figures"]) == {"example", "precision_recall"} and len(IMG.findall(html)) == 2
    )
    matches = match_boxes([s.boxes for s in samples], predictions)
    tp, fp, fn = matches.at(0.5)
    assert fp >= len(samples) and tp + fn == sum(len(s.boxes) for s in samples)
    assert figures["summary"]["F1 at score >= 0.5 (%)"] == pytest.approx(
        100 * 2 * tp / (2 * tp + fp + fn), abs=0.01
    )
    assert (
        f'<td>Hits (detections matching a reference landslide)</td><td class="num">{tp}</td>'
        in html
    )
    write_report(tmp_path / "d.html", html, figures)
    assert json.loads((tmp_path / "d.json").read_text())["figures"]["example"]["data"]["image"]


def test_training_report(susceptibility: dict) -> None:
    html = susceptibility["training_html"]
    text = html.read_text(encoding="utf-8")
    numbers = json.loads(html.with_suffix(".json").read_text())
    check_self_contained(text)
    headings = section_headings(text)
    # One report holds the whole training: the method comparison (with CV on), the
    # calibration, the blocks, then the factor analysis (importance and collinearity).
    assert headings[:2] == ["Summary", "Cross-validation"], headings
    assert headings[2:5] == ["Method comparison", "Calibration", "Blocks"], headings
    assert headings[-1] == "Inputs and provenance"
    assert len(headings) == 8, headings  # + factor importance and collinearity
    figures = numbers["report"]["figures"]
    assert {"cv", "reliability", "blocks"} <= set(figures)
    assert len(IMG.findall(text)) >= 4  # cv, reliability diagram, blocks, importance
    cv = numbers["training"]["cv"]
    assert figures["cv"]["data"]["Leave blocks out"]["auc_mean"] == cv["spatial_auc_mean"]
    assert figures["cv"]["data"]["Random folds"]["auc_sd"] == cv["random_auc_sd"]
    method = numbers["report"]["method"]
    assert method["Leave-blocks-out CV AUC (2 folds, mean ± sd)"] == (
        f"{cv['spatial_auc_mean']:.3f} ± {cv['spatial_auc_sd']:.3f}"
    )
    blocks = figures["blocks"]["data"]
    assert blocks["zones"] >= numbers["training"]["blocks_with_samples"]
    assert sum(blocks["area_percent"].values()) == pytest.approx(100, abs=0.05)
    inputs = {i["name"] for i in numbers["report"]["provenance"]["inputs"]}
    assert inputs == {"INPUT", "INVENTORY", "OUTPUT (model)"}


def test_meta_learning_summary_names_blocks_and_k() -> None:
    from slidewise.engine.core.modelfile import ModelMetadata
    from slidewise.engine.core.modelsummary import susceptibility_rows

    meta = ModelMetadata(
        "susceptibility",
        "maml-mlp",
        config={"method": "meta", "meta": {"support": 6, "iterations": 2000, "inner_steps": 5}},
        bands=["slope", "elev"],
        metrics={"cv": {"folds": 5, "spatial_auc_mean": 0.7512, "spatial_auc_sd": 0.0401}},
        extra={"blocks": {"source": "kmeans", "n_blocks": 12}},
    )
    rows = dict(susceptibility_rows(meta))
    assert rows["Method"].startswith("Block-wise meta-learning")
    assert rows["Blocks"] == "12 k-means clusters of the samples"
    assert rows["K (support samples per block)"] == 6
    assert rows["Leave-blocks-out CV AUC (5 folds, mean ± sd)"] == "0.751 ± 0.040"
    assert rows["Random CV AUC (5 folds, mean ± sd)"] is None


def test_bad_model_or_dem_is_refused_before_any_output(
    susceptibility: dict, tmp_path: Path
) -> None:
    from slidewise.engine.core.errors import InputError, ModelFileError
    from slidewise.engine.susceptibility.evaluate import run_evaluate

    html = tmp_path / "r.html"
    common = {"INPUT": str(susceptibility["prob"]), "INVENTORY": str(ECUADOR / "lsl.csv")}
    with pytest.raises(ModelFileError, match=r"ta\.tif"):
        run_evaluate(
            {**common, "MODEL": str(ECUADOR / "ta.tif"), "OUTPUT": str(html)},
            job_context("evaluatesusceptibility")[0],
        )
    with pytest.raises(InputError, match="DEM"):
        run_evaluate(
            {**common, "DEM": str(ECUADOR / "lsl.csv"), "OUTPUT": str(html)},
            job_context("evaluatesusceptibility")[0],
        )
    assert not list(tmp_path.iterdir())
