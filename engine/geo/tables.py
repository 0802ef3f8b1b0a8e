"""Sample tables (CSV or XLSX) as columns of NumPy arrays.

Two layouts are read as they ship: the meta_LSM spreadsheets (``factors...,
X, Y, LABEL``) and the Hong Kong CSV files (``factors..., X, Y, label``; the
first header cell starts with a UTF-8 byte-order mark, removed by reading with
``utf-8-sig``). Columns whose every non-empty cell is a number become float64;
other columns stay strings. Empty cells and ``NA``/``NaN`` are missing values;
rows with a missing value are dropped and counted (see :func:`read_table`).
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from slidewise.engine.core.errors import InputError

MISSING = {"", "na", "nan", "n/a", "null", "none", "-"}
TABLE_SUFFIXES = (".csv", ".txt", ".xlsx", ".xlsm")


def read_table(
    path: str | os.PathLike[str],
    *,
    drop_missing: bool = True,
    warn: Callable[[str], None] | None = None,
) -> dict[str, np.ndarray]:
    """Read a CSV or XLSX table into ``{column: values}``.

    Args:
        path: ``.csv``/``.txt`` (comma, semicolon or tab separated; UTF-8 with or
            without byte-order mark) or ``.xlsx`` (first sheet).
        drop_missing: Drop rows with a missing value in any column.
        warn: Called with a message when rows are dropped (default:
            :func:`warnings.warn`).

    Returns:
        Column name -> array (float64 for numeric columns, str otherwise), in
        file order, all of the same length.

    Raises:
        InputError: missing or unreadable file, no header, duplicate or empty
            column names, no data rows, or no complete row.
    """
    p = Path(path)
    if not str(path) or not p.is_file():
        raise InputError(f"The table '{p}' does not exist: check the path.")
    suffix = p.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        header, rows = _read_xlsx(p)
    elif suffix in (".csv", ".txt"):
        header, rows = _read_csv(p)
    else:
        raise InputError(
            f"The table '{p.name}' has an unsupported format: use a .csv or .xlsx file."
        )
    header = [str(h).strip() if h is not None else "" for h in header]
    if not header or any(h == "" for h in header):
        raise InputError(
            f"The table '{p.name}' has an empty column name in its first row: "
            "the first row must name every column."
        )
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise InputError(
            f"The table '{p.name}' has duplicate column names ({', '.join(dupes)}): rename them."
        )
    if not rows:
        raise InputError(f"The table '{p.name}' has no data rows.")
    width = len(header)
    cells = [list(r[:width]) + [None] * (width - len(r)) for r in rows]
    columns: dict[str, np.ndarray] = {}
    missing = np.zeros(len(cells), dtype=bool)
    for j, name in enumerate(header):
        values, miss = _column([row[j] for row in cells])
        columns[name] = values
        missing |= miss
    if drop_missing and missing.any():
        bad = {name: int(np.sum(_missing_mask(v))) for name, v in columns.items()}
        where = ", ".join(f"{k}: {v}" for k, v in bad.items() if v)
        message = (
            f"The table '{p.name}' has {int(missing.sum())} of {len(cells)} rows with missing "
            f"values ({where}); these rows were dropped."
        )
        (warn or (lambda m: warnings.warn(m, stacklevel=3)))(message)
        columns = {k: v[~missing] for k, v in columns.items()}
        if not np.any(~missing):
            raise InputError(
                f"Every row of the table '{p.name}' has a missing value: fill in or "
                "remove the empty columns."
            )
    return columns


def numeric_columns(table: dict[str, np.ndarray], names: list[str], source: str) -> np.ndarray:
    """Stack numeric columns into an (n, len(names)) float64 array.

    Raises:
        InputError: a column is missing or not numeric.
    """
    out = []
    for name in names:
        if name not in table:
            raise InputError(
                f"The table '{source}' has no column '{name}': its columns are {', '.join(table)}."
            )
        col = table[name]
        if col.dtype.kind not in "fiub":
            raise InputError(
                f"The column '{name}' of the table '{source}' is not numeric: "
                "every factor, coordinate and label must be a number."
            )
        out.append(col.astype(np.float64))
    return np.stack(out, axis=1) if out else np.zeros((0, 0))


def find_column(table: dict[str, np.ndarray], name: str, source: str) -> str:
    """Return the column matching ``name`` (case-insensitive) or raise a clear error."""
    if name in table:
        return name
    lower = {k.lower(): k for k in table}
    if name.lower() in lower:
        return lower[name.lower()]
    raise InputError(
        f"The table '{source}' has no column '{name}': its columns are {', '.join(table)}."
    )


def _read_csv(p: Path) -> tuple[list[str], list[list[object]]]:
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = p.read_text(encoding="latin-1")
    except OSError as exc:
        raise InputError(f"The table '{p.name}' could not be read ({exc}).") from None
    lines = text.splitlines()
    if not lines:
        raise InputError(f"The table '{p.name}' is empty.")
    try:
        dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    rows = [r for r in csv.reader(lines, delimiter=delimiter) if any(c.strip() for c in r)]
    return rows[0], [list(r) for r in rows[1:]]


def _read_xlsx(p: Path) -> tuple[list[str], list[list[object]]]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(p, read_only=True, data_only=True)
    except Exception as exc:
        raise InputError(
            f"The spreadsheet '{p.name}' could not be read ({exc}): save it as .xlsx or .csv."
        ) from None
    try:
        sheet = book.worksheets[0]
        rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    finally:
        book.close()
    rows = [r for r in rows if any(c is not None and str(c).strip() != "" for c in r)]
    if not rows:
        raise InputError(f"The spreadsheet '{p.name}' is empty.")
    header = rows[0]
    while header and (header[-1] is None or str(header[-1]).strip() == ""):
        header = header[:-1]
    return [str(h) if h is not None else "" for h in header], rows[1:]


def _is_missing(cell: object) -> bool:
    if cell is None:
        return True
    if isinstance(cell, float):
        return bool(np.isnan(cell))
    return str(cell).strip().lower() in MISSING


def _column(cells: list[object]) -> tuple[np.ndarray, np.ndarray]:
    miss = np.array([_is_missing(c) for c in cells], dtype=bool)
    try:
        values = np.array(
            [np.nan if m else float(str(c).strip()) for c, m in zip(cells, miss, strict=False)],
            dtype=float,
        )
        return values, miss
    except ValueError:
        text = np.array(
            ["" if m else str(c).strip() for c, m in zip(cells, miss, strict=False)], dtype=str
        )
        return text, miss


def _missing_mask(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return ~np.isfinite(values)
    return values == ""
