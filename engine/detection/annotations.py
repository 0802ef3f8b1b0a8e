"""Reading detection datasets: Pascal VOC, COCO, masks and polygons.

Four sources are read into one
:class:`~slidewise.engine.detection.data.DetectionSet` (a list of
:class:`~slidewise.engine.detection.data.DetectionSample`, each an image path
with ``(N, 4)`` boxes ``x1, y1, x2, y2`` in image pixels, corners on pixel
edges: a box around pixel column 0 only is ``0..1``):

* ``voc``: a folder of Pascal VOC pairs, ``<name>.jpg`` (or .png/.tif) with
  ``<name>.xml`` (:func:`read_voc`). File names may contain spaces.
* ``coco``: a COCO JSON file (``images``, ``annotations`` with ``bbox =
  [x, y, width, height]``) with images next to it or in an ``images`` folder
  (:func:`read_coco`). Crowd annotations (``iscrowd = 1``) are dropped.
* ``masks``: image/mask pairs (a folder with ``images`` and ``masks``
  subfolders); boxes are the connected components of the landslide pixels
  with at least ``min_area`` pixels (:func:`read_mask_pairs`,
  :func:`~slidewise.engine.detection.boxes.boxes_from_mask`), the way the
  Landslide4Sense boxes were made.
* polygons: georeferenced images with a landslide polygon layer; every polygon
  that reaches the image gives the box of its pixel-coordinate bounds
  (:func:`read_polygon_images`,
  :func:`~slidewise.engine.detection.boxes.boxes_from_polygons`).

The image size always comes from the image file, never from the annotation.
When an annotation states another size (the ``l4s_rgb`` XMLs say 128 x 128
for 224 x 224 JPEGs), the frame of its boxes is decided from the data, per
group of files with the same stated and real size (:func:`resolve_box_frame`):
a box reaching past the stated size proves that the boxes are in image pixels
(the stated size is wrong); a box reaching past the image proves that they are
in the stated frame, and they are scaled by real / stated size; when neither
happens the boxes are kept as they are (image pixels) with a warning. On
``l4s_rgb`` 1,320 of the 1,440 training files (281 of 309 validation files)
have boxes reaching past 128 px (up to 224), and drawn on the JPEGs the
unscaled boxes frame the bright landslide scars while scaled ones do not: the
boxes are in 224-px image coordinates and are not scaled.

Boxes are clipped to the image; boxes thinner than ``min_size`` pixels after
clipping are dropped; both are counted and reported. Images whose annotation
has no box are kept as negatives (images without landslides) and counted.
Every other problem (unreadable or empty annotation files, an annotation
without its image, missing box coordinates) is an :class:`InputError` naming
the file.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slidewise.contract.specs.traindetection import BOX_FRAMES, FORMATS
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import Warn
from slidewise.engine.detection.boxes import boxes_from_mask, boxes_from_polygons, clip_boxes
from slidewise.engine.detection.data import DetectionSample, DetectionSet, band_names, image_size

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def _show(items: Sequence[str], n: int = 5) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(f"'{i}'" for i in items[:n]) + more


# --------------------------------------------------------------------------- box frame


@dataclass
class _Annotated:
    """One parsed annotation before the frame decision."""

    image: Path
    boxes: np.ndarray
    stated: tuple[int, int] | None  # (width, height) stated by the annotation
    real: tuple[int, int]  # (width, height) of the image file
    source: str
    bands: int = 3


def resolve_box_frame(
    stated: tuple[int, int], real: tuple[int, int], boxes: np.ndarray, setting: str = "auto"
) -> tuple[str, str]:
    """Decide whether boxes of a group of annotations are in image or stated pixels.

    Args:
        stated: ``(width, height)`` the annotations state.
        real: ``(width, height)`` of the image files.
        boxes: All boxes of the group, ``(N, 4)``.
        setting: ``auto`` (decide from the data), ``image`` or ``annotation``.

    Returns:
        ``(frame, reason)`` with frame ``image`` (keep boxes) or ``annotation``
        (scale by real / stated size).

    Raises:
        InputError: the boxes fit neither frame.
    """
    sw, sh = stated
    rw, rh = real
    if setting in ("image", "annotation"):
        return setting, f"BOX_COORDINATES={setting} was given"
    tol = 1.0
    if len(boxes) == 0:
        return "image", "no boxes to decide from; image pixels assumed"
    max_x = float(boxes[:, [0, 2]].max())
    max_y = float(boxes[:, [1, 3]].max())
    past_stated = max_x > sw + tol or max_y > sh + tol
    past_real = max_x > rw + tol or max_y > rh + tol
    if past_stated and past_real:
        raise InputError(
            f"Boxes reach {max_x:g} x {max_y:g} px, beyond both the stated size {sw} x {sh} "
            f"and the image size {rw} x {rh}: the annotations do not belong to these images; "
            "check the files."
        )
    if past_stated:
        return "image", (
            f"boxes reach {max_x:g} x {max_y:g} px, past the stated {sw} x {sh}: they are in "
            f"image pixels ({rw} x {rh}) and are not scaled"
        )
    if past_real:
        return "annotation", (
            f"boxes reach {max_x:g} x {max_y:g} px, past the image size {rw} x {rh}: they are "
            f"in the stated {sw} x {sh} frame and are scaled by {rw / sw:g} x {rh / sh:g}"
        )
    return "image", (
        f"every box fits both the stated {sw} x {sh} and the image size {rw} x {rh}: boxes are "
        "kept in image pixels (set BOX_COORDINATES=annotation if they are in the stated frame)"
    )


def _finish(
    items: list[_Annotated],
    source: str,
    fmt: str,
    box_frame: str,
    min_size: float,
    warn: Warn | None,
) -> DetectionSet:
    """Apply the frame decision, clip, count, and build the set."""
    if box_frame not in BOX_FRAMES:
        raise InputError(f"Unknown box frame '{box_frame}': use one of {', '.join(BOX_FRAMES)}.")
    notes: list[str] = []
    groups: dict[tuple[tuple[int, int], tuple[int, int]], list[_Annotated]] = {}
    for it in items:
        if it.stated is not None and it.stated != it.real and min(it.stated) > 0:
            groups.setdefault((it.stated, it.real), []).append(it)
    for (stated, real), members in sorted(groups.items()):
        allb = np.concatenate([m.boxes for m in members]) if members else np.zeros((0, 4))
        frame, reason = resolve_box_frame(stated, real, allb, box_frame)
        note = (
            f"{len(members)} annotation(s) state {stated[0]} x {stated[1]} px but the images are "
            f"{real[0]} x {real[1]} px: {reason}."
        )
        notes.append(note)
        if warn is not None:
            warn(note)
        if frame == "annotation":
            scale = np.array([real[0] / stated[0], real[1] / stated[1]] * 2, np.float32)
            for m in members:
                m.boxes = m.boxes * scale
    samples = []
    clipped = dropped = 0
    for it in items:
        boxes, c, d = clip_boxes(it.boxes, it.real[0], it.real[1], min_size)
        clipped += c
        dropped += d
        samples.append(DetectionSample(it.image, boxes, it.real[0], it.real[1]))
    samples.sort(key=lambda s: s.name)
    if clipped or dropped:
        note = (
            f"{clipped} box(es) reaching outside their image were clipped and {dropped} "
            f"degenerate box(es) (thinner than {min_size:g} px after clipping) were dropped."
        )
        notes.append(note)
        if warn is not None:
            warn(note)
    negatives = sum(1 for s in samples if len(s.boxes) == 0)
    if negatives:
        notes.append(
            f"{negatives} image(s) without boxes are kept as negatives (images without landslides)."
        )
    counts = {it.bands for it in items}
    if len(counts) > 1:
        raise InputError(
            f"The images in '{source}' have different band counts ({sorted(counts)}): use "
            "images with the same bands."
        )
    n_bands = counts.pop() if counts else 3
    return DetectionSet(samples, band_names(n_bands), source, fmt, notes)


# --------------------------------------------------------------------------- VOC


def _xml_number(node: ET.Element | None, tag: str, where: str) -> float:
    child = node.find(tag) if node is not None else None
    if child is None or child.text is None or not child.text.strip():
        raise InputError(f"{where} has no <{tag}>: every <bndbox> needs xmin, ymin, xmax, ymax.")
    try:
        return float(child.text.strip())
    except ValueError:
        raise InputError(
            f"{where} has <{tag}>{child.text}</{tag}>, which is not a number."
        ) from None


def parse_voc_xml(path: Path) -> tuple[str | None, tuple[int, int] | None, np.ndarray, list[str]]:
    """Parse one Pascal VOC annotation.

    Returns:
        ``(filename, stated_size, boxes, class_names)``: the ``<filename>``
        (``None`` when absent), the ``<size>`` as ``(width, height)`` (``None``
        when absent or zero), ``(N, 4)`` boxes and the object names.

    Raises:
        InputError: empty or malformed XML, or a box without coordinates.
    """
    p = Path(path)
    if p.stat().st_size == 0:
        raise InputError(
            f"The annotation file '{p.name}' is empty: write its <annotation> (an image "
            "without landslides needs an <annotation> without <object>), or remove it."
        )
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as exc:
        raise InputError(
            f"The annotation file '{p.name}' is not valid XML ({exc}): fix or remove it."
        ) from None
    if root.tag != "annotation":
        raise InputError(
            f"The annotation file '{p.name}' is not a Pascal VOC annotation (its root is "
            f"<{root.tag}>, not <annotation>): use VOC XML files, or FORMAT coco/masks."
        )
    fname = root.findtext("filename")
    stated = None
    size = root.find("size")
    if size is not None:
        try:
            w = int(float(size.findtext("width") or 0))
            h = int(float(size.findtext("height") or 0))
        except ValueError:
            w = h = 0
        stated = (w, h) if w > 0 and h > 0 else None
    boxes, names = [], []
    for k, obj in enumerate(root.findall("object")):
        where = f"Object {k + 1} in '{p.name}'"
        bb = obj.find("bndbox")
        if bb is None:
            raise InputError(f"{where} has no <bndbox>: give its box or remove the object.")
        boxes.append([_xml_number(bb, t, where) for t in ("xmin", "ymin", "xmax", "ymax")])
        names.append((obj.findtext("name") or "").strip())
    arr = np.asarray(boxes, np.float32).reshape(-1, 4)
    return (fname.strip() if fname else None), stated, arr, names


def _find_image(xml: Path, filename: str | None) -> Path | None:
    for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
        candidate = xml.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    if filename:
        candidate = xml.parent / Path(filename).name
        if candidate.is_file():
            return candidate
    return None


def read_voc(
    folder: str | os.PathLike[str],
    box_frame: str = "auto",
    min_size: float = 1.0,
    classes: Sequence[str] | None = None,
    warn: Warn | None = None,
) -> DetectionSet:
    """Read a folder of Pascal VOC pairs (``<name>.<image>`` + ``<name>.xml``).

    The image of ``a b.xml`` is ``a b.jpg`` (or .jpeg/.png/.tif/.bmp), else the
    file named by ``<filename>`` in the same folder. Images without an XML are
    ignored (unlabelled, not negatives) and counted in the notes.

    Args:
        folder: The folder.
        box_frame: ``auto``, ``image`` or ``annotation`` (see :func:`resolve_box_frame`).
        min_size: Boxes thinner than this (pixels, after clipping) are dropped.
        classes: Object names that are landslides (case-insensitive); ``None`` = every object.
        warn: Receives warnings.

    Raises:
        InputError: missing folder, no XML files, an XML without its image, or a bad XML.
    """
    root = Path(folder)
    if not str(folder) or not root.exists():
        raise InputError(f"The VOC folder '{root}' does not exist: check the path.")
    if not root.is_dir():
        raise InputError(
            f"'{root}' is a file: FORMAT voc needs a folder of images with .xml annotations "
            "(use FORMAT coco for a COCO .json file)."
        )
    xmls = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".xml")
    if not xmls:
        raise InputError(
            f"The folder '{root}' holds no .xml annotation files: choose a Pascal VOC folder "
            "(image + .xml with the same name), or set FORMAT to coco or masks."
        )
    wanted = {c.strip().lower() for c in classes} if classes else None
    items: list[_Annotated] = []
    missing: list[str] = []
    skipped_objects = 0
    for xml in xmls:
        fname, stated, boxes, names = parse_voc_xml(xml)
        image = _find_image(xml, fname)
        if image is None:
            missing.append(xml.name)
            continue
        if wanted is not None:
            keep = np.array([n.lower() in wanted for n in names], dtype=bool)
            skipped_objects += int((~keep).sum())
            boxes = boxes[keep]
        h, w, nb = image_size(image)
        items.append(_Annotated(image, boxes, stated, (w, h), xml.name, nb))
    if missing:
        raise InputError(
            f"{len(missing)} annotation file(s) in '{root}' have no image: {_show(missing)}. "
            "Put the image (same name, .jpg/.png/.tif) next to each .xml, or remove the .xml."
        )
    used = {it.image.resolve() for it in items}
    unlabelled = [
        p.name
        for p in root.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.resolve() not in used
    ]
    out = _finish(items, str(root), "voc", box_frame, min_size, warn)
    if unlabelled:
        note = (
            f"{len(unlabelled)} image(s) without an .xml were ignored: {_show(sorted(unlabelled))}."
        )
        out.notes.append(note)
        if warn is not None:
            warn(note)
    if skipped_objects:
        out.notes.append(f"{skipped_objects} object(s) of other classes were ignored.")
    return out


# --------------------------------------------------------------------------- COCO


def read_coco(
    path: str | os.PathLike[str],
    image_dir: str | os.PathLike[str] | None = None,
    box_frame: str = "auto",
    min_size: float = 1.0,
    categories: Sequence[str] | None = None,
    warn: Warn | None = None,
) -> DetectionSet:
    """Read a COCO detection JSON (``bbox = [x, y, width, height]`` in pixels).

    Images are looked up in ``image_dir``, else next to the JSON, else in an
    ``images`` folder next to it. Images listed without annotations are kept as
    negatives.

    Args:
        path: The ``.json`` file, or a folder holding exactly one.
        image_dir: Folder of the images (optional).
        box_frame: ``auto``, ``image`` or ``annotation`` (stated ``width``/``height``).
        min_size: Boxes thinner than this (pixels, after clipping) are dropped.
        categories: Category names that are landslides; ``None`` = every category.
        warn: Receives warnings.

    Raises:
        InputError: missing or unreadable JSON, no images, missing images, bad boxes.
    """
    p = _coco_file(path)
    doc = _load_coco(p)
    dirs = [Path(image_dir)] if image_dir else [p.parent, p.parent / "images"]
    boxes = _coco_boxes(doc, categories, p.name)
    items = _coco_items(doc["images"], boxes, dirs, p.name)
    out = _finish(items, str(p), "coco", box_frame, min_size, warn)
    if boxes.crowd:
        out.notes.append(f"{boxes.crowd} crowd annotation(s) (iscrowd=1) were ignored.")
    if boxes.other:
        out.notes.append(f"{boxes.other} annotation(s) of other categories were ignored.")
    return out


@dataclass
class _CocoBoxes:
    """The boxes of a COCO file per image id, and the annotations left out."""

    by_image: dict[Any, list[list[float]]]
    crowd: int = 0
    other: int = 0


def _coco_file(path: str | os.PathLike[str]) -> Path:
    """The COCO JSON: ``path`` itself, or the one .json in the folder ``path``.

    Raises:
        InputError: a folder without exactly one .json, or a missing or empty file.
    """
    p = Path(path)
    if str(path) and p.is_dir():
        candidates = sorted(p.glob("*.json"))
        if len(candidates) != 1:
            raise InputError(
                f"The folder '{p}' holds {len(candidates)} .json files: give the COCO annotation "
                "file itself, or a folder with exactly one."
            )
        p = candidates[0]
    if not str(path) or not p.is_file():
        raise InputError(f"The COCO annotation file '{p}' does not exist: check the path.")
    if p.stat().st_size == 0:
        raise InputError(f"The COCO annotation file '{p.name}' is empty: choose a COCO .json file.")
    return p


def _load_coco(p: Path) -> dict[str, Any]:
    """The parsed COCO document, with a non-empty ``images`` list.

    Raises:
        InputError: not JSON, or not a COCO detection file.
    """
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(
            f"The COCO annotation file '{p.name}' is not valid JSON ({exc})."
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise InputError(
            f"The COCO annotation file '{p.name}' has no 'images' list: it is not a COCO "
            "detection file."
        )
    if not doc["images"]:
        raise InputError(f"The COCO annotation file '{p.name}' lists no images.")
    return doc


def _coco_boxes(doc: dict[str, Any], categories: Sequence[str] | None, name: str) -> _CocoBoxes:
    """``x1, y1, x2, y2`` boxes per image id (crowd and other categories left out).

    Raises:
        InputError: an annotation without a valid bbox.
    """
    cats = {c.get("id"): str(c.get("name", "")) for c in doc.get("categories") or []}
    wanted = {c.strip().lower() for c in categories} if categories else None
    found = _CocoBoxes({})
    for k, a in enumerate(doc.get("annotations") or []):
        if a.get("iscrowd"):
            found.crowd += 1
            continue
        if wanted is not None and cats.get(a.get("category_id"), "").lower() not in wanted:
            found.other += 1
            continue
        bbox = a.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise InputError(
                f"Annotation {k + 1} (id {a.get('id')}) in '{name}' has no valid bbox "
                "[x, y, width, height]."
            )
        x, y, w, h = (float(v) for v in bbox)
        found.by_image.setdefault(a.get("image_id"), []).append([x, y, x + w, y + h])
    return found


def _coco_items(
    images: list[dict[str, Any]], boxes: _CocoBoxes, dirs: list[Path], name: str
) -> list[_Annotated]:
    """One annotated image per listed image, found in ``dirs``.

    Raises:
        InputError: listed images that are in none of ``dirs``.
    """
    items: list[_Annotated] = []
    missing: list[str] = []
    for im in images:
        file_name = str(im.get("file_name", ""))
        found = next((d / file_name for d in dirs if (d / file_name).is_file()), None)
        if found is None:
            missing.append(file_name)
            continue
        h, w, nb = image_size(found)
        sw, sh = int(im.get("width") or 0), int(im.get("height") or 0)
        image_boxes = np.asarray(boxes.by_image.get(im.get("id"), []), np.float32).reshape(-1, 4)
        stated = (sw, sh) if sw > 0 and sh > 0 else None
        items.append(_Annotated(found, image_boxes, stated, (w, h), file_name, nb))
    if missing:
        raise InputError(
            f"{len(missing)} image(s) listed in '{name}' were not found in "
            f"{' or '.join(str(d) for d in dirs)}: {_show(missing)}. Give the image folder."
        )
    return items


# --------------------------------------------------------------------------- masks and polygons

_IMAGE_DIRS = ("images", "image", "img", "imgs")
_MASK_DIRS = ("masks", "mask", "labels", "label", "gt")


def _subfolder(root: Path, names: Sequence[str]) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


def read_mask_pairs(
    folder: str | os.PathLike[str],
    masks: str | os.PathLike[str] | None = None,
    min_area: int = 100,
    warn: Warn | None = None,
) -> DetectionSet:
    """Read image/mask pairs and derive boxes from connected landslide components.

    Args:
        folder: A folder with ``images`` and ``masks`` subfolders, or the image
            folder itself when ``masks`` is given.
        masks: The mask folder (optional). Masks are decoded with
            :func:`slidewise.engine.imagery.datasets.decode_mask` (0/1, 0/255, colour).
        min_area: Smallest component that becomes a box, in pixels (8-connected).
        warn: Receives warnings.

    Raises:
        InputError: no image/mask folders, unmatched pairs, unreadable masks.
    """
    from slidewise.engine.imagery.datasets import LabelMapping, discover_pairs
    from slidewise.engine.imagery.labels import decode_mask
    from slidewise.engine.imagery.scenes import read_picture

    root = Path(folder)
    if not str(folder) or not root.is_dir():
        raise InputError(
            f"The mask dataset folder '{root}' does not exist: give a folder with 'images' "
            "and 'masks' subfolders."
        )
    if masks:
        img_dir, mask_dir = root, Path(masks)
    else:
        img_dir = _subfolder(root, _IMAGE_DIRS)  # type: ignore[assignment]
        mask_dir = _subfolder(root, _MASK_DIRS)  # type: ignore[assignment]
        if img_dir is None or mask_dir is None:
            raise InputError(
                f"The folder '{root}' needs an 'images' and a 'masks' subfolder (files paired "
                "by name) for FORMAT masks."
            )
    items = []
    for image, mask in discover_pairs(img_dir, mask_dir):
        h, w, nb = image_size(image)
        labels = decode_mask(read_picture(mask, "mask"), LabelMapping(), f"mask '{mask.name}'")
        if labels.shape != (h, w):
            raise InputError(
                f"The mask '{mask.name}' is {labels.shape[1]} x {labels.shape[0]} px but its "
                f"image is {w} x {h}: masks must have the image's size."
            )
        boxes, _, _ = boxes_from_mask(labels == 1, min_area)
        items.append(_Annotated(image, boxes, None, (w, h), mask.name, nb))
    out = _finish(items, str(root), "masks", "image", 1.0, warn)
    out.notes.append(f"Boxes are connected components of >= {min_area} landslide pixels.")
    return out


def read_polygon_images(
    images: str | os.PathLike[str],
    polygons: str | os.PathLike[str],
    min_area: float = 1.0,
    warn: Warn | None = None,
) -> DetectionSet:
    """Georeferenced images with a landslide polygon layer: one box per polygon.

    Args:
        images: A GeoTIFF or a folder of GeoTIFFs.
        polygons: Polygon layer in the images' CRS.
        min_area: Smallest box kept (pixels, after clipping to the image).
        warn: Receives warnings.

    Raises:
        InputError: no rasters, unreadable layer, or a CRS that differs from an image's.
    """
    from slidewise.engine.geo.raster import open_raster
    from slidewise.engine.geo.vectors import read_vector, same_crs
    from slidewise.engine.imagery.datasets import RASTER_SUFFIXES, list_files

    layer = read_vector(polygons, "landslide polygon layer")
    items = []
    for path in list_files(images, RASTER_SUFFIXES, "images"):
        info = open_raster(path, "image")
        if layer.crs is not None and info.crs is not None and not same_crs(layer.crs, info.crs):
            raise InputError(
                f"The polygon layer and the image '{path.name}' have different CRSs: reproject "
                "the polygons to the images' CRS."
            )
        boxes = boxes_from_polygons(
            layer.geometries, info.transform, info.width, info.height, min_area
        )
        items.append(
            _Annotated(path, boxes, None, (info.width, info.height), path.name, info.count)
        )
    return _finish(items, str(images), "polygons", "image", 1.0, warn)


def read_detection_set(
    source: str | os.PathLike[str],
    fmt: str = "voc",
    *,
    box_frame: str = "auto",
    min_area: int = 100,
    polygons: str | None = None,
    warn: Warn | None = None,
) -> DetectionSet:
    """Read a detection dataset of format ``voc``, ``coco`` or ``masks``.

    With ``polygons``, ``source`` holds georeferenced images and the boxes come
    from the polygon layer (any ``fmt``).

    Raises:
        InputError: unknown format or unusable data.
    """
    if polygons:
        return read_polygon_images(source, polygons, warn=warn)
    fmt = (fmt or "voc").strip().lower()
    if fmt == "voc":
        return read_voc(source, box_frame=box_frame, warn=warn)
    if fmt == "coco":
        return read_coco(source, box_frame=box_frame, warn=warn)
    if fmt == "masks":
        return read_mask_pairs(source, min_area=min_area, warn=warn)
    raise InputError(f"Unknown FORMAT '{fmt}': use one of {', '.join(FORMATS)}.")
