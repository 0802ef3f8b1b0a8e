"""slidewise:evaluatesusceptibility — metrics, rate curves and an HTML report."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingOutputFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorLayer,
)

from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr
from slidewise.processing_provider.algorithms.predict_susceptibility import (
    CLASSIFICATIONS,
    add_classification_parameters,
)
from slidewise.processing_provider.algorithms.shared_parameters import (
    POINTS_OR_POLYGONS,
    add_label_field,
    add_random_negatives,
    random_negative_params,
)


class EvaluateSusceptibilityAlgorithm(SlidewiseAlgorithm):
    """ROC-AUC, accuracy, precision, recall, F1, kappa, rate curves, class statistics."""

    ALG_ID = "evaluatesusceptibility"
    DISPLAY_NAME = "Evaluate susceptibility"
    GROUP = "susceptibility"
    ICON = "susceptibility.svg"
    JOB = "evaluatesusceptibility"
    RUNTIME_PARAMETERS = True
    SHORT_HELP = (
        "Scores a susceptibility map against a validation inventory: ROC-AUC, accuracy, "
        "precision, recall, F1 and Cohen's kappa at a threshold; the prediction-rate curve "
        "(and the success-rate curve with the training inventory) with the areas under them; "
        "per class the area share, landslide share and frequency ratio. Writes an HTML "
        "report with the plots and a JSON file with every figure."
    )

    def initAlgorithm(self, config=None) -> None:
        self.add(
            QgsProcessingParameterRasterLayer("INPUT", tr("Susceptibility")),
            "Probability of landslide (0-1), for example from Predict susceptibility.",
        )
        self.add(
            QgsProcessingParameterVectorLayer(
                "INVENTORY", tr("Validation inventory"), POINTS_OR_POLYGONS
            ),
            "Landslides not used in training (points or polygons), optionally with "
            "non-landslides marked 0 in the label field. Other CRS are reprojected.",
        )
        add_label_field(self)
        self.add(
            QgsProcessingParameterVectorLayer(
                "TRAINING", tr("Training inventory"), POINTS_OR_POLYGONS, optional=True
            ),
            "The landslides the model was trained on, for the success-rate curve.",
        )
        self.add(
            QgsProcessingParameterRasterLayer("CLASSED", tr("Classed map"), optional=True),
            "A classed map on the same grid; empty: classes are made from the "
            "susceptibility with the classification below.",
        )
        add_classification_parameters(self)
        self.add(
            QgsProcessingParameterNumber(
                "THRESHOLD",
                tr("Threshold"),
                QgsProcessingParameterNumber.Double,
                defaultValue=0.5,
                minValue=0.0,
                maxValue=1.0,
            ),
            "Probability at or above which a place counts as predicted landslide.",
        )
        add_random_negatives(self, "INPUT", default_pixels=3)
        self.add(
            QgsProcessingParameterFileDestination(
                "OUTPUT", tr("Report"), fileFilter="HTML (*.html)"
            ),
            "HTML report with plots and tables; a JSON file with the same figures is "
            "written next to it.",
        )
        self.addOutput(QgsProcessingOutputFile("JSON", tr("Figures (JSON)")))
        self.add_runtime_parameters()

    def job_parameters(self, parameters, context, feedback):
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        params = {
            "INPUT": self.raster_path(parameters, "INPUT", context, tr("susceptibility raster")),
            "INVENTORY": self.vector_path(parameters, "INVENTORY", context),
            "CLASSIFICATION": CLASSIFICATIONS[
                self.parameterAsEnum(parameters, "CLASSIFICATION", context)
            ],
            "N_CLASSES": self.parameterAsInt(parameters, "N_CLASSES", context),
            "THRESHOLD": self.parameterAsDouble(parameters, "THRESHOLD", context),
            **random_negative_params(self, parameters, context),
            "SEED": self.parameterAsInt(parameters, "SEED", context),
            "OUTPUT": output,
        }
        training = self.vector_path(parameters, "TRAINING", context)
        if training:
            params["TRAINING"] = training
        if parameters.get("CLASSED"):
            params["CLASSED"] = self.raster_path(parameters, "CLASSED", context, tr("classed map"))
        from pathlib import Path

        return params, [output, str(Path(output).with_suffix(".json"))]
