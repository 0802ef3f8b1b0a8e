"""Encoder pre-training: MAE on real images, distillation, strict loading (smp, torchvision)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import BIJIE, assert_steady_progress, job_context, progress_values
from torch import nn

from slidewise.engine.core.errors import InputError, ModelFileError
from slidewise.engine.core.job import JobContext
from slidewise.engine.core.modelfile import read_metadata
from slidewise.engine.detection.encoders import encoder_state_dict, save_encoder
from slidewise.engine.detection.mae import mae_loss, random_patch_mask
from slidewise.engine.detection.pretrain import (
    InMemoryImages,
    pretrain_encoder,
    pretrain_in_memory,
    run_pretrain,
)
from slidewise.engine.detection.pretraining import PretrainSettings
from slidewise.engine.imagery.segmodels import (
    SegModelConfig,
    build_model,
    load_encoder_weights,
    save_mapping_model,
)

needs_bijie = pytest.mark.skipif(not BIJIE.is_dir(), reason="Bijie images not available")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ctx() -> JobContext:
    return job_context("pretrainencoder")[0]


def _bijie(n: int, size: int) -> list[np.ndarray]:
    from PIL import Image

    files = sorted((BIJIE / "images").glob("*.png"))[:n]
    return [
        np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.Resampling.BOX))
        for f in files
    ]


def _torchvision() -> object:
    from slidewise.engine.imagery.tvcompat import import_torchvision

    return import_torchvision()


# --------------------------------------------------------------------------- MAE parts


def test_patch_mask_and_loss_count_hidden_valid_patches_only() -> None:
    gen = torch.Generator().manual_seed(0)
    mask = random_patch_mask(3, 64, 96, 16, 0.75, gen)
    assert mask.shape == (3, 1, 64, 96)
    per_sample = mask[:, 0, ::16, ::16].flatten(1).sum(dim=1)
    assert per_sample.tolist() == [18, 18, 18]  # round(0.75 * 24) patches each
    target = torch.randn(3, 2, 64, 96)
    valid = torch.ones(3, 64, 96, dtype=torch.bool)
    perfect_hidden = torch.where(mask, target, torch.zeros_like(target) + 5.0)
    assert float(mae_loss(perfect_hidden, target, mask, valid, 16)) == pytest.approx(0.0)
    # Padding (invalid pixels) keeps a patch out of the loss.
    valid[:, :16, :] = False
    wrong_top = perfect_hidden.clone()
    wrong_top[:, :, :16, :] += 3.0
    assert float(mae_loss(wrong_top, target, mask, valid, 16)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        random_patch_mask(1, 60, 64, 16, 0.75)


@pytest.mark.slow
@needs_bijie
def test_mae_loss_decreases_on_real_images() -> None:
    """20 Bijie images at 128 px, 8 epochs: the fixed-mask loss falls below predicting zeros."""
    images = _bijie(20, 128)
    settings = PretrainSettings(epochs=8, batch_size=2, lr=1e-3, patch=16, seed=0)
    layout = InMemoryImages(3, 128, "fit")
    result = pretrain_in_memory(images, settings, layout, lambda _: None, None)
    m = result.metrics
    losses = [h["loss"] for h in result.history]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses
    # Fixed chips and masks, eval mode: measured 1.016 -> 0.830 (zeros 1.010).
    assert m["eval_loss_after"] < m["eval_loss_before"] - 0.05, m
    assert m["eval_loss_after"] < m["zeros_loss"] - 0.05, m
    assert set(result.encoder) == set(build_model(SegModelConfig()).encoder.state_dict())


# --------------------------------------------------------------------------- strict loading


def test_encoder_file_loads_strictly_into_smp_and_torchvision(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3)).astype(np.uint8) for _ in range(2)]
    settings = PretrainSettings("resnet18", epochs=1, batch_size=2, seed=0, device="cpu")
    state = pretrain_encoder(images, settings, InMemoryImages(3))

    class Boxes(torch.utils.data.Dataset):
        """A detection-style dataset: (image tensor (C, H, W) in [0, 1], target)."""

        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
            return torch.from_numpy(images[i]).permute(2, 0, 1) / 255.0, {"boxes": []}

    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    from_dataset = pretrain_encoder(
        Boxes(),
        PretrainSettings(epochs=1, batch_size=2, device="cpu"),
        InMemoryImages(3, None, imagenet),
    )
    assert set(from_dataset) == set(state)
    path = save_encoder(tmp_path / "enc.safetensors", state, "resnet18", 3, ["r", "g", "b"])
    meta = read_metadata(path)
    assert meta.task == "encoder" and meta.config["key_prefix"] == "encoder."
    assert meta.config["targets"] == ["smp", "torchvision_resnet"]

    # smp: the U-Net encoder (strict), and trainmapping's ENCODER_WEIGHTS path.
    unet = build_model(SegModelConfig("unet", "resnet18", 3))
    smp_state = encoder_state_dict(path, "smp")
    assert set(smp_state) == set(unet.encoder.state_dict())
    unet.encoder.load_state_dict(smp_state, strict=True)  # raises on any key mismatch
    assert torch.equal(unet.encoder.conv1.weight, state["conv1.weight"])
    assert load_encoder_weights(build_model(SegModelConfig("unet", "resnet18", 3)), path) == len(
        state
    )

    # torchvision: a ResNet-18 body (no fc) and the Faster R-CNN ResNet-FPN body.
    tv = _torchvision()
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    tv_state = encoder_state_dict(path, "torchvision_resnet")
    body = IntermediateLayerGetter(tv.models.resnet18(weights=None), {"layer4": "out"})
    keys = body.load_state_dict(tv_state, strict=True)
    assert not keys.missing_keys and not keys.unexpected_keys
    assert set(body.state_dict()) == set(tv_state)
    assert torch.equal(body.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    for norm in (None, nn.BatchNorm2d):
        kwargs = {} if norm is None else {"norm_layer": norm}
        fpn = resnet_fpn_backbone(backbone_name="resnet18", weights=None, **kwargs)
        keys = fpn.body.load_state_dict(tv_state, strict=True)
        assert not keys.missing_keys and not keys.unexpected_keys
        assert torch.equal(fpn.body.bn1.running_var, state["bn1.running_var"])

    # Other bands, other backbones, other files.
    four = build_model(SegModelConfig("unet", "resnet18", 4, 3)).encoder.state_dict()
    path4 = save_encoder(tmp_path / "enc4.safetensors", four, "resnet18", 4)
    unet4 = build_model(SegModelConfig("unet", "resnet18", 4, 3))
    unet4.encoder.load_state_dict(encoder_state_dict(path4), strict=True)
    other = save_encoder(
        tmp_path / "mnv2.safetensors", {"features.0.weight": torch.zeros(1)}, "mobilenet_v2", 3
    )
    with pytest.raises(InputError, match="mobilenet_v2, not a ResNet"):
        encoder_state_dict(other, "torchvision_resnet")
    with pytest.raises(InputError, match="Unknown target"):
        encoder_state_dict(path, "timm")
    mapping = tmp_path / "mapping.safetensors"
    save_mapping_model(mapping, unet, SegModelConfig("unet", "resnet18", 3), ["r", "g", "b"], {})
    from_mapping = encoder_state_dict(mapping, "torchvision_resnet")
    assert torch.equal(from_mapping["conv1.weight"], state["conv1.weight"])


# --------------------------------------------------------------------------- the job


def _pictures(root: Path, n: int, masks: bool) -> tuple[str, str]:
    from PIL import Image

    rng = np.random.default_rng(1)
    img, msk = root / "images", root / "masks"
    img.mkdir(parents=True)
    msk.mkdir(parents=True)
    for i in range(n):
        a = rng.integers(0, 120, (64, 64, 3)).astype(np.uint8)
        m = np.zeros((64, 64), np.uint8)
        m[10:30, 20:44] = 255
        a[m > 0] = (220, 200, 70)
        Image.fromarray(a).save(img / f"{i}.png")
        if masks:
            Image.fromarray(m).save(msk / f"{i}.png")
    return str(img), str(msk)


def test_job_mae_and_teacher_distillation(tmp_path: Path) -> None:
    img, msk = _pictures(tmp_path / "pics", 4, masks=True)
    out = tmp_path / "mae.safetensors"
    common = {"IMAGES": img, "CHIP_SIZE": 64, "EPOCHS": 1, "BATCH_SIZE": 2, "SEED": 0}
    result = run_pretrain({**common, "OUTPUT": str(out)}, _ctx())
    meta = read_metadata(out)
    assert meta.task == "encoder" and meta.architecture == "resnet18"
    assert meta.provenance["mode"] == "mae" and meta.provenance["chips"] == 4
    assert meta.normalisation["kind"] == "fit" and meta.bands == ["red", "green", "blue"]
    assert {"eval_loss_before", "eval_loss_after", "zeros_loss"} <= set(result.figures)

    # A mapping model teaches a student with the same backbone; masks add the hard loss.
    teacher_cfg = SegModelConfig("unet", "resnet18", 3, 3, extra={"decoder_channels": [16, 8, 8]})
    teacher = tmp_path / "teacher.safetensors"
    norm = {"kind": "fit", "mean": [60.0] * 3, "std": [50.0] * 3}
    save_mapping_model(teacher, build_model(teacher_cfg), teacher_cfg, ["r", "g", "b"], norm)
    student = tmp_path / "student.safetensors"
    result = run_pretrain(
        {
            **common,
            "MASKS": msk,
            "MODE": "distill",
            "TEACHER": str(teacher),
            "EPOCHS": 2,
            "OUTPUT": str(student),
        },
        _ctx(),
    )
    meta = read_metadata(student)
    assert meta.provenance["mode"] == "distill" and meta.normalisation == norm
    history = meta.metrics["history"]
    assert len(history) == 2 and {"distill", "hard"} <= set(history[0])
    assert all(np.isfinite(h["loss"]) for h in history)
    assert 0.0 <= result.figures["agreement"] <= 1.0
    unet = build_model(SegModelConfig("unet", "resnet18", 3))
    unet.encoder.load_state_dict(encoder_state_dict(student), strict=True)

    with pytest.raises(InputError, match=r"Missing required parameter.*TEACHER"):
        run_pretrain({**common, "MODE": "distill", "OUTPUT": str(student)}, _ctx())
    with pytest.raises(ModelFileError, match="mapping model or a multiregion model"):
        run_pretrain(
            {**common, "MODE": "distill", "TEACHER": str(out), "OUTPUT": str(student)}, _ctx()
        )
    with pytest.raises(InputError, match="Unknown BACKBONE 'resnet9'"):
        run_pretrain({**common, "BACKBONE": "resnet9", "OUTPUT": str(out)}, _ctx())
    with pytest.raises(InputError, match="multiple of 32"):
        run_pretrain({**common, "CHIP_SIZE": 48, "OUTPUT": str(out)}, _ctx())


def test_job_progress_advances_per_batch(tmp_path: Path) -> None:
    # Two epochs of four batches: the bar moves after every batch, up to the stage's 97 %.
    img, _ = _pictures(tmp_path / "pics", 8, masks=False)
    ctx, stream = job_context("pretrainencoder")
    params = {"IMAGES": img, "CHIP_SIZE": 64, "EPOCHS": 2, "BATCH_SIZE": 2, "SEED": 0}
    run_pretrain({**params, "OUTPUT": str(tmp_path / "mae.safetensors")}, ctx)
    assert_steady_progress(progress_values(stream), 2, 97, steps=2 * 4)


def test_pretraining_on_fewer_chips_than_the_evaluation_count() -> None:
    """Fewer chips than EVAL_CHIPS (32) used to raise IndexError in mae_eval_loss."""
    images = _bijie(3, 64)
    settings = PretrainSettings(epochs=1, batch_size=2, lr=1e-3, patch=16, seed=0)
    layout = InMemoryImages(3, 64, "fit")
    result = pretrain_in_memory(images, settings, layout, lambda _: None, None)
    assert np.isfinite(result.metrics["eval_loss_after"])
