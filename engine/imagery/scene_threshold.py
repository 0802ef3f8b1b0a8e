"""A landslide threshold chosen on the raster being mapped (THRESHOLD_RULE ``expected_f1``).

A mapping model's stored threshold is the one with the best F1 on its own
validation images. On a region where landslides are more or less common, or
where the model is less sure of itself, that threshold can be far off: from
Bijie to Sichuan the best thresholds were 0.02-0.12 against stored 0.16-0.38
(``docs/benchmarks.md``, "Mapping across regions").

A calibrated model (Platt scaling at training, :mod:`.calibration`) gives each
pixel a probability ``p`` of being a landslide. If those probabilities hold on
the raster being mapped, mapping the pixels with ``p >= t`` has expected true
positives ``sum(p | p >= t)`` and expected landslide pixels ``sum(p)``, so its
expected F1 is about ``2 * sum(p | p >= t) / (count(p >= t) + sum(p))``. The
rule maps with the ``t`` that maximises it, computed from a histogram of the
raster's probabilities (no label needed). On a raster where the model is sure
the rule stays near the stored threshold; where it is unsure (lower
probabilities), it lowers the threshold, which is what a region with more
landslides than the training region needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from slidewise.engine.core.job import JobContext
from slidewise.engine.geo.raster import RasterInfo

#: Histogram bins over [0, 1]: thresholds are multiples of 1 / BINS.
BINS = 1000
#: Below this expected F1 the log warns that the model is unsure on the raster.
LOW_EXPECTED_F1 = 0.2


def calibrated(extra: dict[str, Any] | None) -> bool:
    """Whether a mapping model's metadata ``extra`` records a calibration (the rule's premise)."""
    return isinstance((extra or {}).get("calibration"), dict)


def raster_threshold(prob: np.ndarray) -> float | None:
    """The ``expected_f1`` threshold of one probability array (``None``: no probability > 0)."""
    histogram = ProbabilityHistogram()
    histogram.add(prob)
    chosen = expected_f1_threshold(histogram.counts)
    return None if chosen is None else chosen.threshold


def default_threshold(prob: np.ndarray, extra: dict[str, Any] | None) -> float:
    """The threshold *Map landslides* cuts a single-decoder model's raster ``prob`` at by default.

    The ``expected_f1`` threshold of ``prob`` for a calibrated model (``extra`` is
    the model file's metadata ``extra``), else the model's stored threshold (0.5
    when none is stored).
    """
    stored = float((extra or {}).get("threshold", 0.5))
    chosen = raster_threshold(prob) if calibrated(extra) else None
    return stored if chosen is None else chosen


@dataclass
class ProbabilityHistogram:
    """Counts of a raster's landslide probabilities in :data:`BINS` equal bins.

    Attributes:
        counts: Pixels per bin (bin ``k`` holds ``k / BINS <= p < (k + 1) / BINS``;
            ``p = 1`` is in the last bin).
    """

    counts: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))

    def add(self, prob: np.ndarray) -> None:
        """Count the finite probabilities of ``prob`` (NaN = nodata is left out)."""
        values = np.asarray(prob, dtype=np.float64)
        values = values[np.isfinite(values)]
        bins = np.clip((values * BINS).astype(np.int64), 0, BINS - 1)
        self.counts += np.bincount(bins, minlength=BINS)


@dataclass(frozen=True)
class SceneThreshold:
    """The threshold with the best expected F1 on one raster.

    Attributes:
        threshold: Pixels with probability at or above it are landslides.
        expected_f1: The expected F1 at that threshold, if the probabilities are calibrated.
        expected_fraction: The expected share of landslide pixels (mean probability).
    """

    threshold: float
    expected_f1: float
    expected_fraction: float


def expected_f1_threshold(counts: np.ndarray) -> SceneThreshold | None:
    """The threshold of a probability histogram with the best expected F1.

    Args:
        counts: Pixels per bin, as :attr:`ProbabilityHistogram.counts`.

    Returns:
        The threshold (a multiple of ``1 / len(counts)``, at least one) and its
        expected F1; ``None`` when no probability reaches the first bin's end.
    """
    counts = np.asarray(counts, dtype=np.float64)
    bins = counts.size
    centres = (np.arange(bins) + 0.5) / bins
    mass = counts * centres
    expected_positives = float(mass.sum())
    if counts[1:].sum() == 0:
        return None
    true_positives = np.cumsum(mass[::-1])[::-1]
    predicted = np.cumsum(counts[::-1])[::-1]
    f1 = 2.0 * true_positives / np.maximum(predicted + expected_positives, 1e-12)
    best = 1 + int(np.argmax(f1[1:]))  # never 0: a threshold of 0 maps every pixel
    return SceneThreshold(
        threshold=best / bins,
        expected_f1=float(f1[best]),
        expected_fraction=expected_positives / float(counts.sum()),
    )


def choose_on_raster(
    strips: Iterator[tuple[Window, np.ndarray]],
    info: RasterInfo,
    first_output: str,
    stored: float,
    rows: int,
    stack: ExitStack,
    ctx: JobContext,
) -> tuple[Iterator[tuple[Window, np.ndarray]], dict[str, Any]]:
    """Predict the whole raster, then choose its threshold by expected F1.

    The strips are staged in a temporary folder next to the first output
    (:func:`stage_strips`; ``stack`` removes it) and read back once the
    threshold is known.

    Args:
        strips: The probability strips (see :func:`stage_strips`).
        info: The raster's grid.
        first_output: Path of the job's first output (the staging folder's place).
        stored: The model's stored threshold (kept when no pixel is above 0).
        rows: Rows per strip read back.
        stack: Closes the staging folder when the job ends.
        ctx: Log and warnings.

    Returns:
        The staged strips and the run's figures (``threshold`` when one was chosen).
    """
    import tempfile

    folder = stack.enter_context(
        tempfile.TemporaryDirectory(prefix=".slidewise-", dir=Path(first_output).resolve().parent)
    )
    staged, histogram = stage_strips(strips, info, folder, rows)
    chosen = expected_f1_threshold(histogram.counts)
    if chosen is None:
        ctx.log(f"THRESHOLD {stored:g}: no probability above 0, the stored threshold.")
        return staged, {"threshold_rule": "stored"}
    ctx.log(
        f"THRESHOLD {chosen.threshold:g}: the best expected F1 ({chosen.expected_f1:.2f}) of this "
        f"raster's calibrated probabilities (THRESHOLD_RULE expected_f1; expected landslide "
        f"share {chosen.expected_fraction:.1%}; the model's stored threshold is {stored:g})."
    )
    if chosen.expected_f1 < LOW_EXPECTED_F1:
        ctx.warn(
            f"The model is unsure on this raster (expected F1 {chosen.expected_f1:.2f}): its "
            f"most likely pixels are mapped at threshold {chosen.threshold:g}. Check the mask, "
            "or set THRESHOLD (e.g. the best threshold Evaluate mapping reports on a few "
            "outlined images of this region)."
        )
    figures = {
        "threshold_rule": "expected_f1",
        "stored_threshold": stored,
        "threshold": chosen.threshold,
        "expected_f1": round(chosen.expected_f1, 4),
    }
    return staged, figures


def stage_strips(
    strips: Iterator[tuple[Window, np.ndarray]],
    info: RasterInfo,
    folder: str,
    rows: int,
) -> tuple[Iterator[tuple[Window, np.ndarray]], ProbabilityHistogram]:
    """Write the probability strips to a staging GeoTIFF and count them; then read them back.

    The threshold of a raster is known only once all of it is predicted, so the
    strips go to a staging raster in ``folder`` (uncompressed float32; a second
    band holds the TTA spread when the strips carry it) while their histogram is
    counted. The returned iterator reads the staged strips back, ``rows`` rows
    at a time, in the form they came in.

    Args:
        strips: ``(window, probability)`` strips, or ``(window, [..., 2])`` with
            the probability and the TTA spread on the last axis.
        info: The raster's grid.
        folder: Where the staging raster is written (removed by the caller).
        rows: Rows per strip read back.
    """
    import rasterio

    from slidewise.engine.geo.raster import output_profile

    histogram = ProbabilityHistogram()
    path = str(Path(folder) / "probability-staging.tif")
    writer: Any = None
    try:
        for window, data in strips:
            layers = data[None] if data.ndim == 2 else np.moveaxis(data, -1, 0)
            if writer is None:
                profile = output_profile(info, layers.shape[0], "float32")
                profile.pop("predictor", None)
                writer = rasterio.open(path, "w", **(profile | {"compress": None}))
            writer.write(layers.astype(np.float32, copy=False), window=window)
            histogram.add(layers[0])
    finally:  # also when the run is cancelled mid-raster
        if writer is not None:
            writer.close()
    if writer is None:
        return iter(()), histogram
    return _read_strips(path, info.height, rows), histogram


def _read_strips(path: str, height: int, rows: int) -> Iterator[tuple[Window, np.ndarray]]:
    import rasterio

    with rasterio.open(path) as src:
        for top in range(0, height, rows):
            window = Window(0, top, src.width, min(rows, height - top))
            data = src.read(window=window)
            yield window, (data[0] if src.count == 1 else np.moveaxis(data, 0, -1))
