"""The method and training summary of a model file, in plain words, for reports.

Reads the JSON metadata of a Slidewise model file (:mod:`.modelfile`) and turns the
keys each training job records (method, blocks, K, cross-validation, recipe, epochs,
threshold rule, validation figures) into labelled rows. Shares are per cent, AUCs
stay 0 to 1 (the convention of :data:`.report.UNITS_NOTE`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from slidewise.engine.core.modelfile import ModelMetadata, read_metadata

#: Plain labels of the susceptibility methods.
METHODS = {
    "meta": "Block-wise meta-learning (MAML): one model adapted to each block",
    "lr": "Logistic regression (one global model)",
    "rf": "Random forest (one global model)",
    "mlp": "Neural network, MLP (one global model)",
    "fr": "Frequency ratio (one global model)",
}
#: Validation keys of mapping and detection models that are shares (shown in per cent).
SHARE_KEYS = {
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "iou": "IoU",
    "accuracy": "Accuracy",
    "map50": "mAP at IoU 0.5",
    "map": "mAP at IoU 0.5:0.95",
}


def _pct(value: Any) -> str | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return f"{100 * value:.1f} %" if math.isfinite(value) else None


def _mean_sd(cv: dict[str, Any], stem: str) -> str | None:
    mean, sd = cv.get(f"{stem}_auc_mean"), cv.get(f"{stem}_auc_sd")
    if mean is None:
        return None
    return f"{mean:.3f} ± {sd:.3f}" if sd is not None else f"{mean:.3f}"


def susceptibility_rows(meta: ModelMetadata) -> list[tuple[str, Any]]:
    """Method, factors, blocks, K (support samples per block) and cross-validated AUCs."""
    config, extra = meta.config, meta.extra
    method = str(config.get("method", meta.architecture))
    rows: list[tuple[str, Any]] = [
        ("Method", METHODS.get(method, method)),
        ("Factors", ", ".join(meta.bands) or None),
    ]
    blocks = extra.get("blocks") or {}
    if blocks.get("source") == "kmeans":
        rows.append(("Blocks", f"{blocks.get('n_blocks')} k-means clusters of the samples"))
    elif blocks:
        rows.append(("Blocks", f"block raster {Path(str(blocks.get('path', '?'))).name}"))
    inner = config.get("meta") or {}
    if inner:
        rows.append(("K (support samples per block)", inner.get("support")))
        rows.append(("Meta-iterations", inner.get("iterations")))
        rows.append(("Adaptation steps", inner.get("inner_steps")))
    cv = meta.metrics.get("cv") or {}
    folds = cv.get("folds")
    rows.append((f"Leave-blocks-out CV AUC ({folds} folds, mean ± sd)", _mean_sd(cv, "spatial")))
    rows.append((f"Random CV AUC ({folds} folds, mean ± sd)", _mean_sd(cv, "random")))
    rows.append(("Training AUC", meta.metrics.get("train_auc")))
    rows.append(("Seed", meta.provenance.get("seed")))
    return rows


def imagery_rows(meta: ModelMetadata) -> list[tuple[str, Any]]:
    """Architecture, bands, recipe, epochs, threshold rule and validation figures."""
    prov, extra = meta.provenance, meta.extra
    settings = prov.get("settings") or {}
    recipe = prov.get("recipe") or {}
    rows: list[tuple[str, Any]] = [
        ("Architecture", meta.architecture),
        ("Bands", ", ".join(meta.bands) or None),
        ("Training images", prov.get("train_images") or prov.get("train")),
        ("Validation split", prov.get("split")),
        ("Recipe", recipe.get("name") if isinstance(recipe, dict) else recipe),
        ("Epochs", prov.get("epochs") or settings.get("epochs")),
        ("Selected epoch", extra.get("best_epoch")),
        ("Selection metric", prov.get("select_metric")),
    ]
    threshold = extra.get("threshold")
    if threshold is not None:
        rows.append(("Threshold (chosen on validation for the best F1)", f"{threshold:.3f}"))
    validation = meta.metrics.get("validation") or {}
    for key, label in SHARE_KEYS.items():
        rows.append((f"Validation {label}", _pct(validation.get(key))))
    rows.append(("Trained (UTC)", prov.get("created_utc")))
    return rows


def model_summary(path: str | os.PathLike[str]) -> list[tuple[str, Any]]:
    """Labelled rows describing the model file ``path`` (``None`` values are left out).

    Raises:
        ModelFileError: the file is not a readable Slidewise model.
    """
    meta = read_metadata(path)
    head: list[tuple[str, Any]] = [("Model file", Path(path).name), ("Task", meta.task)]
    body = susceptibility_rows(meta) if meta.task == "susceptibility" else imagery_rows(meta)
    return [(k, v) for k, v in [*head, *body] if v not in (None, "", [])]


def model_inputs(path: str | os.PathLike[str]) -> list[str]:
    """The input files recorded in the model's provenance (those that still exist)."""
    prov = read_metadata(path).provenance
    found = prov.get("inputs") or []
    found = found if isinstance(found, list) else list(found)
    return [str(p) for p in found if isinstance(p, str) and Path(p).exists()]
