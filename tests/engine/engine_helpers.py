"""Shared paths and helpers of the engine tests (imported by the test modules).

Real data lives in ``../shared/data`` next to the repository (see its README);
tests that need it skip when it is absent.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from slidewise.engine.core.job import JobContext
from slidewise.engine.core.protocol import Reporter
from slidewise.engine.core.runtime import RuntimeOptions

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
BIJIE = SHARED / "mapping" / "bijie"


def job_context(name: str, seed: int = 0) -> tuple[JobContext, io.StringIO]:
    """A CPU job context whose protocol lines are kept in the returned stream."""
    stream = io.StringIO()
    return JobContext(name, RuntimeOptions(device="cpu", seed=seed), Reporter(stream)), stream


def quiet_context(seed: int = 0) -> JobContext:
    """A CPU job context named ``test`` (what it wrote: :func:`context_text`)."""
    return job_context("test", seed)[0]


def context_text(c: JobContext) -> str:
    """Every protocol line a context of :func:`job_context` wrote, as one text."""
    stream = c.reporter.stream
    assert isinstance(stream, io.StringIO)
    return stream.getvalue()


def write_geotiff(
    path: Path,
    image: np.ndarray,
    crs: str = "EPSG:32648",
    pixel: float = 1.0,
    origin: tuple[float, float] = (500000, 3000000),
    nodata: float | None = None,
    names: list[str] | None = None,
) -> str:
    """Write ``image`` (bands, rows, cols) as a GeoTIFF on a north-up grid; its path.

    ``names`` are band descriptions; ``origin`` is the upper-left corner.
    """
    import rasterio
    from rasterio.transform import from_origin

    bands, rows, cols = image.shape
    profile = {
        "driver": "GTiff",
        "width": cols,
        "height": rows,
        "count": bands,
        "dtype": str(image.dtype),
        "crs": crs,
        "transform": from_origin(*origin, pixel, pixel),
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
        for i, name in enumerate(names or [], start=1):
            dst.set_band_description(i, name)
    return str(path)


def log_messages(stream: io.StringIO) -> list[str]:
    """The log messages a job wrote to ``stream`` (see :func:`job_context`)."""
    msgs = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [m["message"] for m in msgs if m["type"] == "log"]


def progress_values(stream: io.StringIO) -> list[float]:
    """The progress values (percent) a job wrote to ``stream``, in order."""
    msgs = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [float(m["value"]) for m in msgs if m["type"] == "progress"]


def assert_steady_progress(values: list[float], start: float, end: float, steps: int) -> None:
    """Progress of a training stage [start, end]: at least ``steps`` distinct values
    inside the stage (one per batch), never decreasing, reaching ``end``."""
    assert values == sorted(values), values
    inside = sorted({v for v in values if start < v <= end})
    assert len(inside) >= steps, (steps, values)
    assert inside[-1] == pytest.approx(end), values


def bijie_subset(tmp: Path, names: list[str]) -> tuple[Path, Path]:
    """Folders ``images`` and ``masks`` under ``tmp`` linking the named Bijie pairs."""
    img, msk = tmp / "images", tmp / "masks"
    img.mkdir(parents=True)
    msk.mkdir(parents=True)
    for name in names:
        (img / name).symlink_to(BIJIE / "images" / name)
        (msk / name).symlink_to(BIJIE / "masks" / name)
    return img, msk
