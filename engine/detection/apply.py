"""The ``detectlandslides`` job: landslide boxes on a georeferenced raster.

Two routes give a polygon layer of boxes with a ``score`` and a ``class``:

* ``SOURCE="detector"``: a Faster R-CNN detection model
  (:mod:`slidewise.engine.detection.models`) runs on square tiles that overlap
  by ``OVERLAP`` pixels (:func:`detect_raster`). Each tile is resized by the
  same factor as the training images (model ``min_size`` / training image
  side), so objects keep the scale the model learnt. Boxes from all tiles are
  merged in map coordinates (:func:`merge_tile_boxes`): boxes cut by an
  inner tile edge are dropped when an uncut box from another tile covers at
  least half of them, cut pieces that still overlap each other (an object
  larger than the overlap) are joined into their union, and global NMS
  (:func:`torchvision.ops.nms`) runs over all tiles. An object straddling a tile border is reported
  once.
* ``SOURCE="segmentation"``: a mapping (segmentation) model predicts the
  landslide probability with :func:`slidewise.engine.imagery.tiling.predict_raster`
  (or an existing probability raster is given as ``PROBABILITY``); pixels at
  or above ``THRESHOLD`` are opened and closed (``OPENING_RADIUS``,
  ``CLOSING_RADIUS``) and grouped into 8-connected components; each
  component of at least ``MIN_AREA`` (m²) gives its bounding box, boxes that
  overlap or nest are merged into the box around them, with ``score`` = the
  mean probability of their pixels (:func:`segmentation_boxes`). Both routes
  can so be compared on the same raster.

Box corners are transformed with the raster's affine transform, so rotated
grids give rotated rectangles in map coordinates. The output is written
atomically with :func:`slidewise.engine.geo.vectors.write_vector`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slidewise.contract.specs.detectlandslides import SPEC as DETECT_SPEC
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import JobContext, JobResult, Progress
from slidewise.engine.core.outputs import check_writable
from slidewise.engine.core.params import JobParams
from slidewise.engine.detection.boxes import (
    boxes_from_mask,
    map_to_pixel,
    merge_overlapping_boxes,
)
from slidewise.engine.geo.postprocess import PolygonOptions, resolve_settings
from slidewise.engine.geo.raster import (
    RasterInfo,
    open_raster,
    read_masked,
    require_valid_pixels,
)

DEFAULT_OVERLAP = 64
DEFAULT_NMS_IOU = 0.5
#: Boxes within this many pixels of an inner tile edge count as cut by it.
EDGE_MARGIN = 2.0
#: A cut box is dropped when a box from another tile covers this share of it.
COVER_SHARE = 0.5
#: Output formats of the box layer.
VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json")

Detector = Callable[[list[torch.Tensor]], list[dict[str, torch.Tensor]]]


@dataclass(frozen=True)
class DetectParams(JobParams):
    """Parameters of the ``detectlandslides`` job (``contract/specs/detectlandslides.py``).

    ``None`` means unset: TILE_SIZE, OVERLAP, SCORE_THRESHOLD, THRESHOLD and
    BATCH_SIZE then take defaults that depend on the source, the model or the device.
    """

    SPEC = DETECT_SPEC

    input: str | None = None
    model: str | None = None
    source: str = "detector"
    bands: str | None = None
    tile_size: int | None = None
    overlap: int | None = None
    score_threshold: float | None = None
    nms_iou: float = DEFAULT_NMS_IOU
    threshold: float | None = None
    threshold_rule: str = "expected_f1"
    min_area: float | None = None
    opening_radius: int = 1
    closing_radius: int = 1
    batch_size: int | None = None
    backend: str = "auto"
    probability: str | None = None
    output: str = ""
    workers: int = 1
    scheduler: str | None = None


@dataclass(frozen=True)
class DetectOptions:
    """How a detector runs on the tiles of a raster.

    Attributes:
        score_threshold: Boxes scoring lower are dropped.
        nms_iou: IoU of the global non-maximum suppression after the merge.
        batch_size: Tiles per detector call.
        device: Device of the tensors.
    """

    score_threshold: float = 0.0
    nms_iou: float = DEFAULT_NMS_IOU
    batch_size: int = 1
    device: torch.device | str = "cpu"


@dataclass
class TileBoxes:
    """Boxes found on a raster, in raster pixel coordinates.

    Attributes:
        boxes: ``(N, 4)`` float64 ``x1, y1, x2, y2`` (columns, rows of the raster).
        scores: ``(N,)`` scores.
        tiles: ``(N,)`` index of the tile each box came from (-1: no tiling).
        cut: ``(N,)`` whether the box touches an inner tile edge.
        tiles_run: Tiles the detector ran on.
    """

    boxes: np.ndarray
    scores: np.ndarray
    tiles: np.ndarray
    cut: np.ndarray
    tiles_run: int = 0

    @classmethod
    def concat(cls, parts: Sequence[TileBoxes]) -> TileBoxes:
        """The boxes of ``parts`` one after the other (tiles run: their sum)."""
        found = _Found(run=sum(p.tiles_run for p in parts))
        for part in parts:
            found.boxes.append(part.boxes)
            found.scores.append(part.scores)
            found.tiles.append(part.tiles)
            found.cut.append(part.cut)
        return found.result()


@dataclass(frozen=True)
class _PendingTile:
    """A tile read and waiting for the detector."""

    index: int
    row: int
    col: int
    data: np.ndarray
    valid: np.ndarray


@dataclass
class _Found:
    """Boxes collected tile by tile."""

    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    tiles: list[np.ndarray] = field(default_factory=list)
    cut: list[np.ndarray] = field(default_factory=list)
    run: int = 0

    def result(self) -> TileBoxes:
        """The collected boxes as one :class:`TileBoxes`."""
        if not self.boxes:
            return TileBoxes(
                np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, bool), self.run
            )
        return TileBoxes(
            np.concatenate(self.boxes),
            np.concatenate(self.scores),
            np.concatenate(self.tiles),
            np.concatenate(self.cut),
            self.run,
        )


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: ``tile - overlap`` apart, the last one flush with the end.

    A raster shorter than the tile gets one tile at 0 (padded when read).
    """
    if tile <= overlap:
        raise InputError(f"OVERLAP ({overlap}) must be smaller than TILE_SIZE ({tile}).")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return sorted(set(starts))


# --------------------------------------------------------------------------- detector route


def _read_tile(
    src: Any, row: int, col: int, tile: int, indexes: Sequence[int], fill: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``tile`` x ``tile`` window (padded with ``fill`` past the raster)."""
    from rasterio.windows import Window

    h = min(tile, src.height - row)
    w = min(tile, src.width - col)
    data, valid = read_masked(src, Window(col, row, w, h), list(indexes))
    out = np.broadcast_to(fill.reshape(-1, 1, 1), (len(indexes), tile, tile)).copy()
    ok = np.zeros((tile, tile), dtype=bool)
    data = np.where(np.isfinite(data), data, fill.reshape(-1, 1, 1))
    out[:, :h, :w] = data
    ok[:h, :w] = valid
    return out.astype(np.float32), ok


def tile_origins(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int, int]]:
    """``(index, row, col)`` of the tiles of a raster, row by row (:func:`tile_starts`)."""
    rows = tile_starts(height, tile, overlap)
    cols = tile_starts(width, tile, overlap)
    return [(k, r, c) for k, (r, c) in enumerate((r, c) for r in rows for c in cols)]


def detect_tiles(
    detector: Detector,
    src: Any,
    origins: Sequence[tuple[int, int, int]],
    indexes: Sequence[int],
    fill: Sequence[float],
    tile: int,
    options: DetectOptions | None = None,
) -> TileBoxes:
    """Read the tiles ``origins`` (:func:`tile_origins`) and detect on them in one call.

    Tiles without a valid pixel are skipped. This is one batch of
    :func:`detect_raster`, and one task of a detector run on a Dask cluster
    (:mod:`slidewise.engine.detection.detect_cluster`): both paths run the
    detector on the same batches, so they find the same boxes.

    Args:
        detector: See :func:`detect_raster`.
        src: Open rasterio dataset.
        origins: ``(index, row, col)`` of the tiles.
        indexes: 1-based bands fed to the detector.
        fill: Value per band for nodata and padding.
        tile: Tile side in pixels.
        options: Score threshold and device.
    """
    options = options or DetectOptions()
    fill_arr = np.asarray(fill, np.float32)
    found = _Found()
    pending: list[_PendingTile] = []
    for k, r0, c0 in origins:
        data, ok = _read_tile(src, r0, c0, tile, indexes, fill_arr)
        if ok.any():
            pending.append(_PendingTile(k, r0, c0, data, ok))
    _detect_pending(detector, pending, (src.height, src.width, tile), options, found)
    return found.result()


def detect_raster(
    detector: Detector,
    src: Any,
    indexes: Sequence[int],
    fill: Sequence[float],
    tile: int,
    overlap: int,
    options: DetectOptions | None = None,
    progress: Progress | None = None,
) -> TileBoxes:
    """Run a detector on overlapping tiles of an open raster.

    The tiles go to the detector in batches of ``options.batch_size``
    consecutive tiles (:func:`detect_tiles`; a batch's tiles without a valid
    pixel are left out of its call).

    Args:
        detector: Called with a list of ``(C, tile, tile)`` tensors; returns one
            dict per tile with ``boxes`` (tile pixels), ``scores`` and ``labels``
            (1 = landslide) like torchvision detectors in eval mode.
        src: Open rasterio dataset.
        indexes: 1-based bands fed to the detector.
        fill: Value per band for nodata and padding.
        tile: Tile side in pixels.
        overlap: Overlap of neighbouring tiles in pixels.
        options: Score threshold, tiles per detector call and device (``nms_iou``
            is not used here).
        progress: Receives the fraction of tiles done.

    Returns:
        Boxes in raster pixels with their tile and whether an inner tile edge cut them.
    """
    from slidewise.engine.core.cluster import chunked

    options = options or DetectOptions()
    origins = tile_origins(src.height, src.width, tile, overlap)
    parts = []
    for batch in chunked(origins, max(1, options.batch_size)):
        parts.append(detect_tiles(detector, src, batch, indexes, fill, tile, options))
        if progress is not None:
            progress((batch[-1][0] + 1) / len(origins))
    return TileBoxes.concat(parts)


def _detect_pending(
    detector: Detector,
    pending: list[_PendingTile],
    shape: tuple[int, int, int],
    options: DetectOptions,
    found: _Found,
) -> None:
    """Run the detector on the pending tiles, add their boxes to ``found``, empty ``pending``.

    Args:
        detector: See :func:`detect_raster`.
        pending: Tiles read and not yet run.
        shape: ``(raster height, raster width, tile side)``.
        options: Score threshold and device.
        found: Receives the boxes.
    """
    if not pending:
        return
    batch = [torch.from_numpy(p.data).to(options.device) for p in pending]
    with torch.inference_mode():
        results = detector(batch)
    found.run += len(pending)
    for item, res in zip(pending, results, strict=True):
        b, s, touches = _tile_result(res, item, shape, options.score_threshold)
        found.boxes.append(b)
        found.scores.append(s)
        found.tiles.append(np.full(len(b), item.index, np.int64))
        found.cut.append(touches)
    pending.clear()


def _tile_result(
    res: dict[str, torch.Tensor],
    item: _PendingTile,
    shape: tuple[int, int, int],
    score_threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The landslide boxes of one tile in raster pixels, their scores, and which are cut.

    Boxes scoring below ``score_threshold`` or centred on nodata or padding are
    dropped; a box within :data:`EDGE_MARGIN` of an inner tile edge is cut.
    """
    height, width, tile = shape
    r0, c0 = item.row, item.col
    b = res["boxes"].detach().float().cpu().numpy().astype(np.float64).reshape(-1, 4)
    s = res["scores"].detach().float().cpu().numpy().astype(np.float64).reshape(-1)
    lab = res.get("labels")
    keep = s >= score_threshold
    if lab is not None:
        keep &= lab.detach().cpu().numpy().reshape(-1) == 1
    b, s = b[keep], s[keep]
    if len(b):
        cy = np.clip(((b[:, 1] + b[:, 3]) / 2).astype(int), 0, tile - 1)
        cx = np.clip(((b[:, 0] + b[:, 2]) / 2).astype(int), 0, tile - 1)
        inside = item.valid[cy, cx]  # drop boxes centred on nodata or padding
        b, s = b[inside], s[inside]
    inner_left, inner_top = c0 > 0, r0 > 0
    inner_right = c0 + tile < width
    inner_bottom = r0 + tile < height
    touches = (
        (inner_left & (b[:, 0] <= EDGE_MARGIN))
        | (inner_top & (b[:, 1] <= EDGE_MARGIN))
        | (inner_right & (b[:, 2] >= tile - EDGE_MARGIN))
        | (inner_bottom & (b[:, 3] >= tile - EDGE_MARGIN))
    )
    b = b + np.array([c0, r0, c0, r0], np.float64)
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, height)
    return b, s, touches


def _overlapping_pairs(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(i, j)``, ``i != j``, of intersecting or edge-touching boxes.

    Returns:
        ``(i, j, intersection_area, shares_edge)``; ``shares_edge`` is true when
        the boxes overlap or touch along a segment (not just at a corner).
    """
    import shapely

    if len(b) < 2:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0), np.zeros(0, bool)
    geoms = shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3])
    i, j = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    ne = i != j
    i, j = i[ne], j[ne]
    w = np.minimum(b[i, 2], b[j, 2]) - np.maximum(b[i, 0], b[j, 0])
    h = np.minimum(b[i, 3], b[j, 3]) - np.maximum(b[i, 1], b[j, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    edge = (w >= 0) & (h >= 0) & ((w > 0) | (h > 0))
    return i[edge], j[edge], inter[edge], edge[edge]


def merge_tile_boxes(
    boxes: np.ndarray,
    scores: np.ndarray,
    tiles: np.ndarray,
    cut: np.ndarray,
    iou: float = DEFAULT_NMS_IOU,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge boxes of overlapping tiles (map or pixel coordinates alike).

    1. A box cut by an inner tile edge is dropped when an uncut box from
       another tile covers at least :data:`COVER_SHARE` of its area (the
       neighbouring tile saw the whole object).
    2. Cut boxes left that overlap or touch (along an edge) cut boxes of other
       tiles (pieces of an object larger than the overlap) are joined into
       their union box, with the highest score.
    3. Global non-maximum suppression at ``iou`` (:func:`torchvision.ops.nms`)
       over all tiles.

    Neighbours are found with a shapely STRtree, so memory grows with the
    number of boxes, not its square.

    Returns:
        ``(boxes, scores)`` sorted by decreasing score.
    """
    from slidewise.engine.detection.models import import_torchvision

    tv = import_torchvision()
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    s = np.asarray(scores, np.float64).reshape(-1)
    tiles = np.asarray(tiles).reshape(-1)
    cut = np.asarray(cut, bool).reshape(-1)
    if len(b) == 0:
        return b, s
    origin = np.array([b[:, 0].min(), b[:, 1].min()] * 2)
    local = b - origin  # small numbers keep the IoU exact in map coordinates
    area = np.maximum((local[:, 2] - local[:, 0]) * (local[:, 3] - local[:, 1]), 1e-12)
    i, j, inter, _ = _overlapping_pairs(local)
    other = tiles[i] != tiles[j]
    covered = other & cut[i] & ~cut[j] & (inter / area[i] >= COVER_SHARE)
    alive = np.ones(len(b), bool)
    alive[i[covered]] = False
    parent = np.arange(len(b))

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return int(k)

    join = other & cut[i] & cut[j] & alive[i] & alive[j]
    for a, c in zip(i[join].tolist(), j[join].tolist(), strict=True):
        ra, rc = find(a), find(c)
        if ra != rc:
            parent[max(ra, rc)] = min(ra, rc)
    groups: dict[int, list[int]] = {}
    for k in np.flatnonzero(alive).tolist():
        groups.setdefault(find(k), []).append(k)
    members = [np.asarray(g) for g in groups.values()]
    joined = np.array(
        [
            [local[m, 0].min(), local[m, 1].min(), local[m, 2].max(), local[m, 3].max()]
            for m in members
        ],
        np.float64,
    ).reshape(-1, 4)
    joined_s = np.array([s[m].max() for m in members], np.float64)
    keep = tv.ops.nms(torch.from_numpy(joined), torch.from_numpy(joined_s), float(iou)).numpy()
    return joined[keep] + origin, joined_s[keep]


def detect_on_raster(
    detector: Detector,
    src: Any,
    indexes: Sequence[int],
    fill: Sequence[float],
    tile: int,
    overlap: int,
    options: DetectOptions | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, TileBoxes]:
    """Detect on tiles (:func:`detect_raster`) and merge in map coordinates (:func:`merge_on_map`).

    Returns:
        ``(pixel_boxes, scores, raw)``: merged ``(N, 4)`` boxes in raster pixels,
        their scores (decreasing), and the unmerged tile boxes.
    """
    options = options or DetectOptions()
    found = detect_raster(detector, src, indexes, fill, tile, overlap, options, progress)
    px, scores = merge_on_map(found, src.transform, options.nms_iou)
    return px, scores, found


def merge_on_map(
    found: TileBoxes, transform: Any, iou: float = DEFAULT_NMS_IOU
) -> tuple[np.ndarray, np.ndarray]:
    """Merge the boxes of all tiles in map coordinates; back as raster pixel boxes.

    The tile boxes are transformed to map coordinates with the raster's
    ``transform`` and merged there (:func:`merge_tile_boxes`, at ``iou``);
    the merged boxes come back as raster pixel boxes (exact for north-up
    rasters; for rotated grids, the pixel box around the merged map box).

    Returns:
        ``(pixel_boxes, scores)``: merged ``(N, 4)`` boxes, scores decreasing.
    """
    _, bounds = pixel_boxes_to_polygons(found.boxes, transform)
    merged, scores = merge_tile_boxes(bounds, found.scores, found.tiles, found.cut, iou)
    x0, y0, x1, y1 = (merged[:, k] for k in range(4))
    cs, rs = map_to_pixel(
        transform, np.concatenate([x0, x0, x1, x1]), np.concatenate([y0, y1, y0, y1])
    )
    cs, rs = cs.reshape(4, -1), rs.reshape(4, -1)
    px = np.stack([cs.min(0), rs.min(0), cs.max(0), rs.max(0)], axis=1).reshape(-1, 4)
    return px, scores


def pixel_boxes_to_polygons(boxes: np.ndarray, transform: Any) -> tuple[np.ndarray, np.ndarray]:
    """Polygons (map coordinates) of pixel boxes, and their map-coordinate bounds.

    Returns:
        ``(polygons, bounds)``: shapely polygons through the four transformed
        corners, and ``(N, 4)`` ``xmin, ymin, xmax, ymax``.
    """
    import shapely

    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(b) == 0:
        return np.array([], dtype=object), np.zeros((0, 4))
    cols = b[:, [0, 2, 2, 0]]
    rows = b[:, [1, 1, 3, 3]]
    t = transform
    xs = t.a * cols + t.b * rows + t.c
    ys = t.d * cols + t.e * rows + t.f
    rings = np.stack([xs, ys], axis=-1)
    polys = shapely.polygons(rings)
    bounds = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
    return np.asarray(polys, dtype=object), bounds


# --------------------------------------------------------------------------- segmentation route


def segmentation_boxes(
    probability: np.ndarray,
    threshold: float = 0.5,
    min_area: float = 1,
    score_threshold: float = 0.0,
    morphology: tuple[int, int] = (0, 0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes of the connected components of ``probability >= threshold``.

    The landslide pixels are opened then closed with discs of radii
    ``morphology`` (:func:`slidewise.engine.geo.postprocess.open_close`), and
    boxes of components that overlap or nest are merged into the box around
    them (:func:`slidewise.engine.detection.boxes.merge_overlapping_boxes`).

    Args:
        probability: ``(H, W)`` landslide probability; NaN = nodata (never landslide).
        threshold: Pixel probability at or above which a pixel is landslide.
        min_area: Smallest component, in pixels (8-connected).
        score_threshold: Components whose mean probability is lower are dropped.
        morphology: ``(opening, closing)`` radii in pixels (0: none).

    Returns:
        ``(boxes, scores, pixels)``: ``(N, 4)`` pixel boxes, mean probability
        per box (pixel-weighted over merged components), and pixels per box,
        by decreasing score.
    """
    from slidewise.engine.geo.postprocess import open_close

    p = np.asarray(probability, np.float32)
    valid = np.isfinite(p)
    mask = open_close(valid & (p >= threshold), *morphology) & valid
    boxes, areas, means = boxes_from_mask(
        mask, math.ceil(min_area - 1e-9), values=np.where(mask, p, 0.0)
    )
    boxes, areas, means = merge_overlapping_boxes(boxes, areas, means)
    keep = means >= score_threshold
    boxes, areas, means = boxes[keep], areas[keep], means[keep]
    order = np.argsort(-means, kind="stable")
    return boxes[order].astype(np.float64), means[order].astype(np.float64), areas[order]


def _probability_from_model(
    options: DetectParams,
    info: RasterInfo,
    device: torch.device,
    progress: Progress,
    log: Callable[[str], None],
) -> tuple[np.ndarray, float, list[str], str]:
    """A mapping model's landslide probability on the raster, its threshold, notes, backend.

    With WORKERS > 1 or a SCHEDULER the tile rows are predicted on a Dask cluster
    (:mod:`slidewise.engine.imagery.tiling_cluster`), with the same result.
    """
    from slidewise.engine.core.cluster import ClusterOptions
    from slidewise.engine.imagery.backends import BackendRequest, choose_backend, model_key
    from slidewise.engine.imagery.bands import match_bands
    from slidewise.engine.imagery.segmodels import load_mapping_model
    from slidewise.engine.imagery.tiling import DEFAULT_OVERLAP as MAP_OVERLAP
    from slidewise.engine.imagery.tiling import (
        TilingOptions,
        default_tile_size,
        model_multiple,
        predict_raster,
    )
    from slidewise.engine.imagery.tiling_cluster import ModelTileRowTask, tiling_on_cluster

    notes = []
    model, meta = load_mapping_model(str(options.model), device=device)
    band_choice = match_bands(info, list(meta.bands), options.bands)
    if band_choice.warning:
        notes.append(band_choice.warning)
    require_valid_pixels(info.path, band_choice.indexes, "input raster", "detect")
    tile = options.tile_size if options.tile_size is not None else default_tile_size(meta)
    overlap = options.overlap if options.overlap is not None else MAP_OVERLAP
    request = BackendRequest(model, len(band_choice.indexes), model_key(str(options.model)))
    request.device, request.tile, request.pixels = device, tile, info.width * info.height
    model, backend = choose_backend(options.backend, request)
    tiling = TilingOptions(
        tile=tile,
        overlap=overlap,
        device=device,
        progress=progress,
        multiple=model_multiple(meta),
        channels_last=None if backend == "torch" else False,
    )
    task = ModelTileRowTask.for_tiling(
        info.path, str(options.model), band_choice.indexes, tiling, backend=backend
    )
    cluster = ClusterOptions(options.workers, options.scheduler)
    with tiling_on_cluster(tiling, task, cluster, log) as tiling:
        prob = predict_raster(
            model, info.path, tiling, bands=band_choice.indexes, normalisation=meta.normalisation
        )
    assert prob is not None
    return (
        prob,
        segmentation_threshold(prob, meta.extra, options.threshold_rule, log),
        notes,
        backend,
    )


def segmentation_threshold(
    prob: np.ndarray, extra: dict[str, Any] | None, rule: str, log: Callable[[str], None]
) -> float:
    """The threshold *Map landslides* would cut the mapping model's ``prob`` at (THRESHOLD_RULE).

    ``expected_f1`` and a calibrated model: the best expected F1 of ``prob``
    (:mod:`slidewise.engine.imagery.scene_threshold`); else the stored threshold.
    """
    from slidewise.engine.imagery.scene_threshold import calibrated, raster_threshold

    stored = float((extra or {}).get("threshold", 0.5))
    if rule != "expected_f1":
        return stored
    if not calibrated(extra):
        log(
            "THRESHOLD_RULE expected_f1 needs a calibrated mapping model and this one has no "
            f"calibration: its stored threshold {stored:g} is used."
        )
        return stored
    chosen = raster_threshold(prob)
    if chosen is None:
        log(f"No probability above 0 on this raster: its stored threshold {stored:g} is used.")
        return stored
    log(
        f"Threshold {chosen:g}: the best expected F1 of this raster's calibrated probabilities "
        f"(THRESHOLD_RULE expected_f1; the model's stored threshold is {stored:g})."
    )
    return chosen


# --------------------------------------------------------------------------- the job


@dataclass
class _Route:
    """What a route found: the raster, its pixel boxes and scores, inputs and figures."""

    info: RasterInfo
    boxes: np.ndarray
    scores: np.ndarray
    inputs: list[str]
    figures: dict[str, Any]


def run_detect(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Detect landslides on a raster and write their boxes as polygons.

    The parameters are declared in ``contract/specs/detectlandslides.py``.
    SOURCE detector runs a detection model (MODEL, from ``traindetection``) on
    the tiles of INPUT; SOURCE segmentation boxes the connected components of
    a mapping model's probability (MODEL, from ``trainmapping``) or of an
    existing probability raster (PROBABILITY, band 1, 0..1, instead of INPUT
    and MODEL). Unset TILE_SIZE: the detector's training image side
    (segmentation: as in maplandslides); unset OVERLAP: 64 px, at most a
    quarter tile (segmentation: as in maplandslides); unset SCORE_THRESHOLD:
    0.5 for the detector, 0 for segmentation; unset THRESHOLD: the mapping
    model's threshold (0.5 for PROBABILITY); unset BATCH_SIZE: 1 on CPU, 4 on
    GPU. OUTPUT (.gpkg, .shp or .geojson) gets fields ``score`` (detector:
    model score; segmentation: mean probability of the component), ``class``
    ("landslide") and ``area`` (map units²).
    """
    from slidewise.engine.core.runtime import apply, select_device

    options = DetectParams.from_params(params)
    _check_job(options)
    apply(ctx.options)
    device = select_device(ctx.options.device)
    _note_one_process(options, ctx)
    if options.source == "detector":
        route = _detector_route(options, device, ctx)
    else:
        route = _segmentation_route(options, device, ctx)
    count = _write_boxes(options.output, route, ctx)
    figures = {"source": options.source, **route.figures, "boxes": count}
    ctx.log(f"{count} landslide box(es) written to {options.output}.")
    return JobResult(
        outputs={"OUTPUT": options.output},
        figures=figures,
        inputs=route.inputs,
        device=device.type,
    )


def _check_job(options: DetectParams) -> None:
    """The output is writable and a vector file; the inputs fit the source.

    Raises:
        InputError: otherwise.
    """
    check_writable(options.output)
    if Path(options.output).suffix.lower() not in VECTOR_SUFFIXES:
        raise InputError(
            f"Unsupported output '{Path(options.output).name}': use .gpkg, .shp or .geojson."
        )
    if options.probability and options.source != "segmentation":
        raise InputError("PROBABILITY is only used with SOURCE segmentation: set SOURCE.")
    if not options.probability:
        missing = [name for name in ("INPUT", "MODEL") if not getattr(options, name.lower())]
        if missing:
            raise InputError(f"Missing required parameter(s): {', '.join(missing)}.")


def _write_boxes(path: str, route: _Route, ctx: JobContext) -> int:
    """Write the boxes as map polygons with score, class and area; returns their count."""
    import shapely

    from slidewise.engine.geo.vectors import write_vector

    info = route.info
    if info.crs is None:
        ctx.warn(
            f"The raster '{Path(info.path).name}' has no CRS: the boxes are written in its "
            "pixel/map coordinates without a CRS."
        )
    polys, _ = pixel_boxes_to_polygons(route.boxes, info.transform)
    area = shapely.area(polys) if len(polys) else np.zeros(0)
    write_vector(
        path,
        polys,
        {
            "score": np.asarray(route.scores, np.float64),
            "class": np.array(["landslide"] * len(polys), dtype=object),
            "area": np.asarray(area, np.float64),
        },
        info.crs,
        geometry_type="Polygon",
    )
    return len(polys)


def _note_one_process(options: DetectParams, ctx: JobContext) -> None:
    """Say so when WORKERS or SCHEDULER is set with PROBABILITY (nothing to compute on Dask)."""
    from slidewise.engine.core.cluster import ClusterOptions

    if options.probability and ClusterOptions(options.workers, options.scheduler).parallel:
        ctx.warn(
            "WORKERS and SCHEDULER are not used with PROBABILITY: the probability raster is "
            "read as it is, nothing is predicted."
        )


def _segmentation_route(options: DetectParams, device: torch.device, ctx: JobContext) -> _Route:
    """Boxes of the connected components of a probability (raster, or a mapping model's)."""
    if options.probability:
        info = open_raster(options.probability, "probability raster")
        require_valid_pixels(info.path, [1], "probability raster", "detect")
        inputs = [info.path]
        prob = _read_probability(info, options.probability)
        default_threshold = 0.5
        backend = ""
    else:
        info = open_raster(str(options.input), "input raster")
        inputs = [info.path, str(options.model)]
        prob, default_threshold, notes, backend = _probability_from_model(
            options, info, device, ctx.stage(2, 90), ctx.log
        )
        for note in notes:
            ctx.warn(note)
    threshold = default_threshold if options.threshold is None else options.threshold
    score_threshold = options.score_threshold or 0.0
    post = resolve_settings(PolygonOptions.from_job(options), info.transform, info.crs, info.height)
    ctx.log(post.describe())
    boxes, scores, _ = segmentation_boxes(
        prob,
        threshold,
        post.min_area / post.pixel_area,
        score_threshold,
        (post.opening_radius, post.closing_radius),
    )
    figures: dict[str, Any] = {
        "threshold": threshold,
        "components": len(boxes),
        "min_area_m2": post.min_area,
    }
    if backend:
        figures["backend"] = backend
    return _Route(info, boxes, scores, inputs, figures)


def _read_probability(info: RasterInfo, name: str) -> np.ndarray:
    """Band 1 of a probability raster (NaN = nodata).

    Raises:
        InputError: values outside 0..1.
    """
    import rasterio

    with rasterio.open(info.path) as src:
        prob, _ = read_masked(src, indexes=1)
    prob = prob[0]
    finite = prob[np.isfinite(prob)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise InputError(
            f"The probability raster '{Path(name).name}' has values from "
            f"{finite.min():g} to {finite.max():g}: give probabilities in 0..1."
        )
    return prob


@dataclass(frozen=True)
class DetectorPlan:
    """How a detector model runs on the tiles of one raster: what a worker needs to redo it.

    Attributes:
        input: The raster path (readable by every Dask worker).
        model: The detection model file.
        bands: 1-based raster bands fed to the detector.
        fill: Value per band for nodata and padding (the model's mean).
        tile: Tile side in pixels.
        overlap: Overlap of neighbouring tiles in pixels.
        options: Score threshold, tiles per detector call, device.
    """

    input: str
    model: str
    bands: tuple[int, ...]
    fill: tuple[float, ...]
    tile: int
    overlap: int
    options: DetectOptions


def fit_detector_to_tile(model: Any, meta: Any, tile: int, score_threshold: float) -> int:
    """Set the detector's resize for ``tile``-px tiles and its lowest score; returns the side.

    Each tile is resized by the same factor as the training images (model
    ``min_size`` / training image side), so objects keep the scale the model learnt.
    """
    native = int(meta.tile_size or 0) or int(meta.config.get("min_size", 512))
    scale = float(meta.config.get("min_size", native)) / max(1, native)
    side = max(32, round(tile * scale))
    model.transform.min_size = (side,)
    model.transform.max_size = side
    model.roi_heads.score_thresh = min(model.roi_heads.score_thresh, score_threshold)
    return side


def _detector_route(options: DetectParams, device: torch.device, ctx: JobContext) -> _Route:
    """The detector route: tiles, detection (here or on Dask), cross-tile merge (pixel boxes).

    Raises:
        InputError: OVERLAP not smaller than the tile, or bands that do not fit the model.
    """
    import rasterio

    from slidewise.engine.core.cluster import ClusterOptions
    from slidewise.engine.detection.models import load_detector

    info = open_raster(str(options.input), "input raster")
    model, meta = load_detector(str(options.model), device=device)
    plan = _detector_plan(options, info, meta, device, ctx)
    side = fit_detector_to_tile(model, meta, plan.tile, plan.options.score_threshold)
    ctx.log(
        f"Detecting on {info.width} x {info.height} px in {plan.tile}-px tiles with "
        f"{plan.overlap} px overlap (resized to {side} px), score >= "
        f"{plan.options.score_threshold:g}, device {device}."
    )
    figures: dict[str, Any] = {}
    cluster = ClusterOptions(options.workers, options.scheduler)
    if cluster.parallel:
        from slidewise.engine.detection.detect_cluster import detect_on_cluster

        del model  # the workers load their own
        found, figures = detect_on_cluster(plan, cluster, ctx.stage(2, 95), ctx.log)
    else:
        with rasterio.open(info.path) as src:
            found = detect_raster(
                model,
                src,
                plan.bands,
                plan.fill,
                plan.tile,
                plan.overlap,
                plan.options,
                ctx.stage(2, 95),
            )
    px, scores = merge_on_map(found, info.transform, plan.options.nms_iou)
    figures = {
        "tiles": found.tiles_run,
        "raw_boxes": len(found.boxes),
        "tile_size": plan.tile,
        "overlap": plan.overlap,
        "score_threshold": plan.options.score_threshold,
        "backend": "torch",  # box decoding and NMS are PyTorch code
        **figures,
    }
    return _Route(info, px, scores, [info.path, str(options.model)], figures)


def _detector_plan(
    options: DetectParams, info: RasterInfo, meta: Any, device: torch.device, ctx: JobContext
) -> DetectorPlan:
    """The bands, tiles and detection settings of the detector route."""
    from slidewise.engine.imagery.bands import match_bands

    band_choice = match_bands(info, list(meta.bands), options.bands)
    if band_choice.warning:
        ctx.warn(band_choice.warning)
    require_valid_pixels(info.path, band_choice.indexes, "input raster", "detect")
    native = int(meta.tile_size or 0) or int(meta.config.get("min_size", 512))
    tile = options.tile_size if options.tile_size is not None else native
    run = DetectOptions(
        score_threshold=0.5 if options.score_threshold is None else options.score_threshold,
        nms_iou=options.nms_iou,
        batch_size=options.batch_size or (4 if device.type == "cuda" else 1),
        device=device,
    )
    fill = meta.normalisation.get("mean") or meta.config["image_mean"]
    return DetectorPlan(
        input=info.path,
        model=str(options.model),
        bands=tuple(band_choice.indexes),
        fill=tuple(float(v) for v in fill),
        tile=tile,
        overlap=_detector_overlap(options.overlap, tile),
        options=run,
    )


def _detector_overlap(overlap: int | None, tile: int) -> int:
    """OVERLAP of the detector route: at most ``tile - 1``; unset: 64, at most a quarter tile.

    Raises:
        InputError: OVERLAP is not smaller than the tile.
    """
    if overlap is None:
        return min(DEFAULT_OVERLAP, tile // 4)
    if overlap > tile - 1:
        raise InputError(f"OVERLAP must be between 0 and {tile - 1}, got {overlap}.")
    return overlap
