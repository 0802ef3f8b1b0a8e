"""Model files: safetensors tensors plus a JSON metadata header.

A Slidewise model file is a ``.safetensors`` file whose string metadata holds
one key, ``slidewise``, with a JSON document (:class:`ModelMetadata`). Loading
never unpickles: safetensors stores raw tensors only.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slidewise.engine.core.errors import ModelFileError
from slidewise.engine.core.outputs import atomic_output

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT_NAME = "slidewise-model"
FORMAT_VERSION = 1
METADATA_KEY = "slidewise"
#: Metadata key of the SHA-256 of the tensors (:func:`tensor_checksum`); files written
#: before it existed have none and still load, with a note.
CHECKSUM_KEY = "slidewise_tensors_sha256"
TASKS = ("susceptibility", "mapping", "multiregion", "detection", "encoder")


class ModelFileNote(UserWarning):
    """A note about a model file that still loads (for example: it has no checksum)."""


@dataclass
class ModelMetadata:
    """What a model file says about its model.

    Attributes:
        task: What the model does: one of :data:`TASKS`.
        architecture: Architecture name (for example ``unet``, ``maml-mlp``).
        config: Everything needed to rebuild the architecture.
        bands: Input band names, in order.
        normalisation: Fitted input normalisation (for example per-band mean/std).
        pixel_size: Pixel size (x, y) of the training data, in CRS units.
        tile_size: Tile side used in training, in pixels.
        class_names: Output class names (index = class value; 1 = landslide).
        provenance: Training data, parameters, seed, package versions, dates.
        metrics: Validation metrics.
        extra: Task-specific additions.
    """

    task: str
    architecture: str
    config: dict[str, Any] = field(default_factory=dict)
    bands: list[str] = field(default_factory=list)
    normalisation: dict[str, Any] = field(default_factory=dict)
    pixel_size: list[float] | None = None
    tile_size: int | None = None
    class_names: list[str] = field(default_factory=lambda: ["background", "landslide"])
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise with the format name and version."""
        from slidewise.engine.core.protocol import json_safe

        doc = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **asdict(self)}
        return json.dumps(json_safe(doc), allow_nan=False)

    @classmethod
    def from_json(cls, text: str, source: str = "model file") -> ModelMetadata:
        """Parse metadata, checking format name and version."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelFileError(
                f"The {source} has a corrupted metadata header ({exc}): "
                "train or export the model again."
            ) from None
        if doc.get("format") != FORMAT_NAME:
            raise ModelFileError(f"The {source} is not a Slidewise model file.")
        if int(doc.get("format_version", 0)) > FORMAT_VERSION:
            raise ModelFileError(
                f"The {source} was written by a newer Slidewise (format "
                f"{doc.get('format_version')}): update the plugin."
            )
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in doc.items() if k in known})


def save_model(
    path: str | os.PathLike[str],
    tensors: dict[str, torch.Tensor],
    metadata: ModelMetadata,
) -> Path:
    """Write tensors and metadata to a safetensors file atomically.

    Args:
        path: Output path (``.safetensors`` recommended).
        tensors: Named tensors (state dict); made contiguous and moved to CPU.
        metadata: The model's metadata.

    Returns:
        The written path.
    """
    from safetensors.torch import save_file

    if metadata.task not in TASKS:
        raise ValueError(f"unknown task {metadata.task!r}")
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {METADATA_KEY: metadata.to_json(), CHECKSUM_KEY: tensor_checksum(clean)}
    with atomic_output(path) as tmp:
        save_file(clean, str(tmp), metadata=header)
    return Path(path)


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of the tensors: names, dtypes, shapes and raw bytes, by name.

    Args:
        tensors: CPU tensors.
    """
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        if value.numel():
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def verify_checksum(
    tensors: dict[str, torch.Tensor],
    stored: str | None,
    source: str,
    kind: str = "model file",
    fix: str = "Copy the model file again from a good copy, or train the model again.",
) -> None:
    """Compare the tensors with the checksum stored in their file.

    A file without a checksum (written by an older Slidewise) passes with a
    :class:`ModelFileNote` warning.

    Args:
        tensors: The tensors read from the file.
        stored: The checksum its header holds (``None``: none).
        source: The file's name, for the messages.
        kind: What the file is (``model file``, ``checkpoint``), for the messages.
        fix: What the user can do about a damaged file.

    Raises:
        ModelFileError: the tensors differ from what was saved (a damaged file).
    """
    if not stored:
        warnings.warn(
            f"The {kind} '{source}' has no checksum (written by an older Slidewise): its "
            "weights cannot be checked for damage.",
            ModelFileNote,
            stacklevel=3,
        )
        return
    if tensor_checksum(tensors) != stored:
        raise ModelFileError(
            f"The {kind} '{source}' is damaged: its weights do not match the checksum "
            f"stored when it was saved (the file was changed or corrupted after saving). {fix}"
        )


def read_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """Read only the metadata of a model file (cheap: no tensors are loaded)."""
    meta = _read_header(path)
    return ModelMetadata.from_json(meta[METADATA_KEY], source=f"model file '{Path(path).name}'")


def _read_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a Slidewise model file (the Slidewise key checked)."""
    p = _check_path(path)
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception as exc:
        raise ModelFileError(
            f"The model file '{p.name}' is not a valid safetensors file ({exc}): "
            "choose a model file written by Slidewise, or train the model again."
        ) from None
    if METADATA_KEY not in meta:
        raise ModelFileError(
            f"The model file '{p.name}' has no Slidewise metadata: it was not written by "
            "Slidewise. Train a model with a Slidewise training algorithm."
        )
    return dict(meta)


def load_model(
    path: str | os.PathLike[str],
    task: str | tuple[str, ...] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, torch.Tensor], ModelMetadata]:
    """Load tensors and metadata, checking the task.

    Args:
        path: Model file.
        task: Task (or tasks) the caller can use; ``None`` accepts any.
        device: Device to load tensors onto.

    Returns:
        ``(tensors, metadata)``.

    Raises:
        ModelFileError: missing, corrupted, foreign, or for another task.
    """
    from safetensors.torch import load_file

    header = _read_header(path)
    name = Path(path).name
    metadata = ModelMetadata.from_json(header[METADATA_KEY], source=f"model file '{name}'")
    wanted = (task,) if isinstance(task, str) else task
    if wanted is not None and metadata.task not in wanted:
        raise ModelFileError(
            f"The model file '{Path(path).name}' holds a {metadata.task} model "
            f"({metadata.architecture}), but this algorithm needs a {' or '.join(wanted)} "
            "model: choose a model trained for this task."
        )
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:
        raise ModelFileError(
            f"The model file '{name}' is corrupted ({exc}): train the model again."
        ) from None
    verify_checksum(tensors, header.get(CHECKSUM_KEY), name)
    if str(device) != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, metadata


def _check_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not str(path):
        raise ModelFileError("No model file was given: choose a .safetensors model file.")
    if not p.is_file():
        raise ModelFileError(f"The model file '{p}' does not exist: check the path.")
    return p


def state_dict_mismatch(
    expected: dict[str, torch.Tensor],
    given: dict[str, torch.Tensor],
    shown: int = 8,
    shape_sep: str = ", ",
    more_shapes: bool = True,
) -> list[str]:
    """What keeps ``given`` from loading strictly into a module with state ``expected``.

    Args:
        expected: The module's state dict.
        given: The tensors to load.
        shown: How many missing or unexpected keys each part names.
        shape_sep: Separator of the (at most 3) mis-shaped tensors named.
        more_shapes: Say how many more tensors have another shape (``and 2 more``).

    Returns:
        Message parts (``"2 missing key(s): a, b"``, ``"1 unexpected key(s): ..."``,
        ``"1 tensor(s) with another shape: k (3,) instead of (4,)"``); empty when it fits.
    """

    def show(keys: list[str], n: int, sep: str = ", ", rest: bool = True) -> str:
        more = f" and {len(keys) - n} more" if rest and len(keys) > n else ""
        return sep.join(keys[:n]) + more

    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(
        f"{k} {tuple(given[k].shape)} instead of {tuple(expected[k].shape)}"
        for k in set(expected) & set(given)
        if tuple(expected[k].shape) != tuple(given[k].shape)
    )
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {show(missing, shown)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {show(unexpected, shown)}")
    if wrong:
        parts.append(
            f"{len(wrong)} tensor(s) with another shape: {show(wrong, 3, shape_sep, more_shapes)}"
        )
    return parts


def load_strict(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load ``tensors`` into ``model`` with strict key and shape checking.

    Args:
        model: The freshly built model.
        tensors: Its weights, as read from a model file.
        source: The file's name, for the message.

    Raises:
        ModelFileError: missing, unexpected or mis-shaped weights (the file is
            damaged or was edited).
    """
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(
            f"The weights in '{source}' do not fit the stored model "
            f"({str(exc).splitlines()[0]}): the file is damaged or was edited."
        ) from None
