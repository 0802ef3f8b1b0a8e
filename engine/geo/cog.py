"""Cloud-Optimized GeoTIFF outputs (the COG option of every raster-writing job).

A job writes its rasters as usual, window by window; when COG is on the worker
then rewrites each raster output in place as a Cloud-Optimized GeoTIFF with
:func:`rio_cogeo.cogeo.cog_translate`: internal 512 px tiles, overviews down to
one tile, DEFLATE, the data first in the file, so that QGIS and GDAL read only
the tiles and overview levels a view needs, also over HTTP (``/vsicurl/``) or
from object storage (``/vsis3/``). Values, nodata, CRS, transform, band names
and colour tables are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import rasterio

from slidewise.engine.core.outputs import atomic_output

#: Side of the internal tiles, in pixels.
COG_TILE = 512


def overview_resampling(dtype: str) -> Literal["average", "nearest"]:
    """``average`` for continuous rasters (probabilities), ``nearest`` for codes and classes."""
    return "average" if np.issubdtype(np.dtype(dtype), np.floating) else "nearest"


def write_cog(path: str | Path) -> None:
    """Rewrite the GeoTIFF at ``path`` in place as a Cloud-Optimized GeoTIFF.

    The file is replaced atomically: a failure leaves the plain GeoTIFF as it was.
    """
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    profile = dict(cog_profiles.get("deflate"), blockxsize=COG_TILE, blockysize=COG_TILE)
    with rasterio.open(path) as src:
        resampling = overview_resampling(src.dtypes[0])
        if src.width <= COG_TILE and src.height <= COG_TILE:
            profile.update(blockxsize=256, blockysize=256)
        with atomic_output(str(path)) as partial:
            cog_translate(
                src,
                partial,
                profile,
                overview_resampling=resampling,
                forward_band_tags=True,
                in_memory=False,
                quiet=True,
                config={"GDAL_TIFF_INTERNAL_MASK": True, "GDAL_PAM_ENABLED": "NO"},
            )


def is_cog(path: str | Path) -> bool:
    """True when ``path`` is a valid Cloud-Optimized GeoTIFF (rio-cogeo's validation)."""
    from rio_cogeo.cogeo import cog_validate

    valid, _errors, _warnings = cog_validate(str(path), quiet=True)
    return bool(valid)
