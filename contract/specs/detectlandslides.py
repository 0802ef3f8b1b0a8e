"""slidewise:detectlandslides: landslide boxes on a raster, from a detector or a map."""

from __future__ import annotations

from dataclasses import replace

from slidewise.contract.spec import AlgorithmSpec, Param
from slidewise.contract.specs.groups import SCALE_OUT
from slidewise.contract.specs.inference import BACKEND
from slidewise.contract.specs.maplandslides import THRESHOLD_RULE
from slidewise.contract.specs.polygons import COMPONENT_PARAMS
from slidewise.contract.specs.training import OVERLAP, TILE_BATCH, TILE_SIZE

SOURCES = ("detector", "segmentation")

SPEC = AlgorithmSpec(
    "detectlandslides",
    (
        Param(
            "INPUT",
            "Image",
            "raster",
            "Georeferenced raster with the model's bands (not needed with a probability raster).",
        ),
        Param(
            "MODEL",
            "Model file",
            "file",
            "A detection model (Train detection model) for source detector, or a mapping model "
            "(Train mapping model) for source segmentation.",
            file_filter="Slidewise model (*.safetensors)",
        ),
        Param(
            "SOURCE",
            "Boxes from",
            "choice",
            "detector: Faster R-CNN on overlapping tiles; segmentation: boxes around the "
            "connected components of a mapping model's output, to compare both routes.",
            default="detector",
            choices=SOURCES,
        ),
        Param(
            "BANDS",
            "Bands",
            "text",
            "Raster bands fed to the model in its order (1-based numbers or band names); empty: "
            "the raster's bands, checked against the model's.",
            advanced=True,
        ),
        replace(
            TILE_SIZE,
            help="Tile side; empty: the detector's training image side (segmentation: as in "
            "Map landslides).",
            maximum=16384,
        ),
        replace(
            OVERLAP,
            help="Overlap of neighbouring tiles, smaller than the tile; objects smaller than "
            "it are always seen whole by one tile; empty: 64 (at most a quarter tile) for the "
            "detector, as in Map landslides for segmentation.",
            default=None,
        ),
        Param(
            "SCORE_THRESHOLD",
            "Minimum score",
            "float",
            "Boxes scoring lower are dropped; empty: 0.5 for the detector, 0 for segmentation.",
            minimum=0.0,
            maximum=1.0,
            advanced=True,
        ),
        Param(
            "NMS_IOU",
            "NMS IoU",
            "float",
            "IoU above which the lower-scoring of two boxes is removed (one NMS over all tiles, "
            "so boxes cut by tile borders are merged).",
            default=0.5,
            minimum=0.0,
            maximum=1.0,
            advanced=True,
        ),
        Param(
            "THRESHOLD",
            "Probability threshold (segmentation)",
            "float",
            "Pixel probability for landslide; empty: the threshold Map landslides would use "
            "(THRESHOLD_RULE; 0.5 for a probability raster).",
            minimum=0.0,
            maximum=1.0,
            advanced=True,
        ),
        replace(
            THRESHOLD_RULE,
            label="Threshold rule (segmentation)",
            help=THRESHOLD_RULE.help + " Source segmentation with a mapping model only.",
        ),
        *COMPONENT_PARAMS,
        replace(TILE_BATCH, help="Tiles per forward pass; empty: 1 on CPU, 4 on GPU."),
        replace(
            BACKEND,
            help=BACKEND.help
            + " Source detector: the detector always runs on PyTorch (its box decoding and "
            "non-maximum suppression are PyTorch code); the choice applies to the mapping model "
            "of source segmentation.",
        ),
        Param(
            "PROBABILITY",
            "Probability raster (segmentation)",
            "raster",
            "Source segmentation: an existing landslide probability raster (from Map "
            "landslides) used instead of a model.",
            advanced=True,
        ),
        Param(
            "OUTPUT",
            "Landslide boxes",
            "output_vector",
            "Box polygons (GeoPackage recommended, .shp, .geojson) with score, class and area.",
            required=True,
        ),
        # With a MODEL (detector: tile batches; segmentation: tile rows) the tiles go to Dask.
        *SCALE_OUT,
    ),
)
