"""Common base of the algorithms that read a factor stack (INPUT or FACTORS)."""

from __future__ import annotations

from typing import Any

from qgis.core import (
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
