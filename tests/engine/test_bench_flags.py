"""Benchmark flags for learning curves and GPU runs, exercised on the CPU at tiny sizes.

``bench.detection --eval-every/--curve-png`` (issue 16 item 8) rests on the
checkpoint hook of :func:`slidewise.engine.detection.train.train_detector`;
``bench.mapping_throughput --device/--amp/--channels-last/--sweep-*`` (issue 13
item 5) must run on a CPU so that docs/gpu.md's commands are known to parse and
write their keys before a GPU session spends device time on them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from engine_helpers import SHARED

from slidewise.bench import detection as det_bench
from slidewise.bench import mapping_throughput as mt_bench
from slidewise.engine.detection.annotations import read_voc
from slidewise.engine.detection.train import (
    BackboneStart,
    DetTrainSettings,
    make_config,
    subsample,
    train_detector,
)

EVENTS = SHARED / "detection" / "events_rgb"
needs_data = pytest.mark.skipif(not EVENTS.is_dir(), reason="detection data not available")


@needs_data
def test_checkpoint_hook_fires_at_start_every_n_steps_and_last() -> None:
    # 5 images at batch 2: 3 steps; every 2 steps -> steps 0, 2 and the last (3).
    train = subsample(read_voc(EVENTS / "train"), 5, 0)
    valid = subsample(read_voc(EVENTS / "valid"), 1, 1)
    config, _ = make_config(train, "resnet18", [0, 1, 2], 64)
    calls: list[tuple[int, bool]] = []

    def hook(step: int, model: torch.nn.Module) -> None:
        calls.append((step, model.training))
        model.eval()  # an evaluation leaves eval mode behind: training must resume in train mode

    settings = DetTrainSettings(
        epochs=1, batch_size=2, seed=0, bands=[0, 1, 2], checkpoint_every=2, on_checkpoint=hook
    )
    train_detector(train, valid, config, settings, BackboneStart(), log=lambda _: None)
    assert [s for s, _ in calls] == [0, 2, 3]
    assert all(training for _, training in calls)


@needs_data
def test_detection_bench_learning_curve(tmp_path: Path) -> None:
    out, png = tmp_path / "curve.json", tmp_path / "curve.png"
    test = tmp_path / "test"
    test.mkdir()
    for xml in sorted((EVENTS / "valid").glob("*.xml"))[:2]:
        for f in (xml, xml.with_suffix(".jpg")):
            (test / f.name).symlink_to(f)
    argv = [
        *("--train", str(EVENTS / "train"), "--max-train-images", "4"),
        *("--val", str(EVENTS / "valid"), "--max-val-images", "1"),
        *("--test", str(test), "--json", str(out)),
        *("--epochs", "1", "--batch-size", "2", "--image-size", "64", "--seed", "0"),
        *("--models", "frcnn_resnet18_fpn_scratch", "--eval-every", "2"),
    ]
    assert det_bench.main([*argv, "--curve-png", str(png)]) == 0
    doc = json.loads(out.read_text())
    entry = doc["models"]["frcnn_resnet18_fpn_scratch"]
    assert [p["step"] for p in entry["curve"]] == [0, 2]
    assert [p["images"] for p in entry["curve"]] == [0, 4]
    assert entry["curve_eval_s"] > 0 and doc["settings"]["eval_every"] == 2
    assert "partial" not in doc  # the finished run replaced the partial document
    # One epoch: the selected weights are the last step's, scored once.
    assert entry["map50"] == entry["curve"][-1]["map50"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        det_bench.main([*argv[:-2], "--curve-png", str(png)])  # a plot needs --eval-every


def test_mapping_throughput_device_options_and_sweep_on_cpu(tmp_path: Path) -> None:
    # The pieces run_bench calls for the GPU session's flags, on a 224 px raster.
    args = mt_bench.parse_args(["--size", "224", "--amp", "off", "--channels-last", "on"])
    args.sweep_tiles, args.sweep_batches = [128], [1, 2]
    assert mt_bench.device_options(args) == {"device": "cpu", "amp": False, "channels_last": True}
    assert mt_bench.device_figures(args) == {
        "device": "cpu",
        "gpu": None,
        "amp": "off",
        "channels_last": "on",
    }
    model, _ = mt_bench.build_bench_model()
    bench = mt_bench.Bench(model, model, mt_bench.normalisation(), args)
    raster = mt_bench.write_synthetic_raster(tmp_path / "r.tif", 224)
    sweep = mt_bench.sweep_figures(bench, raster, seed_px_per_s=1000.0)
    assert [(s["tile"], s["batch_size"]) for s in sweep] == [(128, 1), (128, 2)]
    assert sweep[0]["tiles"] == sweep[1]["tiles"] > 1, sweep  # 128 px tiles cut 224 px
    assert all(s["ratio"] == pytest.approx(s["px_per_s"] / 1000.0, abs=1e-3) for s in sweep)
    prob, _ = mt_bench.engine_predict(model, raster, bench.norm, args)
    assert prob.shape == (224, 224) and float(prob.min()) >= 0.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sweep-tiles", "512,x"], "comma-separated integers"),
        (["--sweep-batches", "0"], "positive integers"),
        (["--device", "meta", "--floor"], "use them with --device cpu"),
    ],
)
def test_mapping_throughput_refuses_bad_device_flags(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        mt_bench.parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_mapping_throughput_refuses_cuda_without_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        mt_bench.parse_args(["--device", "cuda"])
    assert "no CUDA GPU" in capsys.readouterr().err


def test_detection_curve_is_saved_as_it_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run killed by a time limit must leave its curve: each point rewrites --json and the PNG.
    from slidewise.engine.detection import train as train_module

    scores = iter([0.1, 0.3])
    monkeypatch.setattr(
        train_module, "evaluate_detector", lambda *a, **k: {"map50": next(scores), "map": 0.05}
    )
    args = det_bench.argparse.Namespace(
        json=tmp_path / "c.json",
        curve_png=tmp_path / "c.png",
        epochs=3,
        batch_size=2,
        image_size=64,
        seed=0,
        device="cpu",
        eval_every=5,
    )
    curve = det_bench.TestCurve(
        det_bench.argparse.Namespace(samples=[]),
        [0, 1, 2],
        [0.0] * 3,
        "cpu",
        2,
        on_point=lambda points: det_bench.save_partial_curve("m", points, args),
    )
    curve(0, None)
    curve(5, None)
    doc = json.loads(args.json.read_text())
    assert doc["partial"] is True
    assert [(p["step"], p["images"], p["map50"]) for p in doc["models"]["m"]["curve"]] == [
        (0, 0, 0.1),
        (5, 10, 0.3),
    ]
    assert args.curve_png.read_bytes()[:4] == b"\x89PNG"
