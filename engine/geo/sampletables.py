"""Sample tables: factor columns, X, Y and a 0/1 label (CSV or XLSX).

``samplefactors`` writes them; ``trainsusceptibility`` (TABLE) and
``python -m slidewise.bench.susceptibility`` read them, as do the meta_LSM and
Hong Kong layouts. Label convention: 1 = landslide, 0 = not landslide.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from slidewise.engine.core.errors import InputError
from slidewise.engine.core.job import Warn


def read_sample_table(
    path: str,
    label: str,
    x: str,
    y: str,
    factors: Sequence[str] = (),
    warn: Warn | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Read a sample table: factors, coordinates and 0/1 labels.

    Args:
        path: CSV or XLSX.
        label: Label column (1 landslide, 0 not); ``""`` for prediction tables.
        x: X column.
        y: Y column.
        factors: Factor columns (default: every other numeric column).
        warn: Receives the dropped-rows message.

    Returns:
        ``(values (n, f), labels or empty, xs, ys, factor names)``.
    """
    from slidewise.engine.geo.tables import find_column, numeric_columns, read_table

    name = Path(path).name
    table = read_table(path, warn=warn)
    xc, yc = find_column(table, x, name), find_column(table, y, name)
    lc = find_column(table, label, name) if label else ""
    names = (
        [find_column(table, f, name) for f in factors]
        if factors
        else [k for k in table if k not in (xc, yc, lc) and table[k].dtype.kind == "f"]
    )
    if not names:
        raise InputError(f"The table '{name}' has no numeric factor column besides {xc}, {yc}.")
    values = numeric_columns(table, names, name)
    xs, ys = numeric_columns(table, [xc, yc], name).T
    labels = np.zeros(0, dtype=np.int64)
    if lc:
        lab = numeric_columns(table, [lc], name)[:, 0]
        if not np.all(np.isin(lab, (0, 1))):
            raise InputError(
                f"The label column '{lc}' of '{name}' must hold 1 (landslide) or 0 (not landslide)."
            )
        labels = lab.astype(np.int64)
    return values, labels, xs, ys, names
