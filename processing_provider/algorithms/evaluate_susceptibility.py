"""slidewise:evaluatesusceptibility — metrics, rate curves and an HTML report."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingOutputFile

from slidewise.contract.specs.evaluatesusceptibility import SPEC
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr


class EvaluateSusceptibilityAlgorithm(SlidewiseAlgorithm):
    """ROC-AUC, accuracy, precision, recall, F1, kappa, rate curves, class statistics."""

    ALG_ID = "evaluatesusceptibility"
    DISPLAY_NAME = "Evaluate susceptibility"
    GROUP = "susceptibility"
    ICON = "susceptibility.svg"
    JOB = "evaluatesusceptibility"
    SPEC = SPEC
    RUNTIME_PARAMETERS = True
    SHORT_HELP = (
        "Scores a susceptibility map against a validation inventory: ROC-AUC, accuracy, "
        "precision, recall, F1 and Cohen's kappa at a threshold; the prediction-rate curve "
        "(and the success-rate curve with the training inventory) with the areas under them; "
        "per class the area share, landslide share and frequency ratio. Writes an HTML "
        "report with the plots and a JSON file with every figure."
    )

    def initAlgorithm(self, config=None) -> None:
        """Declare ``SPEC``'s parameters and the JSON output."""
        super().initAlgorithm(config)
        self.addOutput(QgsProcessingOutputFile("JSON", tr("Figures (JSON)")))

    def job_parameters(self, parameters, context, feedback):
        """The job's parameters; the JSON next to the report is an output too (cancel)."""
        params, outputs = super().job_parameters(parameters, context, feedback)
        return params, [*outputs, str(Path(params["OUTPUT"]).with_suffix(".json"))]
