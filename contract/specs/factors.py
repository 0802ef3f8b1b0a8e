"""Parameter groups of the factor-stack algorithms: stack, inventory, blocks, classes.

Shared by samplefactors, segmentblocks, trainsusceptibility and
predictsusceptibility (engine: :mod:`slidewise.engine.geo.stackparams` and
:mod:`slidewise.engine.susceptibility.blocks`).
"""

from __future__ import annotations

from dataclasses import replace

from slidewise.contract.spec import Param
from slidewise.contract.specs.groups import SEED

#: Where the factors come from: one multi-band raster or single rasters.
STACK_INPUTS: tuple[Param, ...] = (
    Param(
        "INPUT",
        "Factor stack (or single factor rasters below)",
        "raster",
        "Multi-band raster of conditioning factors; band descriptions name the factors (for "
        "example the output of Terrain factors). Give this or single factor rasters.",
    ),
    Param(
        "FACTORS",
        "Single factor rasters (instead of a factor stack)",
        "rasters",
        "Instead of a stack: one raster per factor; the first one gives the grid, the file "
        "names name the factors.",
        default=(),
    ),
)
CATEGORICAL = Param(
    "CATEGORICAL",
    "Categorical factors",
    "names",
    "Comma-separated names of factors that are classes (lithology, land use...); they "
    "are one-hot encoded. Classes unseen in training become all-zero codes with a "
    "warning.",
    default=(),
)
ALIGN = Param(
    "ALIGN",
    "Align rasters on other grids",
    "bool",
    "Resample factor rasters on other grids onto the first one (bilinear for continuous, "
    "nearest for categorical factors). Off: such rasters are refused with a message "
    "naming the one that differs.",
    default=False,
    advanced=True,
)
#: The factor stack: INPUT / FACTORS / CATEGORICAL / ALIGN.
FACTOR_STACK: tuple[Param, ...] = (*STACK_INPUTS, CATEGORICAL, ALIGN)
#: Message of the algorithms when neither INPUT nor FACTORS is given.
NO_FACTORS = (
    "No factors were given: choose a factor stack (INPUT) or single factor rasters (FACTORS)."
)

LABEL_FIELD = Param(
    "LABEL_FIELD",
    "Label field (1 = landslide, 0 = not)",
    "field",
    "Field holding 1 for landslides and 0 for non-landslides; empty: every feature is a "
    "landslide and non-landslides are drawn at random outside a buffer.",
    parent="INVENTORY",
)
#: Random non-landslide draws: NEGATIVE_RATIO / BUFFER.
RANDOM_NEGATIVES: tuple[Param, ...] = (
    Param(
        "NEGATIVE_RATIO",
        "Random non-landslides per landslide",
        "float",
        "When there are no non-landslide samples: how many to draw at random per landslide "
        "(0 = none).",
        default=1.0,
        minimum=0.0,
        maximum=1000.0,
        advanced=True,
    ),
    Param(
        "BUFFER",
        "Buffer around landslides",
        "float",
        "Random non-landslides lie farther than this from every landslide, in the units of "
        "the factor stack's CRS (metres for the usual projected CRS); empty: 2 pixels.",
        minimum=0.0,
        maximum=100_000.0,
        unit="map units",
        advanced=True,
    ),
)
#: The landslide inventory and how samples are drawn (what the dialog shows).
INVENTORY: tuple[Param, ...] = (
    Param(
        "INVENTORY",
        "Landslide inventory",
        "points_or_polygons",
        "Landslide points or polygons (a CSV loaded as a point layer works too). Layers in "
        "another CRS are reprojected.",
    ),
    LABEL_FIELD,
    Param(
        "NEGATIVES",
        "Non-landslide samples",
        "points_or_polygons",
        "Optional non-landslide points or polygons; without them (and without 0 labels) "
        "non-landslides are drawn at random outside a buffer around the landslides.",
    ),
    *RANDOM_NEGATIVES,
    Param(
        "PER_POLYGON",
        "Pixels per polygon",
        "int",
        "For polygon inventories: pixels drawn per polygon (0 = every pixel inside).",
        default=0,
        minimum=0,
        maximum=100_000,
        advanced=True,
    ),
)
X_FIELD = Param("X_FIELD", "X field", "text", "X coordinate column of tables.", default="x")
Y_FIELD = Param("Y_FIELD", "Y field", "text", "Y coordinate column of tables.", default="y")
#: Sampling parameters that only scripts set: table columns, table CRS, seed.
SAMPLING_HIDDEN: tuple[Param, ...] = (
    X_FIELD,
    Y_FIELD,
    Param(
        "INVENTORY_CRS",
        "Inventory CRS",
        "text",
        "CRS of the coordinates of table inventories (e.g. EPSG:32717); empty: the stack's.",
        default="",
    ),
    replace(SEED, default=None, help=SEED.help + " Empty: the run seed."),
)
#: Names of :data:`SAMPLING_HIDDEN` (``AlgorithmSpec.hidden``).
SAMPLING_HIDDEN_NAMES = frozenset(p.name for p in SAMPLING_HIDDEN)

#: Terrain blocks (SLIC superpixels): N_BLOCKS / COMPACTNESS / BANDS / WEIGHTS / ITERATIONS.
BLOCKS: tuple[Param, ...] = (
    Param(
        "N_BLOCKS",
        "Number of blocks",
        "int",
        "Approximate number of blocks (SLIC superpixels); 0 = about 25 samples per block "
        "(4 to 256 blocks).",
        default=0,
        minimum=0,
        maximum=100_000,
        advanced=True,
    ),
    Param(
        "COMPACTNESS",
        "Compactness",
        "float",
        "Higher values give more compact blocks, lower values blocks that follow the terrain "
        "more closely (bands are standardised and weighted first).",
        default=0.5,
        minimum=0.0,
        maximum=1000.0,
        advanced=True,
    ),
    Param(
        "BANDS",
        "Segmentation bands",
        "names",
        "Comma-separated band names to segment on; empty: the DEM/elevation, aspect, "
        "curvature and slope bands found by name.",
        default=(),
        advanced=True,
    ),
    Param(
        "WEIGHTS",
        "Band weights",
        "numbers",
        "Comma-separated weights, one per segmentation band; empty: 0.3, 0.1, 0.2, 0.4 for "
        "DEM, aspect, curvature and slope (as meta_LSM).",
        default=(),
        advanced=True,
    ),
    Param(
        "ITERATIONS",
        "SLIC iterations",
        "int",
        "Iterations of the SLIC clustering.",
        default=10,
        minimum=1,
        maximum=1000,
        advanced=True,
    ),
)

#: Class breaks of a classed susceptibility map (engine: ``susceptibility.classify.METHODS``).
CLASSIFICATIONS = ("quantile", "natural_breaks", "equal_interval")
#: What the dialog shows for :data:`CLASSIFICATIONS`.
CLASSIFICATION_LABELS = (
    "Quantiles (equal areas)",
    "Natural breaks (Fisher-Jenks)",
    "Equal intervals",
)
#: CLASSIFICATION / N_CLASSES: classed susceptibility maps (prediction and evaluation).
CLASSES: tuple[Param, ...] = (
    Param(
        "CLASSIFICATION",
        "Classification",
        "choice",
        "How class breaks are chosen: quantile (equal areas), natural breaks (Fisher-Jenks) "
        "or equal interval.",
        default="quantile",
        choices=CLASSIFICATIONS,
        choice_labels=CLASSIFICATION_LABELS,
    ),
    Param(
        "N_CLASSES",
        "Number of classes",
        "int",
        "Number of susceptibility classes (5: very low, low, moderate, high, very high).",
        default=5,
        minimum=2,
        maximum=10,
        advanced=True,
    ),
)

#: Where a job that segments the stack itself writes the blocks it used.
BLOCKS_OUTPUT = Param(
    "OUTPUT_BLOCKS",
    "Blocks used",
    "output_raster",
    "Where to write the blocks when the stack is segmented here (default: next to the model).",
    create_by_default=False,
)
