"""slidewise:exportlayout — a susceptibility or landslide inventory map as a print-ready PDF.

It runs in QGIS's own Python (print layouts are QGIS's, there is no engine job): the
layers go into a private project, the ``.qpt`` template of ``resources/layouts/`` is
filled (:mod:`slidewise.processing_provider.layouts`) and exported with
``QgsLayoutExporter``. The user's project is not changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsMapLayer,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
    QgsWkbTypes,
)

from slidewise.contract.specs.exportlayout import SPEC
from slidewise.processing_provider import layouts
from slidewise.processing_provider.algorithms.base import STYLES, SlidewiseAlgorithm, tr


class ExportLayoutAlgorithm(SlidewiseAlgorithm):
    """Fills a Slidewise print layout template with the layers and exports a PDF."""

    ALG_ID = "exportlayout"
    DISPLAY_NAME = "Export map layout (PDF)"
    GROUP = "mapping"
    ICON = "mapping.svg"
    JOB = ""
    RUNS_IN_QGIS = True
    SPEC = SPEC
    SHORT_HELP = (
        "Makes a print-ready map, A4 landscape, as a PDF: the susceptibility map (classes or "
        "probability, with the landslides on top when given) or the landslide inventory map "
        "(polygons over an optional image), with legend, scale bar, north arrow, title, date, "
        "data sources and a method note. The templates (resources/layouts/*.qpt) can be "
        "opened and changed in QGIS's layout designer (Project › Layout Manager › from "
        "template). Layers of the project keep their style; files get the Slidewise style."
    )

    def flags(self):
        """Layouts render on the main thread (like QGIS's own layout export algorithms)."""
        return super().flags() | QgsProcessingAlgorithm.FlagNoThreading

    def processAlgorithm(self, parameters, context, feedback) -> dict[str, Any]:
        """Check the layers the template needs, fill the layout and export the PDF."""
        template = SPEC["TEMPLATE"].choices[self.parameterAsEnum(parameters, "TEMPLATE", context)]
        susceptibility = self.parameterAsRasterLayer(parameters, "SUSCEPTIBILITY", context)
        landslides = self.parameterAsVectorLayer(parameters, "LANDSLIDES", context)
        background = self.parameterAsRasterLayer(parameters, "BACKGROUND", context)
        check_layers(template, susceptibility, landslides)
        project = QgsProject()
        if template == "inventory" and susceptibility is not None:
            feedback.pushWarning(tr("The inventory map does not draw SUSCEPTIBILITY."))
            susceptibility = None
        given = (
            (landslides, "landslides"),
            (susceptibility, "susceptibility"),
            (background, "background"),
        )
        copies = {role: styled(layer, role, context) for layer, role in given if layer is not None}
        layers = list(copies.values())
        focus = copies.get("susceptibility") or copies.get("background") or layers[0]
        text = self.parameterAsString
        content = layouts.LayoutContent(
            template=template,
            layers=layers,
            title=text(parameters, "TITLE", context).strip(),
            sources=text(parameters, "SOURCES", context).strip() or sources_of(layers),
            method=text(parameters, "METHOD_NOTE", context).strip(),
            focus=focus,
            unlisted=[copies["background"]] if "background" in copies else [],
        )
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        try:
            layout = layouts.fill_layout(project, content)
            layouts.export_pdf(layout, output)
        except (ValueError, RuntimeError) as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback.pushInfo(tr("Layout written to {path}.").format(path=output))
        return {"OUTPUT": output}


def check_layers(template: str, susceptibility, landslides) -> None:
    """The layer the template draws must be given."""
    if template == "susceptibility" and susceptibility is None:
        raise QgsProcessingException(
            tr(
                "The susceptibility map needs SUSCEPTIBILITY (the classes or the probability "
                "from Predict susceptibility); for a map of landslides choose the inventory map."
            )
        )
    if template == "inventory" and landslides is None:
        raise QgsProcessingException(
            tr("The inventory map needs LANDSLIDES (polygons from Map or Detect landslides).")
        )


def styled(layer: QgsMapLayer, role: str, context) -> QgsMapLayer:
    """A copy of ``layer`` for the layout: a project layer keeps its style, a file gets ours.

    Args:
        layer: The layer given.
        role: ``landslides``, ``susceptibility`` or ``background``.
        context: The Processing context (its project tells project layers from files).
    """
    copy = layer.clone()
    project = context.project()
    if project is not None and project.mapLayer(layer.id()) is not None:
        return copy
    qml = default_style(copy, role)
    if qml:
        copy.loadNamedStyle(str(STYLES / qml))
    return copy


def default_style(layer: QgsMapLayer, role: str) -> str:
    """Name the layer for the legend; the Slidewise QML of its role ('' when none fits)."""
    if role == "background":
        layer.setName(tr("Background"))
        return ""
    if isinstance(layer, QgsVectorLayer):
        polygons = layer.geometryType() == QgsWkbTypes.PolygonGeometry
        layer.setName(tr("Landslides"))
        return "landslide_polygons.qml" if polygons else ""
    if isinstance(layer, QgsRasterLayer) and layer.bandCount() == 1:
        from qgis.core import Qgis

        floating = layer.dataProvider().dataType(1) in (Qgis.Float32, Qgis.Float64)
        if floating:
            layer.setName(tr("Probability of landslide"))
            return "susceptibility_probability.qml"
        layer.setName(tr("Susceptibility class"))
        return "susceptibility_classes.qml"
    return ""


def sources_of(layers: list[QgsMapLayer]) -> str:
    """The layers' file names, as the default data sources note."""
    names = [Path(layer.source().split("|")[0]).name for layer in layers]
    return "; ".join(f"{layer.name()}: {name}" for layer, name in zip(layers, names, strict=True))
