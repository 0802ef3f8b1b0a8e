"""The map thumbnail of a susceptibility report: classes over a hillshade of the terrain.

The elevation comes from DEM when given, else from the model's factor stack (the band
named like elevation, see :data:`ELEVATION_NAMES`); without either the classes are
drawn on their own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slidewise.engine.core.errors import ModelFileError
from slidewise.engine.core.report import Image
from slidewise.engine.imagery.thumbnails import (
    classes_thumbnail,
    hillshade,
    read_on_grid,
    read_overview,
)
from slidewise.engine.susceptibility.classify import apply_breaks, class_names

#: Factor names read as elevation (lower case).
ELEVATION_NAMES = ("elev", "elevation", "dem", "altitude", "height", "dtm", "z")


def elevation_in_stack(model: str) -> tuple[str, int] | None:
    """``(raster, band)`` of the elevation factor recorded in a model's inputs, if any."""
    import rasterio

    from slidewise.engine.core.modelfile import read_metadata
    from slidewise.engine.core.modelsummary import model_inputs

    try:
        bands = [b.lower() for b in read_metadata(model).bands]
        inputs = model_inputs(model)
    except (ModelFileError, OSError):
        return None
    wanted = [i for i, name in enumerate(bands) if name in ELEVATION_NAMES]
    for path in inputs:
        try:
            with rasterio.open(path) as src:
                count = src.count
                names = [(d or "").lower() for d in src.descriptions]
        except (rasterio.errors.RasterioIOError, OSError):
            continue
        if count > 1:
            by_name = [i for i, n in enumerate(names) if n in ELEVATION_NAMES]
            if by_name:
                return path, by_name[0] + 1
            if wanted and count == len(bands):
                return path, wanted[0] + 1
        elif Path(path).stem.lower() in ELEVATION_NAMES:
            return path, 1
    return None


def susceptibility_map(
    probability: str,
    classed: str | None,
    breaks: np.ndarray | None,
    n_classes: int,
    elevation: tuple[str, int] | None,
) -> Image:
    """Classes (from ``classed``, else ``breaks`` of ``probability``) over a hillshade.

    Args:
        probability: Probability raster (band 1).
        classed: Classed raster on the same grid, or ``None``.
        breaks: Class edges applied to the probability when ``classed`` is ``None``.
        n_classes: Number of classes.
        elevation: ``(raster, band)`` of the elevation, or ``None`` (no hillshade).
    """
    if classed:
        overview = read_overview(classed)
    else:
        overview = read_overview(probability)
        assert breaks is not None
        values = overview.values
        codes = apply_breaks(values.filled(np.nan), breaks).astype(np.float64)
        overview.values = np.ma.masked_array(codes, mask=np.ma.getmaskarray(values) | (codes < 1))
    shade = None
    if elevation is not None:
        shade = hillshade(read_on_grid(elevation[0], elevation[1], overview))
    png, data = classes_thumbnail(overview, n_classes, class_names(n_classes), shade)
    source = f"{Path(elevation[0]).name} band {elevation[1]}" if elevation else "none"
    data["hillshade_source"] = source
    caption = "Susceptibility classes" + (
        f" over a hillshade of {source} (sun from the north-west, 45°)" if elevation else ""
    )
    return Image(png, caption, key="map", data=data)
