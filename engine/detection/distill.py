"""Knowledge distillation of a trained teacher's landslide outputs into an encoder.

A student U-Net with the chosen encoder learns the teacher's soft per-pixel
outputs at temperature ``T`` (5): ``LAMBDA * T^2 * KL(sigmoid(t/T) ||
sigmoid(s/T)) + (1 - LAMBDA) * Dice+BCE`` on labelled pixels (when masks are
given; the hard term is absent on unlabelled images). The teacher is a
mapping model or one region of a multiregion model; its bands and
normalisation are used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slidewise.engine.core.errors import InputError, ModelFileError
from slidewise.engine.core.job import Log, Progress
from slidewise.engine.core.modelfile import read_metadata
from slidewise.engine.detection.pretraining import (
    EVAL_CHIPS,
    PretrainResult,
    PretrainSettings,
    fit_encoder,
)
from slidewise.engine.imagery.datasets import ChipDataset
from slidewise.engine.imagery.labels import IGNORE
from slidewise.engine.imagery.losses import make_loss

#: Decoder channels of the distillation student (thrown away after training).
STUDENT_DECODER = [128, 64, 32, 16, 8]


def load_teacher(
    path: str | os.PathLike[str], region: str | None = None
) -> tuple[nn.Module, list[str], dict[str, Any]]:
    """A teacher model (mapping, or one region of a multiregion model).

    Returns:
        ``(model, band names, normalisation)``.

    Raises:
        ModelFileError: another task.
        InputError: a multiregion teacher without a valid region.
    """
    meta = read_metadata(path)
    if meta.task == "mapping":
        from slidewise.engine.imagery.segmodels import load_mapping_model

        model, meta = load_mapping_model(path)
        return model, list(meta.bands), dict(meta.normalisation or {})
    if meta.task == "multiregion":
        from slidewise.engine.imagery.regions import load_multiregion

        multi, _ = load_multiregion(path)
        if not region:
            if len(multi.regions) != 1:
                raise InputError(
                    f"The teacher has regions {', '.join(multi.regions)}: set TEACHER_REGION "
                    "to the region whose decoder teaches."
                )
            region = multi.regions[0]
        record = multi.record(region)
        return (
            multi.view(region),
            list(record.get("bands", [])),
            dict(record.get("normalisation") or {}),
        )
    raise ModelFileError(
        f"The teacher '{Path(path).name}' holds a {meta.task} model: the teacher must be a "
        "mapping model or a multiregion model (per-pixel landslide outputs)."
    )


def train_distill(
    dataset: ChipDataset,
    teacher: nn.Module,
    settings: PretrainSettings,
    log: Log = print,
    progress: Progress | None = None,
) -> PretrainResult:
    """Distil a teacher's per-pixel landslide outputs into a student with ``settings.backbone``.

    Args:
        dataset: Chips normalised as the teacher expects; labels 0/1 add the
            hard loss, IGNORE pixels only get the distillation term.
        teacher: A model returning one logit per pixel (B, 1, H, W).
        settings: Settings (``temperature``, ``distill_lambda``).
        log: Receives per-epoch lines.
        progress: Receives the fraction done.
    """
    from slidewise.engine.core.runtime import seed_everything
    from slidewise.engine.imagery.regions import distillation_loss
    from slidewise.engine.imagery.segmodels import SegModelConfig, build_model, main_logits

    seed_everything(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    device = torch.device(settings.device)
    student = build_model(
        SegModelConfig(
            "unet",
            settings.backbone,
            in_channels=len(dataset.bands),
            extra={"decoder_channels": STUDENT_DECODER},
        )
    ).to(device)
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    hard = make_loss("dice_bce")
    lam, temp = float(settings.distill_lambda), float(settings.temperature)

    def batch_loss(
        x: torch.Tensor, labels: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            target = main_logits(teacher(x)).float()
        logits = main_logits(student(x)).float()
        kd = distillation_loss(logits, target, temp)
        valid = labels != IGNORE
        if bool(valid.any()):
            h = hard(logits, (labels == 1).float(), valid)
            return lam * kd + (1.0 - lam) * h, {"distill": float(kd), "hard": float(h)}
        return lam * kd, {"distill": float(kd)}

    history = fit_encoder(student, dataset, settings, batch_loss, log, progress, generator)
    agreement = _agreement(student, teacher, dataset, settings)
    log(f"Student-teacher agreement (pixels on the same side of 0.5): {agreement:.3f}.")
    encoder = {k: v.detach().cpu().clone() for k, v in student.encoder.state_dict().items()}
    return PretrainResult(encoder, history, {"agreement": agreement})


def _agreement(
    student: nn.Module, teacher: nn.Module, dataset: ChipDataset, settings: PretrainSettings
) -> float:
    """Share of pixels that student and teacher put on the same side of 0.5."""
    from slidewise.engine.imagery.segmodels import main_logits

    device = torch.device(settings.device)
    same, total = 0, 0
    with torch.no_grad():
        for start in range(0, min(EVAL_CHIPS, len(dataset)), settings.batch_size):
            stop = min(EVAL_CHIPS, len(dataset), start + settings.batch_size)
            x = torch.stack([dataset[i][0] for i in range(start, stop)]).to(device)
            s = main_logits(student(x)) > 0
            t = main_logits(teacher(x)) > 0
            same += int((s == t).sum())
            total += s.numel()
    return same / max(total, 1)
