"""Common base of the algorithms that read a factor stack (INPUT or FACTORS)."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
)

from slidewise.contract.specs.factors import NO_FACTORS
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr


class FactorStackAlgorithm(SlidewiseAlgorithm):
    """Refuses a run without factors before the engine starts (INPUT and FACTORS are optional).

    Subclasses set ``SPEC`` with the ``FACTOR_STACK`` group of
    :mod:`slidewise.contract.specs.factors`.
    """

    RUNTIME_PARAMETERS = True
    #: Layer parameters that take points or polygons (the contract's ``vector`` takes any).
    POINTS_OR_POLYGONS = ("INVENTORY", "NEGATIVES")

    def initAlgorithm(self, config=None) -> None:
        """The spec's parameters; inventories list point and polygon layers only."""
        super().initAlgorithm(config)
        for name in self.POINTS_OR_POLYGONS:
            definition = self.parameterDefinition(name)
            if definition is not None:
                definition.setDataTypes(
                    [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon]
                )

    def needs_factors(self, params: dict[str, Any]) -> bool:
        """Whether these job parameters need a factor stack (subclasses may say no)."""
        return True

    def job_parameters(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> tuple[dict[str, Any], list[str]]:
        """The spec's parameters; a factor stack or single factor rasters are required."""
        params, outputs = super().job_parameters(parameters, context, feedback)
        if self.needs_factors(params) and not (params.get("INPUT") or params.get("FACTORS")):
            raise QgsProcessingException(tr(NO_FACTORS))
        return params, outputs
