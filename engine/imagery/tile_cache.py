"""Resumable tiled prediction: the predicted tile rows are kept on disk until the job ends.

The model is by far the costliest part of tiled prediction; blending the tiles
and writing the outputs is cheap. So a tiled job is made resumable by keeping
each predicted tile row (:class:`.tiling.TileRow`: the tiles' probabilities,
the valid pixels, the AOI) in a cache file next to its first output,
``.<stem>.partial-tiles-<key>.npy``, appended and synced row by row. A job
killed half-way (SIGKILL, the machine restarting) and started again with the
same parameters and inputs (the same key, :func:`slidewise.engine.core.resume.run_key`)
reads the finished rows back instead of predicting them, says
"Resuming a stopped run: from tile row N of M", and blends and writes every
output afresh with the one-process code: the outputs are the same numbers as
an uninterrupted run.

The cache follows the partial naming rule, with a state file
(:func:`slidewise.contract.partials.resume_state_path`), so a Cancel or an
error removes it with the other partial files and a crash seen by the plugin
keeps it. Success removes it. It holds about 4 bytes per predicted pixel
(8 when the tiles carry the TTA members' variance, ``TilingOptions.spread``;
x the tile redundancy, ~1.1-1.3): plan the space next to the outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.contract.partials import partial_glob, partial_path
from slidewise.engine.core.resume import kill_if_asked, state_path
from slidewise.engine.imagery.tiling import TileRow

#: Partial-file token prefix of the tile cache.
CACHE_TOKEN = "tiles-"


@dataclass
class TileRowCache:
    """The tile rows of a resumable run on disk.

    Attributes:
        path: The cache file.
        done: Tile rows read back from an earlier run (the run predicts the rest).
    """

    path: Path
    done: int = 0

    def rows(self) -> Iterator[TileRow]:
        """The cached tile rows, in order (a record cut short by a kill ends the list)."""
        if not self.path.is_file():
            return
        with self.path.open("rb") as f:
            for _ in range(self.done):
                yield _read_row(f)

    def count(self) -> int:
        """Complete tile rows in the file; cuts off a record a kill left incomplete."""
        if not self.path.is_file():
            return 0
        n, end = 0, 0
        with self.path.open("r+b") as f:
            while True:
                try:
                    _read_row(f)
                except (ValueError, EOFError, OSError):
                    break
                n, end = n + 1, f.tell()
            f.truncate(end)
        return n

    def keep(self, rows: Iterable[TileRow]) -> Iterator[TileRow]:
        """Append each row to the file (synced) as it passes; the kill test hook counts them."""
        with self.path.open("ab") as f:
            for row in rows:
                _write_row(f, row)
                f.flush()
                os.fsync(f.fileno())
                kill_if_asked(row.index + 1)
                yield row


def _write_row(f: Any, row: TileRow) -> None:
    head = [row.index, row.skipped, row.passes, len(row.tiles), int(row.aoi is not None)]
    np.save(f, np.asarray(head, dtype=np.int64))
    np.save(f, np.asarray([x for x, _ in row.tiles], dtype=np.int64))
    for _, prob in row.tiles:
        np.save(f, prob)
    np.save(f, row.valid)
    if row.aoi is not None:
        np.save(f, row.aoi)


def _read_row(f: Any) -> TileRow:
    index, skipped, passes, n, has_aoi = (int(v) for v in np.load(f))
    xs = np.load(f)
    tiles = [(int(x), np.load(f)) for x in xs[:n]]
    valid = np.load(f)
    aoi = np.load(f) if has_aoi else None
    return TileRow(index, tiles, valid, aoi, skipped, passes)


def cache_path(output: str, key: str) -> Path:
    """The tile cache of the run of ``key`` writing ``output`` first."""
    return partial_path(output, CACHE_TOKEN + key[:12]).with_suffix(".npy")


def _saved_state(output: str) -> dict[str, Any] | None:
    try:
        saved = json.loads(state_path(output).read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def clear_stale(request: TileCacheRequest) -> None:
    """Before the outputs are opened: remove what a killed run left, but a cache to resume from.

    The partial outputs of a killed run are always removed (the outputs are
    written afresh); its tile cache and state are kept when its key is this
    run's. Another key's leftovers are removed and the log says so.
    """
    first = request.outputs[0]
    saved = _saved_state(first)
    keep = set()
    if saved is not None and saved.get("key") == request.key:
        keep = {cache_path(first, request.key), state_path(first)}
    stale = [
        leftover
        for output in request.outputs
        for leftover in Path(output).parent.glob(partial_glob(output))
        if leftover not in keep
    ]
    if not keep and (saved is not None or stale):
        request.log("Partial files of another run were found next to the output: starting afresh.")
    for leftover in stale:
        with contextlib.suppress(OSError):
            leftover.unlink()


@contextlib.contextmanager
def tile_cache(
    outputs: Sequence[str], key: str, total: int, log: Callable[[str], None]
) -> Iterator[TileRowCache]:
    """The tile cache of a run writing ``outputs`` (the first holds it); removed at the end.

    An earlier run with the same key (see :func:`clear_stale`) resumes: its
    finished rows are reused. The cache and the state file are removed when
    the block ends, whether it succeeds or fails; only a hard kill leaves them.
    """
    first = outputs[0]
    state = state_path(first)
    cache = TileRowCache(cache_path(first, key))
    saved = _saved_state(first)
    if saved and saved.get("key") == key and saved.get("total") == total:
        cache.done = cache.count()
        log(f"Resuming a stopped run: from tile row {cache.done + 1} of {total}.")
    else:
        with contextlib.suppress(OSError):
            cache.path.unlink()
    state.write_text(json.dumps({"key": key, "total": total}))
    try:
        yield cache
    finally:
        for path in (cache.path, state):
            with contextlib.suppress(OSError):
                path.unlink()


@dataclass(frozen=True)
class TileCacheRequest:
    """Make a tiled prediction resumable (:attr:`.tiling.TilingOptions.cache`).

    Attributes:
        outputs: The job's output paths (the cache lives next to the first).
        key: The run's key (:func:`slidewise.engine.core.resume.run_key`).
        log: Where to say that the run resumes or starts afresh.
    """

    outputs: tuple[str, ...]
    key: str
    log: Callable[[str], None]


def cached_rows(
    request: TileCacheRequest, total: int, compute: Callable[[int], Iterable[TileRow]]
) -> Iterator[TileRow]:
    """All ``total`` tile rows in order: the cached ones, then ``compute(first uncached)``."""
    with tile_cache(request.outputs, request.key, total, request.log) as cache:
        yield from cache.rows()
        yield from cache.keep(compute(cache.done))
