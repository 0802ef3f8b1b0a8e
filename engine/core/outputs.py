"""Atomic outputs: write to a temporary sibling file, rename when complete.

A cancelled or failed job never leaves a half-written output behind. The
temporary names follow one pattern (:func:`partial_path`) so that the plugin
can also remove them after it had to kill a worker.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from slidewise.contract.partials import partial_path


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` can be created and return it as a :class:`Path`.

    Raises:
        InputError: the folder does not exist or is not writable.
    """
    from slidewise.engine.core.errors import InputError

    final = Path(path)
    if not str(path):
        raise InputError("No output path was given: choose a file to write.")
    parent = final.parent if str(final.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(
            f"The output folder '{parent}' does not exist: create it or choose another path."
        )
    if not os.access(parent, os.W_OK):
        raise InputError(f"The output folder '{parent}' is not writable: choose another path.")
    if final.is_dir():
        raise InputError(f"The output path '{final}' is a folder: give a file name.")
    return final


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``path``, else delete it.

    Args:
        path: Final output path.

    Yields:
        The temporary path to write to.
    """
    final = check_writable(path)
    tmp = partial_path(final)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        # Sidecar files some drivers create next to the temporary file.
        for sidecar in tmp.parent.glob(tmp.name + ".*"):
            with contextlib.suppress(OSError):
                sidecar.unlink()
        raise
    if not tmp.exists():
        raise RuntimeError(f"internal error: nothing was written to {tmp}")
    os.replace(tmp, final)
    for sidecar in tmp.parent.glob(tmp.name + ".*"):
        with contextlib.suppress(OSError):
            os.replace(sidecar, final.with_name(final.name + sidecar.name[len(tmp.name) :]))
