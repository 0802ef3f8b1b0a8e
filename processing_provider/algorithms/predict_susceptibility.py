"""slidewise:predictsusceptibility — probability of landslide and a classed map."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr
from slidewise.processing_provider.algorithms.shared_parameters import (
    add_factor_stack,
    factor_stack_params,
)

CLASSIFICATIONS = ["quantile", "natural_breaks", "equal_interval"]


def add_classification_parameters(alg: SlidewiseAlgorithm) -> None:
    """CLASSIFICATION / N_CLASSES (shared with evaluation)."""
    alg.add(
        QgsProcessingParameterEnum(
            "CLASSIFICATION", tr("Classification"), options=CLASSIFICATIONS, defaultValue=0
        ),
        "How class breaks are chosen: quantile (equal areas), natural breaks (Fisher-Jenks) "
        "or equal interval.",
    )
    alg.add(
        QgsProcessingParameterNumber(
            "N_CLASSES",
            tr("Number of classes"),
            QgsProcessingParameterNumber.Integer,
            defaultValue=5,
            minValue=2,
            maxValue=10,
        ),
        "Number of susceptibility classes (5: very low, low, moderate, high, very high).",
        advanced=True,
    )


class PredictSusceptibilityAlgorithm(SlidewiseAlgorithm):
    """Each pixel predicted by its block's adapted model, window by window."""

    ALG_ID = "predictsusceptibility"
    DISPLAY_NAME = "Predict susceptibility"
    GROUP = "susceptibility"
    ICON = "susceptibility.svg"
    JOB = "predictsusceptibility"
    RUNTIME_PARAMETERS = True
    SHORT_HELP = (
        "Applies a susceptibility model to a factor stack: every pixel is predicted by the "
        "model of its block (meta models) or by the global model, window by window with "
        "bounded memory. Writes the probability of landslide (0-1) and, optionally, a "
        "classed map (very low ... very high)."
    )

    def initAlgorithm(self, config=None) -> None:
        self.add(
            QgsProcessingParameterFile(
                "MODEL", tr("Model file"), fileFilter="Slidewise model (*.safetensors)"
            ),
            "A model from Train susceptibility model.",
        )
        add_factor_stack(self, categorical=False)
        self.add(
            QgsProcessingParameterRasterLayer("BLOCKS", tr("Blocks"), optional=True),
            "Block-ID raster; empty: the one recorded in the model (its hash must match).",
            advanced=True,
        )
        add_classification_parameters(self)
        self.add(
            QgsProcessingParameterNumber(
                "BLOCK_SIZE",
                tr("Window size (pixels)"),
                QgsProcessingParameterNumber.Integer,
                defaultValue=512,
                minValue=32,
            ),
            "Side of the windows the stack is predicted in; bounds the memory used.",
            advanced=True,
        )
        self.add(
            QgsProcessingParameterRasterDestination("OUTPUT", tr("Susceptibility")),
            "Probability of landslide (GeoTIFF float32, 0-1, nodata NaN).",
        )
        self.add(
            QgsProcessingParameterRasterDestination(
                "CLASSED", tr("Susceptibility classes"), optional=True, createByDefault=True
            ),
            "Classed map (uint8: 1 very low ... 5 very high, 0 nodata), styled with a legend.",
        )
        self.add_runtime_parameters()

    def job_parameters(self, parameters, context, feedback):
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        classed = self.parameterAsOutputLayer(parameters, "CLASSED", context) or ""
        params = {
            "MODEL": self.parameterAsFile(parameters, "MODEL", context),
            **factor_stack_params(self, parameters, context),
            "CLASSIFICATION": CLASSIFICATIONS[
                self.parameterAsEnum(parameters, "CLASSIFICATION", context)
            ],
            "N_CLASSES": self.parameterAsInt(parameters, "N_CLASSES", context),
            "BLOCK_SIZE": self.parameterAsInt(parameters, "BLOCK_SIZE", context),
            "OUTPUT": output,
        }
        if classed:
            params["CLASSED"] = classed
        if parameters.get("BLOCKS"):
            params["BLOCKS"] = self.raster_path(parameters, "BLOCKS", context, tr("blocks"))
        return params, [output, classed]

    def style_outputs(self, results, context) -> None:
        self.style_output(results.get("OUTPUT", ""), "susceptibility_probability.qml", context)
        self.style_output(results.get("CLASSED", ""), "susceptibility_classes.qml", context)
