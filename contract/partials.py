"""The naming rule of partial files: outputs are written to a hidden sibling, then renamed.

The engine writes every output through :func:`partial_path`; the plugin removes
what a killed worker left with :func:`remove_partials`. One rule, both sides.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

PARTIAL_TAG = ".partial-"


def partial_path(path: str | os.PathLike[str], token: str | None = None) -> Path:
    """Return the temporary sibling path used while ``path`` is being written.

    Args:
        path: Final output path.
        token: Unique token; a random one is drawn when omitted.

    Returns:
        ``<dir>/.<stem>.partial-<token><suffix>``: hidden, same directory (so the
        rename is atomic) and same suffix (so drivers that look at it still work).
    """
    final = Path(path)
    token = token or uuid.uuid4().hex[:12]
    return final.with_name(f".{final.stem}{PARTIAL_TAG}{token}{final.suffix}")


def partial_glob(path: str | os.PathLike[str]) -> str:
    """Glob pattern matching every temporary file of ``path``."""
    final = Path(path)
    return f".{final.stem}{PARTIAL_TAG}*"


def remove_partials(path: str | os.PathLike[str]) -> list[Path]:
    """Delete leftover temporary files of ``path`` and return what was removed."""
    final = Path(path)
    removed = []
    if final.parent.is_dir():
        for leftover in final.parent.glob(partial_glob(final)):
            with contextlib.suppress(OSError):
                leftover.unlink()
                removed.append(leftover)
    return removed


#: Token of the state file of a resumable run (``engine/core/resume.py``).
RESUME_TOKEN = "resume"


def resume_state_path(path: str | os.PathLike[str]) -> Path:
    """The state file of a resumable run writing ``path``: ``.<stem>.partial-resume.json``.

    It follows the partial naming rule, so :func:`remove_partials` removes it too.
    """
    return partial_path(path, RESUME_TOKEN).with_suffix(".json")


def resumable(outputs: list[str]) -> bool:
    """True when a killed run writing ``outputs`` left a state to resume from.

    After a crash (not a Cancel) its partial files are kept: the same run started
    again continues from its last checkpoint.
    """
    return any(resume_state_path(p).is_file() for p in outputs if p)
