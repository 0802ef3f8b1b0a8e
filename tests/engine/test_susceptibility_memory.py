"""Susceptibility prediction memory does not grow with the raster size (window by window)."""

from __future__ import annotations

from pathlib import Path

import pytest

from slidewise.bench.susceptibility_memory import LIMIT_MB, measure

SMALL, LARGE = 1000, 3000
# Small windows keep the per-window arrays (a few MB) below the noise of the allocator,
# so that what is left to grow with the raster is what must not: whole-raster arrays.
BLOCK = 128


@pytest.mark.slow
def test_prediction_peak_rss_does_not_grow_with_raster_size(tmp_path: Path) -> None:
    small = measure(SMALL, tmp_path, block_size=BLOCK)
    large = measure(LARGE, tmp_path, block_size=BLOCK)
    assert large["valid_pixels"] == LARGE * LARGE
    assert large["peak_rss_mb"] < LIMIT_MB
    # Reading the stack at once would add at least the stack itself (float32: 153 MB more
    # at LARGE than at SMALL), and its encoded copies and the MLP's activations several
    # times over. Window by window, only GDAL's block cache (capped at 64 MB) fills
    # further: about 45 MB measured; predicting the stack as one window added 982 MB.
    # The bound (the stack's own growth) leaves room for allocator noise.
    stack_growth = large["stack_mb"] - small["stack_mb"]
    rss_growth = large["peak_rss_mb"] - small["peak_rss_mb"]
    assert rss_growth < stack_growth, (small, large)
    # The bench's own clean-up leaves no raster behind.
    assert not any(tmp_path.iterdir())
