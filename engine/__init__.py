"""Slidewise engine: the QGIS-free computation behind the Processing algorithms.

GDAL reads its block-cache size once, when it loads; the default (5 % of RAM)
would let a large windowed job hold gigabytes of cached blocks, so the engine
caps it unless the user set ``GDAL_CACHEMAX`` already.
"""

import os

os.environ.setdefault("GDAL_CACHEMAX", "128")
