"""The scenes of a Map scenes run: from a folder, a list file or a footprint layer.

Each scene is a raster path with an optional region and acquisition date, and a
name (the file stem, made unique within the run) that names its outputs and its
polygons in the inventory.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.engine.core.errors import InputError

#: Rasters a scene folder is searched for (not its sub-folders).
SCENE_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


@dataclass(frozen=True)
class Scene:
    """One raster to map.

    Attributes:
        name: Unique name in the run (file stem; ``-2``, ``-3``... for repeated stems).
        path: The raster.
        region: Region, or ``""``.
        date: Acquisition date (ISO 8601, ``YYYY-MM-DD``), or ``""``.
    """

    name: str
    path: str
    region: str = ""
    date: str = ""


@dataclass(frozen=True)
class SceneFields:
    """Where the path, region and date of each scene are (list columns, layer fields).

    Attributes:
        path: Field holding the raster path.
        region: Field holding the region (optional in the data).
        date: Field holding the acquisition date (optional in the data).
    """

    path: str = "path"
    region: str = "region"
    date: str = "date"


def list_scenes(
    folder: str | None, list_file: str | None, footprints: str | None, names: SceneFields
) -> list[Scene]:
    """The scenes from exactly one of a folder, a list file or a footprint layer.

    Raises:
        InputError: none or several sources given, an empty source, a missing path
            field, or a date that is not ISO 8601.
    """
    given = [s for s in (folder, list_file, footprints) if s]
    if len(given) != 1:
        raise InputError(
            "Give exactly one source of scenes: SCENE_FOLDER, SCENE_LIST or FOOTPRINTS "
            f"({len(given)} given)."
        )
    if folder:
        rows = folder_rows(folder)
        where = f"folder '{folder}'"
    elif list_file:
        rows = list_rows(list_file, names)
        where = f"scene list '{Path(list_file).name}'"
    else:
        rows = footprint_rows(str(footprints), names)
        where = f"footprint layer '{Path(str(footprints)).name}'"
    if not rows:
        raise InputError(f"The {where} names no scene: give at least one raster.")
    return unique_scenes(rows, where)


def folder_rows(folder: str) -> list[dict[str, str]]:
    """The rasters of a folder, in name order."""
    p = Path(folder)
    if not p.is_dir():
        raise InputError(f"The scene folder '{p}' does not exist: check SCENE_FOLDER.")
    files = sorted(
        f
        for f in p.iterdir()
        if f.is_file() and f.suffix.lower() in SCENE_SUFFIXES and not f.name.startswith(".")
    )  # hidden files are partial outputs of running jobs
    return [{"path": str(f)} for f in files]


def list_rows(path: str, names: SceneFields) -> list[dict[str, str]]:
    """The rows of a list file: one path per line, or a CSV table with a header.

    A first line that holds the path field's name is a CSV header; otherwise every
    non-empty line not starting with ``#`` is a path. Relative paths are relative
    to the list's folder.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"The scene list '{p}' does not exist: check SCENE_LIST.")
    lines = [x for x in p.read_text(encoding="utf-8-sig").splitlines() if x.strip()]
    lines = [x for x in lines if not x.lstrip().startswith("#")]
    if not lines:
        return []
    header = [c.strip() for c in next(csv.reader([lines[0]]))]
    if names.path not in header:
        return [{"path": _resolved(x.strip(), p.parent)} for x in lines]
    rows = []
    for row in csv.DictReader(lines):
        if not str(row.get(names.path) or "").strip():
            continue
        rows.append(
            {
                "path": _resolved(str(row[names.path]).strip(), p.parent),
                "region": str(row.get(names.region) or "").strip(),
                "date": str(row.get(names.date) or "").strip(),
            }
        )
    return rows


def footprint_rows(path: str, names: SceneFields) -> list[dict[str, str]]:
    """The rows of a footprint layer: path, region and date attributes of each feature."""
    from slidewise.engine.geo.vectors import read_vector

    layer = read_vector(path, what="footprint layer")
    if names.path not in layer.fields:
        raise InputError(
            f"The footprint layer '{Path(path).name}' has no field '{names.path}': set "
            f"PATH_FIELD to one of {', '.join(layer.fields) or 'its fields (it has none)'}."
        )
    n = len(layer)
    empty = np.full(n, "", dtype=object)
    paths = layer.fields[names.path]
    regions = layer.fields.get(names.region, empty)
    dates = layer.fields.get(names.date, empty)
    folder = Path(path).parent
    return [
        {"path": _resolved(_text(paths[i]), folder), "region": _text(regions[i]),
         "date": _text(dates[i])}
        for i in range(n)
        if _text(paths[i])
    ]  # fmt: skip


def unique_scenes(rows: list[dict[str, str]], where: str) -> list[Scene]:
    """Scenes named by their file stems, ``-2``, ``-3``... added to repeated stems."""
    scenes = []
    taken: dict[str, int] = {}
    for row in rows:
        stem = Path(row["path"]).stem or "scene"
        taken[stem] = taken.get(stem, 0) + 1
        name = stem if taken[stem] == 1 else f"{stem}-{taken[stem]}"
        date = iso_date(row.get("date", ""), f"{name} in the {where}")
        scenes.append(Scene(name, row["path"], row.get("region", ""), date))
    return scenes


def iso_date(value: Any, what: str) -> str:
    """``YYYY-MM-DD`` from a date or date-time text (``""`` for none).

    Raises:
        InputError: the value is not an ISO 8601 date.
    """
    text = _text(value)
    if not text:
        return ""
    try:
        return dt.date.fromisoformat(text[:10]).isoformat()
    except ValueError:
        raise InputError(
            f"The date '{text}' of scene {what} is not an ISO 8601 date: write it as "
            "YYYY-MM-DD (for example 2024-07-31)."
        ) from None


def _text(value: Any) -> str:
    """A field value as text (``""`` for missing values)."""
    if value is None:
        return ""
    if isinstance(value, float) and np.isnan(value):
        return ""
    if isinstance(value, np.datetime64):
        return "" if np.isnat(value) else str(value)
    return str(value).strip()


def _resolved(path: str, folder: Path) -> str:
    """A path from a list or layer: relative ones are relative to ``folder``."""
    if path.startswith("/vsi") or "://" in path:
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else folder / p)
