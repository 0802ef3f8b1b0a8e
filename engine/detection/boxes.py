"""Box geometry of landslide detection: boxes from masks and polygons, clipping.

Boxes are ``(N, 4)`` ``x1, y1, x2, y2`` in image pixels, corners on pixel
edges: a box around pixel column 0 only is ``0..1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def boxes_from_mask(
    mask: np.ndarray,
    min_area: int = 1,
    values: np.ndarray | None = None,
    connectivity: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bounding boxes of the connected components of a binary mask.

    Args:
        mask: ``(H, W)`` boolean (or 0/1) landslide mask.
        min_area: Smallest component kept, in pixels.
        values: Optional ``(H, W)`` values (e.g. probabilities) averaged per component.
        connectivity: 1 (4-neighbours) or 2 (8-neighbours, the default).

    Returns:
        ``(boxes, areas, means)``: ``(N, 4)`` float32 ``x1, y1, x2, y2`` in pixel
        edges, ``(N,)`` pixel counts, ``(N,)`` mean of ``values`` (NaN without values).
    """
    from scipy import ndimage

    m = np.asarray(mask).astype(bool)
    structure = ndimage.generate_binary_structure(2, connectivity)
    labels, n = ndimage.label(m, structure=structure)
    if n == 0:
        empty = np.zeros((0,), np.float32)
        return np.zeros((0, 4), np.float32), empty, empty
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    slices = ndimage.find_objects(labels)
    boxes = np.array(
        [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in slices], dtype=np.float32
    )
    if values is not None:
        v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
        sums = np.bincount(labels.ravel(), weights=v.ravel(), minlength=n + 1)[1:]
        means = (sums / np.maximum(areas, 1)).astype(np.float32)
    else:
        means = np.full(n, np.nan, np.float32)
    keep = areas >= max(1, int(min_area))
    return boxes[keep], areas[keep].astype(np.float32), means[keep]


def boxes_from_polygons(
    geometries: Sequence[Any] | np.ndarray,
    transform: Any,
    width: int,
    height: int,
    min_area: float = 1.0,
) -> np.ndarray:
    """Pixel boxes of polygons on an image grid (one box per polygon part set).

    Each geometry's map-coordinate bounds are converted to pixel coordinates
    with the inverse of ``transform`` (all four corners, so rotated grids work),
    then clipped to the image. Boxes whose clipped pixel area is below
    ``min_area`` are dropped.

    Args:
        geometries: shapely geometries in the image's CRS.
        transform: The image's affine pixel-to-map transform.
        width: Image columns.
        height: Image rows.
        min_area: Smallest box kept, in pixels (after clipping).

    Returns:
        ``(N, 4)`` float32 boxes.
    """
    import shapely

    geoms = np.asarray(geometries, dtype=object)
    if geoms.size == 0:
        return np.zeros((0, 4), np.float32)
    bounds = shapely.bounds(geoms)
    out = []
    for x0, y0, x1, y1 in bounds:
        if not np.all(np.isfinite([x0, y0, x1, y1])):
            continue
        cols, rows = map_to_pixel(transform, np.array([x0, x0, x1, x1]), np.array([y0, y1, y0, y1]))
        box = [
            min(max(min(cols), 0.0), width),
            min(max(min(rows), 0.0), height),
            min(max(max(cols), 0.0), width),
            min(max(max(rows), 0.0), height),
        ]
        if (box[2] - box[0]) * (box[3] - box[1]) >= max(min_area, 1e-9):
            out.append(box)
    return np.asarray(out, np.float32).reshape(-1, 4)


def map_to_pixel(transform: Any, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates to (fractional) pixel ``(cols, rows)`` with the inverse affine transform."""
    inv = ~transform
    xs = np.asarray(xs, np.float64)
    ys = np.asarray(ys, np.float64)
    return inv.a * xs + inv.b * ys + inv.c, inv.d * xs + inv.e * ys + inv.f


def clip_boxes(
    boxes: np.ndarray, width: int, height: int, min_size: float = 1.0
) -> tuple[np.ndarray, int, int]:
    """Clip boxes to the image and drop degenerate ones.

    Returns:
        ``(boxes, n_clipped, n_dropped)``: boxes that reached outside the image
        are clipped; boxes narrower or lower than ``min_size`` pixels after
        clipping (or with reversed corners) are dropped.
    """
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(b) == 0:
        return b, 0, 0
    outside = (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > width) | (b[:, 3] > height)
    c = b.copy()
    c[:, [0, 2]] = np.clip(c[:, [0, 2]], 0, width)
    c[:, [1, 3]] = np.clip(c[:, [1, 3]], 0, height)
    keep = ((c[:, 2] - c[:, 0]) >= min_size) & ((c[:, 3] - c[:, 1]) >= min_size)
    return c[keep], int(np.sum(outside & keep)), int(np.sum(~keep))


def merge_overlapping_boxes(
    boxes: np.ndarray, weights: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replace every group of overlapping or nested boxes by the box around the group.

    Boxes that share area (one inside the other, or crossing) are joined, and
    joined again until no two boxes share area: the result is the union box of
    each connected group. Boxes that only touch along an edge or at a corner
    stay apart.

    Args:
        boxes: ``(N, 4)`` ``x1, y1, x2, y2``.
        weights: ``(N,)`` weight of each box (e.g. its component's pixel count),
            summed over a group.
        values: ``(N,)`` value of each box (e.g. its mean probability), averaged
            over a group with ``weights``.

    Returns:
        ``(boxes, weights, values)`` of the merged boxes (groups in the order of
        their first box).
    """
    import shapely

    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    w = np.asarray(weights, np.float64).reshape(-1)
    v = np.asarray(values, np.float64).reshape(-1)
    while len(b) > 1:
        geoms = shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3])
        i, j = shapely.STRtree(geoms).query(geoms, predicate="intersects")
        ix = np.minimum(b[i, 2], b[j, 2]) - np.maximum(b[i, 0], b[j, 0])
        iy = np.minimum(b[i, 3], b[j, 3]) - np.maximum(b[i, 1], b[j, 1])
        share = (i < j) & (ix > 0) & (iy > 0)
        if not share.any():
            break
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        graph = coo_matrix((np.ones(int(share.sum())), (i[share], j[share])), (len(b), len(b)))
        _, group = connected_components(graph, directed=False)
        _, first = np.unique(group, return_index=True)
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        g = rank[group]
        n = len(order)
        merged = np.empty((n, 4))
        for k, (fn, col) in enumerate(
            ((np.minimum, 0), (np.minimum, 1), (np.maximum, 2), (np.maximum, 3))
        ):
            start = np.full(n, np.inf if fn is np.minimum else -np.inf)
            fn.at(start, g, b[:, col])
            merged[:, k] = start
        total = np.bincount(g, weights=w, minlength=n).astype(np.float64)
        v = np.bincount(g, weights=w * v, minlength=n) / np.maximum(total, 1e-12)
        b, w = merged, total
    return b, w, v
