"""Results of a run in the project: one layer group per run, styled, in order."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsLayerTreeGroup,
    QgsLayerTreeLayer,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

from slidewise.processing_provider.algorithms.base import STYLES
from slidewise.ui.panel.workflow import Presentation, insert_index

#: Custom property holding a layer's rank in its run group.
RANK_PROPERTY = "slidewise/rank"


def run_group(name: str, project: QgsProject | None = None) -> QgsLayerTreeGroup:
    """The run's group at the top of the layer tree (created on first use)."""
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    group = root.findGroup(name)
    if group is None:
        group = root.insertGroup(0, name)
        group.setExpanded(True)
    return group


def open_layer(path: str, name: str) -> QgsMapLayer | None:
    """A raster or vector layer of a file written by a step (``None`` if unreadable).

    ``path`` may name one layer of a file: ``inventory.gpkg|layername=landslide_inventory``.
    """
    suffix = Path(path.split("|", 1)[0]).suffix.lower()
    if suffix in (".gpkg", ".shp", ".geojson", ".json", ".fgb"):
        layer: QgsMapLayer = QgsVectorLayer(path, name, "ogr")
    else:
        layer = QgsRasterLayer(path, name, "gdal")
    return layer if layer.isValid() else None


def remove_from_group(group: QgsLayerTreeGroup, source: str) -> None:
    """Remove the layers of ``group`` that show ``source`` (an output written again)."""
    for node in group.findLayers():
        layer = node.layer()
        if layer is not None and layer.source() == source:
            QgsProject.instance().removeMapLayer(layer.id())


def style_layer(layer: QgsMapLayer, presentation: Presentation) -> None:
    """Apply the QML style and the opacity of ``presentation``."""
    if presentation.qml:
        qml = STYLES / presentation.qml
        if qml.is_file():
            layer.loadNamedStyle(str(qml))
    if isinstance(layer, QgsRasterLayer):
        layer.renderer().setOpacity(presentation.opacity)
    elif isinstance(layer, QgsVectorLayer):
        layer.setOpacity(presentation.opacity)
    layer.setCustomProperty(RANK_PROPERTY, presentation.rank)
    layer.triggerRepaint()


def add_to_group(
    group: QgsLayerTreeGroup, layer: QgsMapLayer, presentation: Presentation
) -> QgsLayerTreeLayer:
    """Add a styled layer to the run's group at the place its rank gives."""
    style_layer(layer, presentation)
    QgsProject.instance().addMapLayer(layer, False)
    ranks = []
    for child in group.children():
        if isinstance(child, QgsLayerTreeLayer) and child.layer() is not None:
            ranks.append(int(child.layer().customProperty(RANK_PROPERTY, 0)))
        else:
            ranks.append(0)
    node = group.insertLayer(insert_index(ranks, presentation.rank), layer)
    node.setItemVisibilityChecked(presentation.visible)
    return node
