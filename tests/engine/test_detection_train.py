"""Detection models and training: FPN backbones, strict encoder weights, a real training step."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from engine_helpers import SHARED, assert_steady_progress, job_context, progress_values
from safetensors.torch import save_file

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext
from slidewise.engine.core.modelfile import read_metadata
from slidewise.engine.detection.models import (
    DetectorConfig,
    build_detector,
    load_backbone_weights,
    load_detector,
)
from slidewise.engine.detection.train import run_train

DATA = SHARED / "detection"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="detection data not available")


def _ctx() -> tuple[JobContext, io.StringIO]:
    return job_context("traindetection")


def _small(**kw: object) -> DetectorConfig:
    return DetectorConfig(min_size=64, max_size=64, fpn_channels=32, **kw)  # type: ignore[arg-type]


def test_fpn_backbones_any_band_count() -> None:
    model = build_detector(_small(in_channels=5, image_mean=[0.0] * 5, image_std=[1.0] * 5))
    assert model.backbone.body.conv1.in_channels == 5
    model.eval()
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 5, 64, 64))
    assert list(feats) == ["0", "1", "2", "3", "pool"]
    assert feats["0"].shape[-1] == 16  # stride 4: small objects keep a fine map
    timm_model = build_detector(_small(backbone="timm:efficientnet_b0")).eval()
    with torch.no_grad():
        timm_feats = timm_model.backbone(torch.zeros(1, 3, 64, 64))
    assert list(timm_feats) == ["0", "1", "2", "3", "pool"]
    assert [f.shape[1] for f in timm_feats.values()] == [32] * 5
    with pytest.raises(InputError, match="Unknown BACKBONE"):
        build_detector(_small(backbone="vgg11"))


def test_encoder_weights_are_loaded_strictly(tmp_path: Path) -> None:
    model = build_detector(_small())
    body = {k: v.clone() for k, v in model.backbone.body.state_dict().items()}
    body["conv1.weight"] = torch.full_like(body["conv1.weight"], 0.5)
    save_file({f"encoder.{k}": v for k, v in body.items()}, str(tmp_path / "ok.safetensors"))
    info = load_backbone_weights(model, tmp_path / "ok.safetensors")
    assert info["prefix"] == "encoder." and info["tensors"] == len(body)
    assert float(model.backbone.body.conv1.weight.detach().mean()) == 0.5
    broken = dict(body)
    del broken["layer4.1.bn2.running_var"]
    broken["fc.weight"] = torch.zeros(2, 512)
    broken["conv1.weight"] = torch.zeros(64, 4, 7, 7)
    save_file(broken, str(tmp_path / "bad.safetensors"))
    with pytest.raises(InputError) as err:
        load_backbone_weights(model, tmp_path / "bad.safetensors")
    message = str(err.value)
    assert "1 missing key(s): layer4.1.bn2.running_var" in message
    assert "1 unexpected key(s): fc.weight" in message
    assert "conv1.weight (64, 4, 7, 7) instead of (64, 3, 7, 7)" in message
    with pytest.raises(InputError, match="does not exist"):
        load_backbone_weights(model, tmp_path / "missing.safetensors")


@pytest.mark.slow
@needs_data
def test_training_step_and_eval_on_real_images(tmp_path: Path) -> None:
    ctx, stream = _ctx()
    out = tmp_path / "det.safetensors"
    result = run_train(
        {
            "TRAIN": str(DATA / "l4s_rgb" / "train"),
            "VALID": str(DATA / "events_rgb" / "valid"),
            "MAX_TRAIN_IMAGES": 2,
            "MAX_VALID_IMAGES": 2,
            "EPOCHS": 1,
            "BATCH_SIZE": 2,
            "IMAGE_SIZE": 96,
            "SEED": 3,
            "OUTPUT": str(out),
        },
        ctx,
    )
    assert result.outputs["OUTPUT"] == str(out)
    assert 0.0 <= result.figures["valid_map50"] <= 1.0
    meta = read_metadata(out)
    assert meta.task == "detection" and meta.class_names == ["background", "landslide"]
    assert meta.bands == ["red", "green", "blue"] and meta.tile_size == 224
    assert len(meta.normalisation["mean"]) == 3 and meta.metrics["history"][0]["epoch"] == 1
    model, meta2 = load_detector(out)
    assert meta2.config["min_size"] == 96 and not model.training
    assert "not scaled" in stream.getvalue()  # the l4s_rgb size mismatch was reported


@needs_data
def test_training_progress_advances_per_batch(tmp_path: Path) -> None:
    # Two epochs of three batches: the bar moves after every batch, up to the stage's 98 %.
    ctx, stream = _ctx()
    run_train(
        {
            "TRAIN": str(DATA / "events_rgb" / "train"),
            "VALID": str(DATA / "events_rgb" / "valid"),
            "MAX_TRAIN_IMAGES": 6,
            "MAX_VALID_IMAGES": 1,
            "EPOCHS": 2,
            "BATCH_SIZE": 2,
            "IMAGE_SIZE": 64,
            "SEED": 3,
            "OUTPUT": str(tmp_path / "det.safetensors"),
        },
        ctx,
    )
    assert_steady_progress(progress_values(stream), 3, 98, steps=2 * 3)


def test_training_job_rejects_bad_inputs(tmp_path: Path) -> None:
    ctx, _ = _ctx()
    with pytest.raises(InputError, match="Unknown parameter"):
        run_train({"TRAIN": "x", "OUTPUT": str(tmp_path / "m.safetensors"), "EPOCH": 1}, ctx)
    with pytest.raises(InputError, match="Unknown value 'yolo' for FORMAT"):
        run_train({"TRAIN": "x", "OUTPUT": str(tmp_path / "m.safetensors"), "FORMAT": "yolo"}, ctx)
    with pytest.raises(InputError, match="does not exist"):
        run_train({"TRAIN": str(tmp_path / "none"), "OUTPUT": str(tmp_path / "m.safetensors")}, ctx)
    assert not (tmp_path / "m.safetensors").exists()
