"""Tests of the evaluatesusceptibility job on the real Ecuador data.

The probability raster is made from real data: a logistic regression fitted on
the 350 samples of ``lsl.csv`` (5 factors) applied window by window to the
factor raster ``ta.tif``; it is evaluated against the 1,535-point inventory
``landslides.csv`` (175 landslides).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from engine_helpers import SHARED
from sklearn import metrics as skm

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext
from slidewise.engine.core.protocol import Reporter
from slidewise.engine.core.runtime import RuntimeOptions
from slidewise.engine.geo.raster import iter_windows, output_profile, read_masked

DATA = SHARED / "susceptibility" / "ecuador"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")

FACTORS = ["slope", "cplan", "cprof", "elev", "log10_carea"]


def read_csv(path: Path) -> dict[str, np.ndarray]:
    from slidewise.engine.geo.tables import read_table

    return read_table(path)


def write_csv(path: Path, columns: dict[str, np.ndarray]) -> Path:
    names = list(columns)
    lines = [",".join(names)]
    for row in zip(*(columns[n] for n in names), strict=True):
        lines.append(",".join(repr(float(v)) if not isinstance(v, str) else v for v in row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def prob_raster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Probability raster: logistic regression on lsl.csv applied to ta.tif by windows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    table = read_csv(DATA / "lsl.csv")
    X = np.column_stack([table[f] for f in FACTORS])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(X, table["lslpts"].astype(int))
    out = tmp_path_factory.mktemp("prob") / "prob.tif"
    with rasterio.open(DATA / "ta.tif") as src:
        assert list(src.descriptions) == FACTORS
        profile = output_profile(
            {"width": src.width, "height": src.height, "crs": src.crs, "transform": src.transform},
            count=1,
        )
        with rasterio.open(out, "w", **profile) as dst:
            for read, write, inner in iter_windows(src.width, src.height, block=128):
                data, valid = read_masked(src, read)
                block = data[:, inner[0], inner[1]]
                ok = valid[inner]
                prob = np.full(ok.shape, np.nan, dtype=np.float32)
                if ok.any():
                    prob[ok] = model.predict_proba(block[:, ok].T)[:, 1]
                dst.write(prob[None], window=write)
    return out


def run_job(params: dict) -> tuple[object, list[dict]]:
    from slidewise.engine.susceptibility.evaluate import run_evaluate

    stream = io.StringIO()
    ctx = JobContext(
        name="evaluatesusceptibility", options=RuntimeOptions(), reporter=Reporter(stream)
    )
    result = run_evaluate(params, ctx)
    messages = [json.loads(line) for line in stream.getvalue().splitlines()]
    return result, messages


def logs(messages: list[dict]) -> str:
    return "\n".join(m["message"] for m in messages if m["type"] == "log")


def sample_raster(path: Path, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Independent point sampling with rasterio's ``sample`` (NaN on nodata)."""
    with rasterio.open(path) as src:
        vals = np.array([v[0] for v in src.sample(zip(x, y, strict=True), indexes=1)], float)
    return vals


# --------------------------------------------------------------------------- unit


def test_windowed_histogram_equals_numpy(prob_raster: Path) -> None:
    from slidewise.engine.susceptibility.evaluation_rasters import probability_histogram

    with rasterio.open(prob_raster) as src:
        full = src.read(1)
        summary = probability_histogram(src, bins=1000, block=64)
    valid = full[np.isfinite(full)].astype(np.float64)
    expected, _ = np.histogram(valid, bins=1000, range=(0.0, 1.0))
    np.testing.assert_array_equal(summary.counts, expected)
    assert summary.n_valid == valid.size == full.size - 619
    assert summary.vmin == valid.min() and summary.vmax == valid.max()
    # Small raster: the break sample holds every valid value.
    assert summary.sample.size == valid.size


def test_read_pixels_equals_full_array(prob_raster: Path) -> None:
    from slidewise.engine.susceptibility.evaluation_rasters import read_pixels

    rng = np.random.default_rng(1)
    with rasterio.open(prob_raster) as src:
        full = src.read(1).astype(np.float64)
        rows = rng.integers(0, src.height, 3000)
        cols = rng.integers(0, src.width, 3000)
        got = read_pixels(src, rows, cols, block=50)
    np.testing.assert_array_equal(got, full[rows, cols])


def test_rate_curve_random_map_is_diagonal() -> None:
    from slidewise.engine.susceptibility.evaluation_statistics import rate_curve

    rng = np.random.default_rng(0)
    edges = np.linspace(0, 1, 1001)
    area = np.histogram(rng.random(400_000), bins=edges)[0]
    curve = rate_curve(area, edges, rng.random(5000))
    assert abs(curve.auc - 0.5) < 0.02
    assert np.all(np.diff(curve.area_pct) >= 0) and np.all(np.diff(curve.landslide_pct) >= 0)
    assert curve.area_pct[-1] == pytest.approx(100) and curve.landslide_pct[-1] == pytest.approx(
        100
    )
    # A perfect map: every landslide in the highest bin.
    best = rate_curve(area, edges, np.ones(100))
    assert best.auc > 0.99


def test_class_statistics_sums() -> None:
    from slidewise.engine.susceptibility.evaluation_statistics import class_statistics

    table = class_statistics(np.array([50, 30, 20, 0]), np.array([1, 2, 7, 0]), list("abcd"))
    assert sum(c["area_share"] for c in table) == pytest.approx(1)
    assert sum(c["landslide_share"] for c in table) == pytest.approx(1)
    assert table[2]["frequency_ratio"] == pytest.approx(0.7 / 0.2)
    assert np.isnan(table[3]["frequency_ratio"])


def test_parse_labels() -> None:
    from slidewise.engine.susceptibility.evaluation_inventory import parse_labels

    np.testing.assert_array_equal(
        parse_labels(np.array(["TRUE", "false", "1", "0", "", "Yes"]), "l", "t"),
        [1, 0, 1, 0, -1, 1],
    )
    np.testing.assert_array_equal(parse_labels(np.array([1.0, 0.0, np.nan]), "l", "t"), [1, 0, -1])
    with pytest.raises(InputError, match="other than 1/0"):
        parse_labels(np.array([0.0, 2.0]), "l", "t")


# --------------------------------------------------------------------------- job


def test_job_metrics_report_and_curves(prob_raster: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.html"
    result, messages = run_job(
        {
            "INPUT": str(prob_raster),
            "INVENTORY": str(DATA / "landslides.csv"),
            "TRAINING": str(DATA / "lsl.csv"),
            "OUTPUT": str(out),
        }
    )
    # Independent metrics: rasterio sampling + scikit-learn.
    inv = read_csv(DATA / "landslides.csv")
    values = sample_raster(prob_raster, inv["x"], inv["y"])
    ok = np.isfinite(values)
    y_true, scores = inv["lslpts"][ok].astype(int), values[ok]
    y_pred = (scores >= 0.5).astype(int)
    expected = {
        "roc_auc": skm.roc_auc_score(y_true, scores),
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "precision": skm.precision_score(y_true, y_pred, zero_division=0),
        "recall": skm.recall_score(y_true, y_pred, zero_division=0),
        "f1": skm.f1_score(y_true, y_pred, zero_division=0),
        "kappa": skm.cohen_kappa_score(y_true, y_pred),
    }
    for key, value in expected.items():
        assert result.figures[key] == pytest.approx(value, abs=1e-12), key
    assert result.figures["n_positive"] == int(y_true.sum()) == 175
    assert result.figures["n_negative"] == int((y_true == 0).sum())
    assert 0.6 < result.figures["roc_auc"] < 0.95  # a real, imperfect model

    report = json.loads((tmp_path / "eval.json").read_text())
    assert result.outputs == {"OUTPUT": str(out), "JSON": str(tmp_path / "eval.json")}
    for name in ("prediction", "success"):
        curve = report["curves"][name]
        area, slides = np.array(curve["area_pct"]), np.array(curve["landslide_pct"])
        assert np.all(np.diff(area) >= 0) and np.all(np.diff(slides) >= 0)
        assert area[0] == 0 and slides[0] == 0
        assert area[-1] == pytest.approx(100) and slides[-1] == pytest.approx(100)
        assert 0.5 < curve["auc"] < 1
    # Independent prediction-rate AUC: rank all pixels, trapezoid over landslides.
    with rasterio.open(prob_raster) as src:
        full = src.read(1)
    pix = np.sort(full[np.isfinite(full)])[::-1]
    ls = scores[y_true == 1]
    frac_area = np.searchsorted(-pix, -ls, side="left") / pix.size  # area with higher values
    expected_rate_auc = 1 - frac_area.mean()
    assert report["prediction_rate_auc"] == pytest.approx(expected_rate_auc, abs=0.005)
    # The success rate (training points) must be at least as high as the prediction rate here.
    assert report["success_rate_auc"] > 0.5

    classes = report["classes"]
    assert [c["name"] for c in classes] == ["very low", "low", "moderate", "high", "very high"]
    assert sum(c["area_share"] for c in classes) == pytest.approx(1)
    assert sum(c["landslide_share"] for c in classes) == pytest.approx(1)
    assert sum(c["pixels"] for c in classes) == full.size - 619
    assert sum(c["landslides"] for c in classes) == 175
    # Quantile classes: about equal areas.
    assert all(abs(c["area_share"] - 0.2) < 0.01 for c in classes)
    for c in classes:
        assert c["frequency_ratio"] == pytest.approx(c["landslide_share"] / c["area_share"])
    assert classes[-1]["frequency_ratio"] > classes[0]["frequency_ratio"]

    html = out.read_text()
    assert (
        html.count('<img src="data:image/png;base64,') == 6
    )  # map, PR, confusion, ROC, rates, classes
    assert f"{result.figures['roc_auc']:.4f}" in html
    assert f"{classes[-1]['frequency_ratio']:.4f}" in html
    assert not list(tmp_path.glob(".*partial*"))
    assert "labels from column 'lslpts'" in logs(messages)
    assert messages[-1]["type"] in ("log", "progress")


def test_job_random_raster_rate_auc_near_half(prob_raster: Path, tmp_path: Path) -> None:
    with rasterio.open(prob_raster) as src:
        profile = src.profile
        valid = np.isfinite(src.read(1))
    rand = np.random.default_rng(3).random(valid.shape).astype(np.float32)
    rand[~valid] = np.nan
    path = tmp_path / "random.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rand[None])
    result, _ = run_job(
        {
            "INPUT": str(path),
            "INVENTORY": str(DATA / "landslides.csv"),
            "OUTPUT": str(tmp_path / "r.html"),
        }
    )
    # 175 landslides: standard error of the AUC is about 0.29 / sqrt(175) = 0.022.
    assert abs(result.figures["prediction_rate_auc"] - 0.5) < 0.08
    assert abs(result.figures["roc_auc"] - 0.5) < 0.08


def test_job_classed_raster_and_natural_breaks(prob_raster: Path, tmp_path: Path) -> None:
    from slidewise.engine.susceptibility.classify import apply_breaks, class_breaks

    with rasterio.open(prob_raster) as src:
        prob = src.read(1)
        profile = src.profile
    breaks = class_breaks(prob, 5, "quantile")
    classed = tmp_path / "classes.tif"
    profile.update(dtype="uint8", nodata=0, predictor=2)
    with rasterio.open(classed, "w", **profile) as dst:
        dst.write(apply_breaks(prob, breaks)[None])
    common = {"INPUT": str(prob_raster), "INVENTORY": str(DATA / "landslides.csv")}
    computed, _ = run_job({**common, "OUTPUT": str(tmp_path / "a.html")})
    given, _ = run_job({**common, "CLASSED": str(classed), "OUTPUT": str(tmp_path / "b.html")})
    for a, b in zip(computed.figures["classes"], given.figures["classes"], strict=True):
        assert (a["pixels"], a["landslides"]) == (b["pixels"], b["landslides"])
    natural, _ = run_job(
        {
            **common,
            "CLASSIFICATION": "natural_breaks",
            "N_CLASSES": 4,
            "OUTPUT": str(tmp_path / "c.html"),
        }
    )
    assert len(natural.figures["classes"]) == 4
    assert sum(c["area_share"] for c in natural.figures["classes"]) == pytest.approx(1)


def test_job_unlabelled_points_draw_negatives(prob_raster: Path, tmp_path: Path) -> None:
    inv = read_csv(DATA / "landslides.csv")
    pos = inv["lslpts"] == 1
    path = write_csv(tmp_path / "slides.csv", {"X": inv["x"][pos], "Y": inv["y"][pos]})
    result, messages = run_job(
        {
            "INPUT": str(prob_raster),
            "INVENTORY": str(path),
            "NEGATIVE_RATIO": 2,
            "SEED": 5,
            "BUFFER": 50,
            "OUTPUT": str(tmp_path / "u.html"),
        }
    )
    assert result.figures["n_positive"] == 175
    assert result.figures["n_negative"] == 350
    assert "drawn at random" in logs(messages)
    report = json.loads((tmp_path / "u.json").read_text())
    assert "farther than 50 map units" in report["negatives"]
    again, _ = run_job(
        {
            "INPUT": str(prob_raster),
            "INVENTORY": str(path),
            "NEGATIVE_RATIO": 2,
            "SEED": 5,
            "BUFFER": 50,
            "OUTPUT": str(tmp_path / "u2.html"),
        }
    )
    assert again.figures["roc_auc"] == result.figures["roc_auc"]  # seeded


def test_job_polygon_inventory(prob_raster: Path, tmp_path: Path) -> None:
    import shapely
    from rasterio.features import rasterize

    from slidewise.engine.geo.vectors import write_vector

    inv = read_csv(DATA / "landslides.csv")
    pos = inv["lslpts"] == 1
    polys = shapely.buffer(shapely.points(inv["x"][pos], inv["y"][pos]), 25.0)
    path = write_vector(
        tmp_path / "polys.gpkg", polys, {"id": np.arange(pos.sum())}, "EPSG:32717", "Polygon"
    )
    result, _ = run_job(
        {"INPUT": str(prob_raster), "INVENTORY": str(path), "OUTPUT": str(tmp_path / "p.html")}
    )
    with rasterio.open(prob_raster) as src:
        prob = src.read(1)
        burned = rasterize(list(polys), out_shape=prob.shape, transform=src.transform) > 0
    expected_pixels = int(np.sum(burned & np.isfinite(prob)))
    assert result.figures["n_positive"] == expected_pixels  # every pixel once
    assert result.figures["n_negative"] == expected_pixels  # NEGATIVE_RATIO 1
    classes = result.figures["classes"]
    assert sum(c["landslides"] for c in classes) == expected_pixels
    assert 0.5 < result.figures["prediction_rate_auc"] < 1


# --------------------------------------------------------------------------- bad inputs


def test_inventory_in_other_crs_is_reprojected(prob_raster: Path, tmp_path: Path) -> None:
    import shapely
    from rasterio.warp import transform

    from slidewise.engine.geo.vectors import write_vector

    inv = read_csv(DATA / "landslides.csv")
    lon, lat = transform("EPSG:32717", "EPSG:4326", inv["x"], inv["y"])
    path = write_vector(
        tmp_path / "inv.gpkg",
        shapely.points(lon, lat),
        {"lslpts": inv["lslpts"].astype(np.int32)},
        "EPSG:4326",
        "Point",
    )
    geo, messages = run_job(
        {"INPUT": str(prob_raster), "INVENTORY": str(path), "OUTPUT": str(tmp_path / "g.html")}
    )
    utm, _ = run_job(
        {
            "INPUT": str(prob_raster),
            "INVENTORY": str(DATA / "landslides.csv"),
            "OUTPUT": str(tmp_path / "u.html"),
        }
    )
    assert "reprojected" in logs(messages) and "EPSG:4326" in logs(messages)
    for key in ("roc_auc", "accuracy", "kappa", "n_positive", "n_negative", "prediction_rate_auc"):
        assert geo.figures[key] == pytest.approx(utm.figures[key]), key


def test_partly_outside_points_are_dropped_with_count(prob_raster: Path, tmp_path: Path) -> None:
    inv = read_csv(DATA / "landslides.csv")
    x = inv["x"].copy()
    x[:100] += 1e5
    path = write_csv(tmp_path / "part.csv", {"x": x, "y": inv["y"], "lslpts": inv["lslpts"]})
    _, messages = run_job(
        {"INPUT": str(prob_raster), "INVENTORY": str(path), "OUTPUT": str(tmp_path / "o.html")}
    )
    assert "100 of 1535 features lie outside the raster" in logs(messages)


def _expect_input_error(params: dict, match: str, out: Path) -> None:
    with pytest.raises(InputError, match=match):
        run_job(params)
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert not list(out.parent.glob(".*partial*"))


def test_inventory_outside_raster(prob_raster: Path, tmp_path: Path) -> None:
    inv = read_csv(DATA / "landslides.csv")
    path = write_csv(
        tmp_path / "far.csv", {"x": inv["x"] + 1e6, "y": inv["y"], "lslpts": inv["lslpts"]}
    )
    out = tmp_path / "e.html"
    _expect_input_error(
        {"INPUT": str(prob_raster), "INVENTORY": str(path), "OUTPUT": str(out)}, "No feature", out
    )


def test_no_landslides_among_points(prob_raster: Path, tmp_path: Path) -> None:
    inv = read_csv(DATA / "landslides.csv")
    neg = inv["lslpts"] == 0
    path = write_csv(
        tmp_path / "neg.csv", {"x": inv["x"][neg], "y": inv["y"][neg], "label": inv["lslpts"][neg]}
    )
    out = tmp_path / "e.html"
    _expect_input_error(
        {"INPUT": str(prob_raster), "INVENTORY": str(path), "OUTPUT": str(out)}, "no landslide", out
    )


@pytest.mark.parametrize(
    ("field", "match"),
    [
        ({"LABEL_FIELD": "slide"}, "no label column 'slide'.*lslpts"),
        ({"X_FIELD": "east"}, "no column 'east'"),
    ],
    ids=["label", "coordinate"],
)
def test_missing_column(prob_raster: Path, tmp_path: Path, field: dict, match: str) -> None:
    out = tmp_path / "e.html"
    params = {"INPUT": str(prob_raster), "INVENTORY": str(DATA / "landslides.csv"), **field}
    _expect_input_error({**params, "OUTPUT": str(out)}, match, out)


def test_all_points_on_nodata(prob_raster: Path, tmp_path: Path) -> None:
    from slidewise.engine.geo.samples import apply_affine

    with rasterio.open(prob_raster) as src:
        rows, cols = np.nonzero(~np.isfinite(src.read(1)))
        xs, ys = apply_affine(src.transform, cols[:40] + 0.5, rows[:40] + 0.5)
    path = write_csv(tmp_path / "nd.csv", {"x": np.asarray(xs), "y": np.asarray(ys)})
    out = tmp_path / "e.html"
    _expect_input_error(
        {"INPUT": str(prob_raster), "INVENTORY": str(path), "OUTPUT": str(out)}, "nodata", out
    )


def test_not_a_probability_raster(tmp_path: Path) -> None:
    out = tmp_path / "e.html"
    _expect_input_error(
        {
            "INPUT": str(DATA / "ta.tif"),
            "INVENTORY": str(DATA / "landslides.csv"),
            "OUTPUT": str(out),
        },
        "not probabilities",
        out,
    )


def test_parameters_are_read_with_the_contract() -> None:
    from slidewise.engine.susceptibility.evaluate import read_options
    from slidewise.engine.susceptibility.evaluation_inventory import InventoryColumns

    base = {"INPUT": "p.tif", "INVENTORY": "i.csv", "OUTPUT": "r.html"}
    p = read_options(base, run_seed=7)
    assert (p.seed, p.n_classes, p.classification, p.threshold) == (7, 5, "quantile", 0.5)
    assert (p.negative_ratio, p.buffer, p.training, p.classed) == (1.0, 0.0, None, None)
    assert p.columns == InventoryColumns(label="label", label_given=False, x="x", y="y")
    # qgis_process passes enums by index; a named label column must exist.
    q = read_options({**base, "SEED": 3, "CLASSIFICATION": "1", "LABEL_FIELD": " Slide "}, 7)
    assert (q.seed, q.classification) == (3, "natural_breaks")
    assert q.columns.label == "Slide" and q.columns.label_given
    assert not read_options({**base, "LABEL_FIELD": "LABEL"}, 0).columns.label_given
    with pytest.raises(InputError, match=r"^THRESHOLD must be between 0 and 1, got 1\.5\.$"):
        read_options({**base, "THRESHOLD": 1.5}, 0)
    with pytest.raises(InputError, match=r"^N_CLASSES must be between 2 and 255, got 300\.$"):
        read_options({**base, "N_CLASSES": 300}, 0)
    with pytest.raises(InputError, match="NEGATIVE_RATIO must be between"):
        read_options({**base, "NEGATIVE_RATIO": 0}, 0)
    with pytest.raises(InputError, match=r"Missing required parameter.*INVENTORY"):
        read_options({"INPUT": "p.tif", "OUTPUT": "r.html"}, 0)


def test_buffer_zero_is_three_pixels(prob_raster: Path, tmp_path: Path) -> None:
    inv = read_csv(DATA / "landslides.csv")
    pos = inv["lslpts"] == 1
    path = write_csv(tmp_path / "slides.csv", {"x": inv["x"][pos], "y": inv["y"][pos]})
    with rasterio.open(prob_raster) as src:
        three = 3 * max(src.res)
    run_job(
        {
            "INPUT": str(prob_raster),
            "INVENTORY": str(path),
            "BUFFER": 0,
            "OUTPUT": str(tmp_path / "b.html"),
        }
    )
    report = json.loads((tmp_path / "b.json").read_text())
    assert f"farther than {three:g} map units" in report["negatives"]


def test_bad_parameters(prob_raster: Path, tmp_path: Path) -> None:
    base = {"INPUT": str(prob_raster), "INVENTORY": str(DATA / "landslides.csv")}
    with pytest.raises(InputError, match=r"\.html"):
        run_job({**base, "OUTPUT": str(tmp_path / "x.txt")})
    with pytest.raises(InputError, match="THRESHOLD"):
        run_job({**base, "OUTPUT": str(tmp_path / "x.html"), "THRESHOLD": 1.5})
    with pytest.raises(InputError, match="CLASSIFICATION"):
        run_job({**base, "OUTPUT": str(tmp_path / "x.html"), "CLASSIFICATION": "jenks"})
    with pytest.raises(InputError, match="Unknown parameter"):
        run_job({**base, "OUTPUT": str(tmp_path / "x.html"), "FOO": 1})
    with pytest.raises(InputError, match="does not exist"):
        run_job(
            {**base, "INVENTORY": str(tmp_path / "none.csv"), "OUTPUT": str(tmp_path / "x.html")}
        )


# --------------------------------------------------------------------------- report


def test_report_is_self_contained_and_atomic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from slidewise.engine.core.report import (
        Image,
        Section,
        Table,
        figure_png,
        html_report,
        new_figure,
        write_report,
    )

    fig = new_figure(3, 2)
    fig.add_subplot().plot([0, 1], [0, 1])
    png = figure_png(fig)
    assert png.startswith(b"\x89PNG")
    doc = html_report(
        "T <&>",
        [
            Section(
                "S",
                ["a < b"],
                [Table(["k", "v"], [["auc", 0.91234567], ["n", 3], ["x", float("nan")]])],
                [Image(png, "cap")],
            )
        ],
    )
    assert "T &lt;&amp;&gt;" in doc and "a &lt; b" in doc
    assert '<td class="num">0.9123</td>' in doc and '<td class="num">–</td>' in doc
    assert doc.count('<img src="data:image/png;base64,') == 1
    assert "http" not in doc  # no external resources
    out = tmp_path / "r.html"
    write_report(out, doc, {"auc": np.float64(0.5), "bad": float("nan"), "arr": np.arange(3)})
    assert json.loads((tmp_path / "r.json").read_text()) == {
        "auc": 0.5,
        "bad": None,
        "arr": [0, 1, 2],
    }

    # A failure while writing leaves the previous files untouched and no partial files.
    original = Path.write_text

    def failing(self: Path, *args: object, **kwargs: object) -> int:
        if self.suffix == ".html":
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing)
    with pytest.raises(OSError, match="disk full"):
        write_report(out, "<html>new</html>", {"auc": 0.7})
    monkeypatch.undo()
    assert out.read_text() == doc
    assert json.loads((tmp_path / "r.json").read_text())["auc"] == 0.5
    assert not list(tmp_path.glob(".*partial*"))
