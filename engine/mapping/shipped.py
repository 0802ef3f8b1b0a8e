"""The landslide model shipped with the plugin: maps RGB imagery without training.

``resources/models/landslide_rgb.safetensors`` is the recipe that measured best
across regions trained on every shared pixel-labelled RGB pair (Bijie and
Sichuan): a Slidewise model file like any other, under :data:`MAX_BYTES`.
Its card, in the file's metadata and in ``landslide_rgb.md`` beside it, carries
the leave-one-region-out figures measured with
``python -m slidewise.bench.mapping_accuracy --loro``. maplandslides uses it
when no MODEL is given (:func:`resolve_model`); :func:`write_shipped_model`
makes it from a trained model file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.modelfile import read_metadata, save_model

#: File name of the shipped model.
SHIPPED_NAME = "landslide_rgb.safetensors"
#: Largest size of the shipped model file (bytes): it lives in git and in the plugin zip.
MAX_BYTES = 30 * 1024 * 1024


def shipped_model_path() -> Path:
    """Where the shipped model lies: ``resources/models/`` of the plugin package."""
    return Path(__file__).resolve().parents[2] / "resources" / "models" / SHIPPED_NAME


def resolve_model(model: str | None, log: Callable[[str], None]) -> str:
    """MODEL as given, or the shipped model when it is empty (said in the log).

    Raises:
        InputError: MODEL is empty and the shipped model is not installed.
    """
    if model:
        return model
    path = shipped_model_path()
    if not path.is_file():
        raise InputError(
            "No MODEL was given and the shipped landslide model is missing from this "
            f"installation ({path}): choose a model from Train mapping model, or reinstall "
            "the Slidewise plugin."
        )
    meta = read_metadata(path)
    loro = (meta.metrics or {}).get("leave_one_region_out", {})
    figures = f" (leave-one-region-out F1 {loro['f1']:.2f})" if "f1" in loro else ""
    log(
        f"MODEL is empty: mapping with the shipped landslide model {path.name}, trained on "
        f"RGB imagery of Bijie and Sichuan{figures}. For imagery unlike these (other "
        "sensors, bands or resolution) train a model on your own labelled images."
    )
    return str(path)


def write_shipped_model(
    source: str | Path, target: str | Path, card: dict[str, Any], half: bool = False
) -> int:
    """Copy a trained mapping model (float16 weights if asked) with the card in its metadata.

    Args:
        source: A model file written by trainmapping.
        target: The shipped model file to write.
        card: Merged into the metadata: ``metrics`` entries (for example
            ``leave_one_region_out``) and ``provenance`` entries.
        half: Store floating-point weights as float16 (the model loads them into
            float32; batch-norm statistics stay float32).

    Returns:
        The size of the written file in bytes.

    Raises:
        InputError: the file would exceed :data:`MAX_BYTES`.
    """
    tensors = load_file(str(source))
    if half:
        tensors = {
            k: v.half() if v.is_floating_point() and "running_" not in k else v
            for k, v in tensors.items()
        }
    meta = read_metadata(source)
    meta.metrics = {**meta.metrics, **card.get("metrics", {})}
    meta.provenance = {**meta.provenance, **card.get("provenance", {})}
    meta.extra = {**meta.extra, "weights_dtype": "float16" if half else "float32"}
    save_model(target, tensors, meta)
    size = Path(target).stat().st_size
    if size > MAX_BYTES:
        Path(target).unlink()
        raise InputError(f"The shipped model would take {size / 2**20:.1f} MB (limit 30 MB).")
    return size


def state_dtype(path: str | Path) -> torch.dtype:
    """The dtype of the first floating-point weight (not a batch-norm statistic) of a model."""
    tensors = load_file(str(path))
    return next(
        v.dtype for k, v in tensors.items() if v.is_floating_point() and "running_" not in k
    )
