"""Class breaks for susceptibility maps: quantile, natural breaks, equal interval.

A continuous susceptibility (probability of landslide, 0-1) is turned into
ordered classes 1..n (1 = very low ... 5 = very high); 0 is kept for nodata.

Breaks are returned as ``n_classes + 1`` ascending edges ``[min, b1, ..., max]``
(the layout of ``jenkspy``). Class ``i`` holds the values in ``(edge[i-1],
edge[i]]``; the first class also holds its lower edge, and values outside the
edges fall into the first or last class.

Natural breaks (Fisher-Jenks) are computed on a random sample of at most
``sample_size`` values (default 5,000): the exact algorithm is quadratic in the
number of values. ``jenkspy`` is used when installed; otherwise an equivalent
NumPy dynamic programme runs on the same sample.
"""

from __future__ import annotations

import numpy as np

from slidewise.engine.core.errors import InputError

METHODS = ("quantile", "natural_breaks", "equal_interval")
CLASS_NAMES_5 = ("very low", "low", "moderate", "high", "very high")
NATURAL_BREAKS_SAMPLE = 5000


def class_names(n_classes: int) -> list[str]:
    """Human-readable class names (``very low`` ... ``very high`` for 5 classes)."""
    if n_classes == 5:
        return list(CLASS_NAMES_5)
    return [f"class {i}" for i in range(1, n_classes + 1)]


def class_breaks(
    values: np.ndarray,
    n_classes: int = 5,
    method: str = "quantile",
    sample_size: int = NATURAL_BREAKS_SAMPLE,
    seed: int = 0,
) -> np.ndarray:
    """Compute class edges for ``values``.

    Args:
        values: Values to classify (any shape); NaN and infinities are ignored.
        n_classes: Number of classes (2-255).
        method: ``quantile`` (equal counts), ``natural_breaks`` (Fisher-Jenks on a
            sample of at most ``sample_size`` values) or ``equal_interval``.
        sample_size: Sample size for natural breaks.
        seed: Seed of the natural-breaks sample.

    Returns:
        ``n_classes + 1`` ascending edges (float64), the first the minimum and the
        last the maximum of the finite values. Edges may repeat when many values
        are equal (the classes in between are then empty).

    Raises:
        InputError: unknown method, bad class count, or no finite values.
    """
    if method not in METHODS:
        raise InputError(f"Unknown classification '{method}': use one of {', '.join(METHODS)}.")
    if not 2 <= int(n_classes) <= 255:
        raise InputError(f"The number of classes must be 2 to 255, not {n_classes}.")
    n_classes = int(n_classes)
    flat = np.asarray(values, dtype=np.float64).ravel()
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        raise InputError(
            "There are no valid values to classify (all nodata): check that the "
            "susceptibility raster covers data."
        )
    lo, hi = float(flat.min()), float(flat.max())
    if method == "equal_interval":
        edges = np.linspace(lo, hi, n_classes + 1)
    elif method == "quantile":
        edges = np.quantile(flat, np.linspace(0.0, 1.0, n_classes + 1))
    else:
        rng = np.random.default_rng(seed)
        sample = flat if flat.size <= sample_size else rng.choice(flat, sample_size, False)
        edges = _natural_breaks(sample, n_classes)
    edges = np.asarray(edges, dtype=np.float64)
    edges[0], edges[-1] = lo, hi
    return np.maximum.accumulate(edges)


def apply_breaks(values: np.ndarray, breaks: np.ndarray) -> np.ndarray:
    """Classify ``values`` with edges from :func:`class_breaks`.

    Args:
        values: Values (any shape); NaN marks nodata.
        breaks: ``n_classes + 1`` ascending edges.

    Returns:
        uint8 classes 1..n_classes of the same shape, 0 where ``values`` is not finite.
    """
    edges = np.asarray(breaks, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 3:
        raise InputError("Class breaks must be at least three ascending edges.")
    arr = np.asarray(values, dtype=np.float64)
    classes = np.searchsorted(edges[1:-1], arr, side="left").astype(np.uint8) + 1
    classes[~np.isfinite(arr)] = 0
    return classes


def _natural_breaks(sample: np.ndarray, n_classes: int) -> np.ndarray:
    """Fisher-Jenks edges of ``sample`` (jenkspy when installed, else NumPy)."""
    if np.unique(sample).size <= n_classes:
        # Too few distinct values for Jenks: every distinct value its own class.
        uniq = np.unique(sample)
        return np.concatenate([uniq[:1], uniq, np.full(n_classes - uniq.size, uniq[-1])])
    try:
        import jenkspy
    except ImportError:
        return jenks_numpy(sample, n_classes)
    return np.asarray(jenkspy.jenks_breaks(sample.tolist(), n_classes=n_classes), dtype=float)


def jenks_numpy(sample: np.ndarray, n_classes: int) -> np.ndarray:
    """Fisher-Jenks natural breaks by dynamic programming (O(k n^2), n <= ~5,000).

    Minimises the total within-class sum of squared deviations of the sorted
    sample, like ``jenkspy.jenks_breaks``.
    """
    x = np.sort(np.asarray(sample, dtype=np.float64))
    n = x.size
    s1 = np.concatenate([[0.0], np.cumsum(x)])
    s2 = np.concatenate([[0.0], np.cumsum(x * x)])

    def ssd(i: np.ndarray, j: int) -> np.ndarray:
        # Sum of squared deviations of x[i:j] for every start i (j exclusive).
        cnt = j - i
        tot = s1[j] - s1[i]
        return (s2[j] - s2[i]) - tot * tot / cnt

    cost = np.full((n_classes + 1, n + 1), np.inf)
    back = np.zeros((n_classes + 1, n + 1), dtype=np.int64)
    cost[0, 0] = 0.0
    for k in range(1, n_classes + 1):
        for j in range(k, n + 1):
            starts = np.arange(k - 1, j)
            total = cost[k - 1, starts] + ssd(starts, j)
            best = int(np.argmin(total))
            cost[k, j] = total[best]
            back[k, j] = starts[best]
    edges = np.empty(n_classes + 1)
    edges[0], edges[-1] = x[0], x[-1]
    j = n
    for k in range(n_classes, 1, -1):
        i = back[k, j]
        edges[k - 1] = x[i - 1]
        j = i
    return edges
