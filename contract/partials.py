"""The naming rules of what a run writes: partial files, the resume state, the manifest.

The engine writes every output through :func:`partial_path`, renames it into
place when whole, then writes the run's manifest (:func:`manifest_path`) and
sends its result. The plugin removes what a stopped worker left with
:func:`remove_partials` and :func:`remove_unfinished_outputs`. One rule, both sides.
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


def manifest_path(output: str | os.PathLike[str]) -> Path:
    """Where the manifest of a run whose main output is ``output`` goes."""
    out = Path(output)
    return out.with_name(out.stem + ".manifest.json")


#: One file's identity on disk (device, inode): renaming a new file into place changes it.
FileStamp = tuple[int, int]


def _stamp(path: Path) -> FileStamp | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if path.is_file() else None


def output_stamps(outputs: list[str]) -> dict[str, FileStamp | None]:
    """The files a run may write (its outputs and their manifests), as they are before it.

    Returns:
        Each path with its stamp, ``None`` where no file is there yet.
    """
    paths = [Path(p) for p in outputs if p]
    paths += [manifest_path(p) for p in paths]
    return {str(p): _stamp(p) for p in paths}


def remove_unfinished_outputs(stamps: dict[str, FileStamp | None]) -> list[Path]:
    """Delete the files a run that did not finish created or replaced since ``stamps``.

    A stop between renaming an output into place and sending the result leaves a
    whole file that no manifest describes and no result announced; the run counts
    as not done, so the file goes. A file the run did not replace (the same inode:
    an untouched earlier output, a GeoPackage written in place) stays.

    Args:
        stamps: What :func:`output_stamps` saw before the run.

    Returns:
        The files removed.
    """
    removed = []
    for name, before in stamps.items():
        path = Path(name)
        now = _stamp(path)
        if now is not None and now != before:
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed
