"""slidewise:evaluatesusceptibility — metrics, rate curves and an HTML report."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessing, QgsProcessingOutputFile

from slidewise.contract.specs.evaluatesusceptibility import SPEC
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr

#: The inventories are points or polygons (the contract's ``vector`` kind takes any layer).
INVENTORY_PARAMETERS = ("INVENTORY", "TRAINING")
POINTS_OR_POLYGONS = [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon]


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
        """Declare ``SPEC``'s parameters and the JSON output.

        The inventories are limited to point and polygon layers, as before the contract.
        """
        super().initAlgorithm(config)
        for name in INVENTORY_PARAMETERS:
            self.parameterDefinition(name).setDataTypes(POINTS_OR_POLYGONS)
        self.addOutput(QgsProcessingOutputFile("JSON", tr("Figures (JSON)")))

    def job_parameters(self, parameters, context, feedback):
        """The job's parameters; the JSON next to the report is an output too (cancel)."""
        params, outputs = super().job_parameters(parameters, context, feedback)
        return params, [*outputs, str(Path(params["OUTPUT"]).with_suffix(".json"))]
