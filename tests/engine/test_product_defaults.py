"""The defaults of issue 12's products, each on real data: a changed default must fail here.

- Polygon post-processing (``maplandslides``' MIN_AREA, MAX_HOLE_AREA, OPENING_RADIUS,
  CLOSING_RADIUS, SIMPLIFY_TOLERANCE as the job reads them from the spec): polygon counts on
  the demo model's probability of the held-out Bijie image 10105 (docs/products.md).
- CALIBRATION (the spec's default): expected calibration error on the 174 real out-of-block
  predictions of the demo's Ecuador model.
The BLEND_WIDTH default is tested on the Ecuador map in ``test_susceptibility_blending.py``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import shapely
from affine import Affine
from PIL import Image

from slidewise.contract.specs import spec_of
from slidewise.engine.geo.postprocess import PolygonOptions, postprocess_mask, resolve_settings
from slidewise.engine.mapping.apply import MapParams
from slidewise.engine.susceptibility.calibration import (
    brier_score,
    cross_fitted,
    expected_calibration_error,
)

DATA = Path(__file__).resolve().parents[1] / "data"
#: floor(50 p) of the probability that maplandslides wrote for 10105.png (512 x 720) with the
#: demo's mapping model: v >= 25 is exactly the job's mask at its threshold 0.5.
DEMO_MAP = DATA / "bijie" / "maps" / "demo_probability_10105.png"
OOB = DATA / "ecuador" / "meta_out_of_block_predictions.csv"
#: The job's grid for a PNG without georeference: 1 "m" pixels, y going down.
PIXELS = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


@pytest.fixture(scope="module")
def demo_map() -> tuple[np.ndarray, np.ndarray]:
    codes = np.asarray(Image.open(DEMO_MAP))
    return codes >= 25, (codes + 0.5) / 50.0


def polygons(demo_map, options: PolygonOptions) -> tuple[np.ndarray, dict]:
    mask, prob = demo_map
    settings = resolve_settings(options, PIXELS, None, mask.shape[0])
    return postprocess_mask(mask, prob, PIXELS, None, settings)


def test_polygon_defaults_on_a_real_bijie_map(demo_map) -> None:
    """882 raw components (741 of 10 px or less) -> 138 polygons, as maplandslides wrote.

    Minimum area 12 px would give 191 polygons, 20 px 121; opening radius 2: 108; closing 2: 75.
    """
    defaults = PolygonOptions.from_job(
        MapParams.from_params({"INPUT": "10105.png", "MODEL": "model.safetensors"})
    )
    off, _ = polygons(demo_map, PolygonOptions.off())
    kept, fields = polygons(demo_map, defaults)
    assert len(off) == 882
    assert len(kept) == pytest.approx(138, abs=4)
    assert fields["area_m2"].min() >= 16.0  # MIN_AREA: 16 pixels
    holes = int(shapely.get_num_interior_rings(kept).sum())
    vertices = int(shapely.get_num_coordinates(kept).sum())
    # MAX_HOLE_AREA 32 px (16 px: 57 holes, 64 px: 15) and a one-pixel simplification
    # (half a pixel: 4,992 vertices, two pixels: 1,984).
    assert holes == pytest.approx(27, abs=3)
    assert vertices == pytest.approx(3246, rel=0.05)
    # Each default does its part: switched off alone, the output changes as it should.
    no_min, f = polygons(demo_map, replace(defaults, min_area=0.0))
    assert len(no_min) > 1.5 * len(kept) and f["area_m2"].min() < 16.0
    no_fill, _ = polygons(demo_map, replace(defaults, max_hole_area=0.0))
    assert int(shapely.get_num_interior_rings(no_fill).sum()) > 2 * holes
    no_open, _ = polygons(demo_map, replace(defaults, opening_radius=0))
    assert len(no_open) < 0.5 * len(kept)  # the opening cuts the threads that chain specks
    no_close, _ = polygons(demo_map, replace(defaults, closing_radius=0))
    assert len(no_close) > 1.5 * len(kept)
    raw_outline, _ = polygons(demo_map, replace(defaults, simplify_tolerance=0.0))
    assert int(shapely.get_num_coordinates(raw_outline).sum()) > 1.4 * vertices


def test_default_calibration_on_real_out_of_block_predictions() -> None:
    """The spec's CALIBRATION, cross-fitted: ECE 0.21 -> 0.066, Brier 0.211 -> 0.167."""
    default = next(
        p.default for p in spec_of("trainsusceptibility").params if p.name == "CALIBRATION"
    )
    table = np.loadtxt(OOB, delimiter=",", skiprows=1)
    y, p, fold = table[:, 0], table[:, 1], table[:, 2].astype(int)
    q = cross_fitted(y, p, fold, default)
    assert expected_calibration_error(y, p) > 0.2
    assert expected_calibration_error(y, q) < 0.08
    assert brier_score(y, q) < 0.175 < brier_score(y, p)
    # A continuous probability: the quantile classes of the map must not collapse.
    assert len(np.unique(np.round(q, 3))) > 50


def test_training_report_shows_the_calibration(tmp_path: Path) -> None:
    """The training report's Calibration section: method, scores before/after, reliability."""
    from slidewise.engine.susceptibility.calibration import calibration_figures
    from slidewise.engine.susceptibility.calibration_report import write_calibration_report
    from slidewise.engine.susceptibility.training_report import calibration_section

    table = np.loadtxt(OOB, delimiter=",", skiprows=1)
    y, p, fold = table[:, 0], table[:, 1], table[:, 2].astype(int)
    figures = calibration_figures(y, p, fold)
    report = write_calibration_report(str(tmp_path / "model.safetensors"), figures, "platt")
    assert "Made " in report.read_text(encoding="utf-8")  # date and version
    before, after = figures["none"], figures["platt"]
    section = calibration_section(
        {
            "method": "platt",
            "samples": len(y),
            "brier_before": before["brier"],
            "brier_after": after["brier"],
            "ece_before": before["ece"],
            "ece_after": after["ece"],
            "report": str(report),
        }
    )
    assert section is not None and calibration_section(None) is None
    cells = {row[0]: row[1] for row in section.tables[0].rows}
    assert cells["Calibration"] == "Platt scaling"
    assert cells["Expected calibration error, raw → calibrated"] == (
        f"{before['ece']:.3f} → {after['ece']:.3f}"
    )
    assert len(section.images) == 1 and section.images[0].png.startswith(b"\x89PNG")
    assert set(section.images[0].data) == {"none", "platt"}
