"""Floor 2: georeferenced data (rasters, vectors, tables, grid alignment, polygons,
sample tables). Imports only ``core``."""
