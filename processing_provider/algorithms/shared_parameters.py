"""Parameter groups shared by several algorithms (one definition, one name each).

Each ``add_*`` function adds a group of parameters to an algorithm, and the
matching ``*_params`` function turns the values back into engine parameters.
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDistance,
    QgsProcessingParameterField,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)

from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr

POINTS_OR_POLYGONS = [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon]


def add_factor_stack(alg: SlidewiseAlgorithm, categorical: bool = True) -> None:
    """INPUT / FACTORS / CATEGORICAL / ALIGN: the stack of conditioning factors."""
    alg.add(
        QgsProcessingParameterRasterLayer("INPUT", tr("Factor stack"), optional=True),
        "Multi-band raster of conditioning factors; band descriptions name the factors (for "
        "example the output of Terrain factors). Give this or single factor rasters.",
    )
    alg.add(
        QgsProcessingParameterMultipleLayers(
            "FACTORS", tr("Single factor rasters"), QgsProcessing.TypeRaster, optional=True
        ),
        "Instead of a stack: one raster per factor; the first one gives the grid, the file "
        "names name the factors.",
    )
    if categorical:
        alg.add(
            QgsProcessingParameterString(
                "CATEGORICAL", tr("Categorical factors"), optional=True, defaultValue=""
            ),
            "Comma-separated names of factors that are classes (lithology, land use...); they "
            "are one-hot encoded. Classes unseen in training become all-zero codes with a "
            "warning.",
        )
    alg.add(
        QgsProcessingParameterBoolean(
            "ALIGN", tr("Align rasters on other grids"), defaultValue=False
        ),
        "Resample factor rasters on other grids onto the first one (bilinear for continuous, "
        "nearest for categorical factors). Off: such rasters are refused with a message "
        "naming the one that differs.",
        advanced=True,
    )


def factor_stack_params(
    alg: SlidewiseAlgorithm, parameters: dict[str, Any], context: QgsProcessingContext
) -> dict[str, Any]:
    """Engine parameters of the factor stack group."""
    params: dict[str, Any] = {}
    if parameters.get("INPUT"):
        params["INPUT"] = alg.raster_path(parameters, "INPUT", context, tr("factor stack"))
    layers = alg.parameterAsLayerList(parameters, "FACTORS", context)
    if layers:
        params["FACTORS"] = [layer.source().split("|")[0] for layer in layers]
    if not params:
        raise QgsProcessingException(
            tr(
                "No factors were given: choose a factor stack (INPUT) or single factor "
                "rasters (FACTORS)."
            )
        )
    if alg.parameterDefinition("CATEGORICAL") is not None:
        text = alg.parameterAsString(parameters, "CATEGORICAL", context)
        params["CATEGORICAL"] = [t.strip() for t in text.split(",") if t.strip()]
    params["ALIGN"] = alg.parameterAsBool(parameters, "ALIGN", context)
    return params


def add_label_field(alg: SlidewiseAlgorithm, parent: str = "INVENTORY") -> None:
    """LABEL_FIELD: 1 = landslide, 0 = not landslide."""
    alg.add(
        QgsProcessingParameterField(
            "LABEL_FIELD",
            tr("Label field (1 = landslide, 0 = not)"),
            parentLayerParameterName=parent,
            optional=True,
        ),
        "Field holding 1 for landslides and 0 for non-landslides; empty: every feature is a "
        "landslide and non-landslides are drawn at random outside a buffer.",
    )


def add_random_negatives(alg: SlidewiseAlgorithm, parent: str, default_pixels: int) -> None:
    """NEGATIVE_RATIO / BUFFER: random non-landslide draws."""
    alg.add(
        QgsProcessingParameterNumber(
            "NEGATIVE_RATIO",
            tr("Random non-landslides per landslide"),
            QgsProcessingParameterNumber.Double,
            defaultValue=1.0,
            minValue=0.0,
        ),
        "When there are no non-landslide samples: how many to draw at random per landslide.",
        advanced=True,
    )
    alg.add(
        QgsProcessingParameterDistance(
            "BUFFER",
            tr("Buffer around landslides"),
            parentParameterName=parent,
            defaultValue=0.0,
            minValue=0.0,
            optional=True,
        ),
        "Random non-landslides lie farther than this from every landslide (map units); "
        f"0 = {default_pixels} pixels.",
        advanced=True,
    )


def random_negative_params(
    alg: SlidewiseAlgorithm, parameters: dict[str, Any], context: QgsProcessingContext
) -> dict[str, Any]:
    """Engine parameters of NEGATIVE_RATIO / BUFFER / LABEL_FIELD (unset ones left out)."""
    params: dict[str, Any] = {
        "NEGATIVE_RATIO": alg.parameterAsDouble(parameters, "NEGATIVE_RATIO", context),
    }
    buffer = alg.parameterAsDouble(parameters, "BUFFER", context)
    if buffer > 0:
        params["BUFFER"] = buffer
    label = alg.parameterAsString(parameters, "LABEL_FIELD", context)
    if label:
        params["LABEL_FIELD"] = label
    return params


def add_inventory(alg: SlidewiseAlgorithm, optional: bool = False) -> None:
    """INVENTORY / LABEL_FIELD / NEGATIVES / NEGATIVE_RATIO / BUFFER / PER_POLYGON."""
    alg.add(
        QgsProcessingParameterVectorLayer(
            "INVENTORY", tr("Landslide inventory"), POINTS_OR_POLYGONS, optional=optional
        ),
        "Landslide points or polygons (a CSV loaded as a point layer works too). Layers in "
        "another CRS are reprojected.",
    )
    add_label_field(alg)
    alg.add(
        QgsProcessingParameterVectorLayer(
            "NEGATIVES", tr("Non-landslide samples"), POINTS_OR_POLYGONS, optional=True
        ),
        "Optional non-landslide points or polygons; without them (and without 0 labels) "
        "non-landslides are drawn at random outside a buffer around the landslides.",
    )
    add_random_negatives(alg, "INVENTORY", default_pixels=2)
    alg.add(
        QgsProcessingParameterNumber(
            "PER_POLYGON",
            tr("Pixels per polygon"),
            QgsProcessingParameterNumber.Integer,
            defaultValue=0,
            minValue=0,
        ),
        "For polygon inventories: pixels drawn per polygon (0 = every pixel inside).",
        advanced=True,
    )


def inventory_params(
    alg: SlidewiseAlgorithm, parameters: dict[str, Any], context: QgsProcessingContext
) -> dict[str, Any]:
    """Engine parameters of the inventory group (unset values left out)."""
    params: dict[str, Any] = {
        "INVENTORY": alg.vector_path(parameters, "INVENTORY", context),
        "NEGATIVES": alg.vector_path(parameters, "NEGATIVES", context),
        "PER_POLYGON": alg.parameterAsInt(parameters, "PER_POLYGON", context),
        **random_negative_params(alg, parameters, context),
    }
    return {k: v for k, v in params.items() if v not in ("", None)}
