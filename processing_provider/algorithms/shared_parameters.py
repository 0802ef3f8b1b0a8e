"""Inventory parameters of evaluatesusceptibility (label field, random non-landslides).

The factor-stack algorithms declare theirs in :mod:`slidewise.contract.specs.factors`;
what is left here serves ``evaluate_susceptibility.py`` until it has a spec too.
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingParameterDistance,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
)

from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr

POINTS_OR_POLYGONS = [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon]


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
