"""What both sides know of a training checkpoint: where its metadata is, and its epoch.

The engine writes checkpoints (``engine/mapping/checkpoints.py``); the plugin reads
how far one got, to tell the user after a crash or a cancel that it remains and how to
resume from it. Standard library only: the safetensors header is 8 bytes of length,
then JSON.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

#: The safetensors metadata entry holding a checkpoint's JSON metadata.
CHECKPOINT_KEY = "slidewise_checkpoint"
#: ``format`` in that metadata.
CHECKPOINT_FORMAT = "slidewise-mapping-checkpoint"
#: The largest header read (a checkpoint's header is a few hundred kB at most).
MAX_HEADER_BYTES = 64 * 1024 * 1024


def checkpoint_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The metadata of a Slidewise checkpoint, or ``None`` if the file is not one."""
    try:
        with open(path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            if size > MAX_HEADER_BYTES:
                return None
            header = json.loads(handle.read(size))
        meta = json.loads(header["__metadata__"][CHECKPOINT_KEY])
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == CHECKPOINT_FORMAT else None


def checkpoint_epochs(path: str | os.PathLike[str]) -> int | None:
    """The epochs a checkpoint has done, or ``None`` if it is not a readable checkpoint."""
    meta = checkpoint_metadata(path)
    try:
        return None if meta is None else int(meta["epoch"])
    except (KeyError, TypeError, ValueError):
        return None
