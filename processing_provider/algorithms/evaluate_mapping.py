"""slidewise:evaluatemapping — pixel and object metrics of a landslide map."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr

REFERENCE_KINDS = ["mask", "points"]


class EvaluateMappingAlgorithm(SlidewiseAlgorithm):
    """Precision, recall, F1, IoU, MCC, confusion matrix, object hit rates."""

    ALG_ID = "evaluatemapping"
    DISPLAY_NAME = "Evaluate landslide map"
    GROUP = "mapping"
    ICON = "mapping.svg"
    JOB = "evaluatemapping"
    SHORT_HELP = (
        "Compares a landslide probability (or 0/1 mask) raster with reference labels: "
        "precision, recall, F1, IoU and MCC of the landslide class, the confusion matrix, "
        "and object-level hit rates (share of reference landslides touched by the map, share "
        "of mapped objects that hit a reference). For point-like references (labels drawn "
        "as small blobs around inventory points) it reports the hit rate at landslide points "
        "and the false-alarm rate at non-landslide points. A reference on another grid is "
        "aligned (nearest neighbour)."
    )

    def initAlgorithm(self, config=None) -> None:
        self.add(
            QgsProcessingParameterRasterLayer("INPUT", tr("Landslide map")),
            "Probability raster from Map landslides, or a 0/1 mask.",
        )
        self.add(
            QgsProcessingParameterFile("REFERENCE", tr("Reference labels")),
            "Reference label raster, or landslide polygons (vector file).",
        )
        self.add(
            QgsProcessingParameterEnum(
                "REFERENCE_KIND", tr("Reference kind"), options=REFERENCE_KINDS, defaultValue=0
            ),
            "mask: complete landslide outlines; points: small labelled blobs around "
            "inventory points (hit and false-alarm rates).",
        )
        self.add(
            QgsProcessingParameterNumber(
                "THRESHOLD",
                tr("Threshold"),
                QgsProcessingParameterNumber.Double,
                defaultValue=0.5,
                minValue=0.0,
                maxValue=1.0,
            ),
            "Map values at or above it count as landslide.",
        )
        self.add(
            QgsProcessingParameterString(
                "LANDSLIDE_VALUES", tr("Landslide values"), optional=True, defaultValue="1"
            ),
            "Reference raster values meaning landslide, comma-separated (e.g. 2).",
        )
        self.add(
            QgsProcessingParameterString(
                "IGNORE_VALUES", tr("Ignored values"), optional=True, defaultValue=""
            ),
            "Reference raster values not evaluated (e.g. 0 for unlabelled).",
        )
        self.add(
            QgsProcessingParameterFileDestination(
                "OUTPUT", tr("Figures (JSON)"), fileFilter="JSON (*.json)"
            ),
            "All figures as JSON.",
        )
        self.add(
            QgsProcessingParameterFileDestination(
                "OUTPUT_HTML",
                tr("Report (HTML)"),
                fileFilter="HTML (*.html)",
                optional=True,
                createByDefault=False,
            ),
            "The same figures as an HTML report.",
        )

    def job_parameters(self, parameters, context, feedback):
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        html = self.parameterAsFileOutput(parameters, "OUTPUT_HTML", context)
        reference = self.parameterAsFile(parameters, "REFERENCE", context)
        if not reference:
            raise QgsProcessingException(tr("Choose the reference labels (REFERENCE)."))
        params = {
            "INPUT": self.raster_path(parameters, "INPUT", context, tr("landslide map")),
            "REFERENCE": reference,
            "REFERENCE_KIND": REFERENCE_KINDS[
                self.parameterAsEnum(parameters, "REFERENCE_KIND", context)
            ],
            "THRESHOLD": self.parameterAsDouble(parameters, "THRESHOLD", context),
            "LANDSLIDE_VALUES": self.parameterAsString(parameters, "LANDSLIDE_VALUES", context),
            "IGNORE_VALUES": self.parameterAsString(parameters, "IGNORE_VALUES", context),
            "OUTPUT": output,
        }
        if html:
            params["OUTPUT_HTML"] = html
        return params, [output, html]
