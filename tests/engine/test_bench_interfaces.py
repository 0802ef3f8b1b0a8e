"""The benchmark command lines that checks outside this repository call, on tiny real inputs.

Each benchmark runs as ``python -m slidewise.bench.NAME`` with the documented
arguments and must write the documented JSON keys. The settings are far too
small for meaningful numbers: these tests guard the interface, the numbers
are in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import BIJIE, SHARED

L4S_RGB = SHARED / "detection" / "l4s_rgb"


def _run(module: str, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def _link(files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for f in files:
        (folder / f.name).symlink_to(f)
    return folder


@pytest.mark.slow
def test_mapping_throughput_interface(tmp_path: Path) -> None:
    out = tmp_path / "throughput.json"
    _run("slidewise.bench.mapping_throughput", "--size", "256", "--json", str(out))
    doc = json.loads(out.read_text())
    keys = ("seed_px_per_s", "engine_px_per_s", "ratio", "engine_peak_rss_mb", "seam_max_abs_diff")
    assert all(isinstance(doc[k], float) for k in keys), doc
    assert doc["engine_px_per_s"] > 0 and doc["seed_px_per_s"] > 0, doc
    # The claim the benchmark backs: the engine's overlap blending matches a whole-image
    # prediction (docs/benchmarks.md: within 2e-3); a broken blend or tile offset breaks it.
    assert doc["seam_max_abs_diff"] < 2e-3, doc


@pytest.mark.slow
def test_tile_size_interface(tmp_path: Path) -> None:
    out = tmp_path / "tiles.json"
    _run(
        "slidewise.bench.tile_size",
        *("--size", "128", "--tiles", "128,192", "--backends", "torch", "--threads", "1"),
        *("--json", str(out)),
    )
    runs = {r["tile"]: r for r in json.loads(out.read_text())["runs"]}
    # 128 px + 2 x 32 margin: 128-px tiles need 2 x 2, a 192-px tile covers it alone and
    # is the whole-raster prediction (no seam); the random U-Net's 128-px tiles have seams.
    assert (runs[128]["tiles"], runs[192]["tiles"]) == (4, 1), runs
    assert runs[192]["seam_max_abs_diff"] == 0.0 < runs[128]["seam_max_abs_diff"], runs
    assert runs[192]["max_abs_diff_vs_first_tile_torch"] == runs[128]["seam_max_abs_diff"]
    assert runs[192]["redundancy"] < runs[128]["redundancy"]


@pytest.mark.slow
@pytest.mark.skipif(not BIJIE.is_dir(), reason="Bijie pairs not available")
def test_mapping_accuracy_interface(tmp_path: Path) -> None:
    names = sorted(p.name for p in (BIJIE / "images").glob("*.png"))
    train, test = names[:4], names[-2:]
    folders = {
        f"{split}-{kind}": _link([BIJIE / kind / n for n in chosen], tmp_path / split / kind)
        for split, chosen in (("train", train), ("test", test))
        for kind in ("images", "masks")
    }
    out = tmp_path / "accuracy.json"
    _run(
        "slidewise.bench.mapping_accuracy",
        *("--train-images", str(folders["train-images"])),
        *("--train-masks", str(folders["train-masks"])),
        *("--test-images", str(folders["test-images"])),
        *("--test-masks", str(folders["test-masks"])),
        *("--json", str(out), "--epochs", "1", "--seed", "0"),
    )
    recipes = json.loads(out.read_text())["recipes"]
    assert set(recipes) == {"l4s_baseline", "default"}
    for scores in recipes.values():
        assert all(0.0 <= scores[k] <= 1.0 for k in ("f1", "precision", "recall", "iou"))


@pytest.mark.slow
@pytest.mark.skipif(not L4S_RGB.is_dir(), reason="detection data not available")
def test_detection_interface(tmp_path: Path) -> None:
    def voc(ids: list[str], name: str) -> Path:
        files = [L4S_RGB / "valid" / f"{i}.{ext}" for i in ids for ext in ("jpg", "xml")]
        return _link(files, tmp_path / name)

    ids = sorted({p.stem for p in (L4S_RGB / "valid").glob("*.xml")})[:4]
    out = tmp_path / "detection.json"
    _run(
        "slidewise.bench.detection",
        *("--train", str(L4S_RGB / "train"), "--max-train-images", "2"),
        *("--val", str(voc(ids[:2], "val")), "--test", str(voc(ids[2:], "test"))),
        *("--json", str(out), "--epochs", "1", "--pretrain-epochs", "1"),
        *("--image-size", "96", "--batch-size", "2", "--seed", "0"),
    )
    models = json.loads(out.read_text())["models"]
    assert len(models) >= 3, models
    assert any("scratch" in m for m in models) and any("mae" in m for m in models)
    assert any("seg" in m for m in models)
    for figures in models.values():
        assert 0.0 <= figures["map50"] <= 1.0 and 0.0 <= figures["map"] <= 1.0
        assert figures["train_s"] > 0


def test_threshold_transfer_chooses_on_the_drawn_images_and_scores_the_rest() -> None:
    """Landslides scoring 0.10-0.20: the stored 0.5 finds none; a threshold chosen on two
    labelled images finds them on the other two (the choice is Evaluate mapping's)."""
    import numpy as np

    from slidewise.bench.threshold_transfer import mask_counts, transfer
    from slidewise.engine.imagery.scene_threshold import raster_threshold
    from slidewise.engine.mapping.evaluation_report import ReportCollector

    rng = np.random.default_rng(0)
    collectors, counts = [], []
    for _ in range(4):
        truth = np.zeros((40, 40), bool)
        truth[10:25, 5:30] = True
        prob = np.where(truth, 0.1 + 0.1 * rng.random(truth.shape), 0.05 * rng.random(truth.shape))
        collector = ReportCollector(40, 40, 0.5)
        collector.add(0, prob, truth, np.ones_like(truth))
        collectors.append(collector)
        counts.append(mask_counts(prob >= raster_threshold(prob), truth, np.ones_like(truth)))
    result = transfer(collectors, 0.5, [np.array([0, 1]), np.array([2, 3])], np.array(counts))
    assert result["f1_stored"] == 0.0 and result["f1_chosen"] == 1.0
    assert 0.05 <= result["chosen_threshold_median"] <= 0.1
    # Without labels, each image's expected-F1 threshold (below 0.1 here) finds most of them.
    assert result["f1_rule"] > 0.8
    assert result["f1_all_rule"] == pytest.approx(result["f1_rule"], abs=0.01)


def test_loro_rescore_takes_the_kept_models_instead_of_training(tmp_path) -> None:
    """``--rescore``: a fold's model is the one ``--keep`` named ``<test>-<recipe>-<seed>``."""
    from pathlib import Path

    from slidewise.bench.mapping_accuracy import AccuracySettings, loro_model

    kept = tmp_path / "sichuan-default-3.safetensors"
    kept.write_bytes(b"")
    settings = AccuracySettings(rescore=str(tmp_path))
    scaled = (Path(), Path())
    assert loro_model("default", "sichuan", scaled, tmp_path / "default-3", settings) == kept
    with pytest.raises(SystemExit, match="bijie-default-3"):
        loro_model("default", "bijie", scaled, tmp_path / "default-3", settings)
