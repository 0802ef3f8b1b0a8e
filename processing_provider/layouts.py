"""Print layouts: the Slidewise ``.qpt`` templates, filled with layers and exported to PDF.

The templates in ``resources/layouts/`` (a susceptibility map and a landslide inventory
map, A4 landscape) hold items with fixed ids: ``map``, ``legend``, ``scalebar``,
``north``, ``title``, ``date``, ``sources`` and ``method``. They can be edited in
QGIS's layout designer (keep the ids). :func:`build_template_layout` made them
(``scripts/make_layouts.py``); :func:`fill_layout` loads one into a private project,
adds the layers, zooms the map and sets the texts; :func:`export_pdf` writes the PDF.

Only APIs present in both QGIS 3.22 and 3.40 are used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qgis.core import (
    QgsLayoutExporter,
    QgsLayoutItemLabel,
    QgsLayoutItemLegend,
    QgsLayoutItemMap,
    QgsLayoutItemPicture,
    QgsLayoutItemScaleBar,
    QgsLayoutPoint,
    QgsLayoutSize,
    QgsMapLayer,
    QgsPrintLayout,
    QgsProject,
    QgsReadWriteContext,
    QgsRectangle,
    QgsUnitTypes,
)
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QColor, QFont
from qgis.PyQt.QtXml import QDomDocument

LAYOUTS = Path(__file__).resolve().parents[1] / "resources" / "layouts"
#: Template choice -> (file, default title).
TEMPLATES = {
    "susceptibility": ("susceptibility_map.qpt", "Landslide susceptibility map"),
    "inventory": ("landslide_inventory_map.qpt", "Landslide inventory map"),
}
DEFAULT_METHOD = {
    "susceptibility": (
        "Susceptibility: probability of landslide predicted by Slidewise from terrain factors, "
        "classed into five classes. A map of relative likelihood, not of when landslides occur."
    ),
    "inventory": (
        "Inventory: landslide outlines mapped by Slidewise from imagery (semantic segmentation "
        "or detection), with a minimum area. Check them against the imagery before use."
    ),
}
MM = QgsUnitTypes.LayoutMillimeters


@dataclass
class LayoutContent:
    """What goes into a layout.

    Attributes:
        template: A key of :data:`TEMPLATES`.
        layers: Layers drawn, top first (the first one sets the extent and the CRS).
        title: Title (empty: the template's default).
        sources: Data sources note.
        method: Method note (empty: :data:`DEFAULT_METHOD`).
        focus: The layer whose extent the map shows (default: the first).
        unlisted: Layers drawn but left out of the legend (a background).
    """

    template: str
    layers: list[QgsMapLayer] = field(default_factory=list)
    title: str = ""
    sources: str = ""
    method: str = ""
    focus: QgsMapLayer | None = None
    unlisted: list[QgsMapLayer] = field(default_factory=list)


def _label(
    layout: QgsPrintLayout,
    item_id: str,
    text: str,
    size: float,
    rect: tuple[float, float, float, float],
    bold: bool = False,
):
    label = QgsLayoutItemLabel(layout)
    label.setText(text)
    font = QFont()
    font.setPointSizeF(size)
    font.setBold(bold)
    label.setFont(font)
    label.setFontColor(QColor("#222222"))
    label.setMode(QgsLayoutItemLabel.ModeFont)
    label.setHAlign(Qt.AlignLeft)
    return _add(layout, label, item_id, rect)


def _add(layout: QgsPrintLayout, item, item_id: str, rect: tuple[float, float, float, float]):
    """``item`` added to ``layout`` with id ``item_id`` at ``rect`` (x, y, width, height, mm)."""
    item.setId(item_id)
    layout.addLayoutItem(item)
    x, y, width, height = rect
    item.attemptMove(QgsLayoutPoint(x, y, MM))
    item.attemptResize(QgsLayoutSize(width, height, MM))
    return item


def build_template_layout(project: QgsProject, template: str) -> QgsPrintLayout:
    """The layout a template holds (A4 landscape), built from scratch (see the module doc)."""
    layout = QgsPrintLayout(project)
    layout.initializeDefaults()  # one A4 page
    page = layout.pageCollection().page(0)
    page.setPageSize("A4", page.Landscape)
    layout.setName(TEMPLATES[template][1])
    _label(layout, "title", TEMPLATES[template][1], 16, (10, 7, 200, 12), bold=True)
    made = "Made [%format_date(now(), 'yyyy-MM-dd')%] with Slidewise"
    _label(layout, "date", made, 9, (212, 10, 75, 6)).setHAlign(Qt.AlignRight)
    map_item = QgsLayoutItemMap(layout)
    map_item.setFrameEnabled(True)
    _add(layout, map_item, "map", (10, 22, 200, 172))
    legend = QgsLayoutItemLegend(layout)
    legend.setTitle("Legend")
    legend.setLinkedMap(map_item)
    legend.setResizeToContents(True)
    _add(layout, legend, "legend", (215, 22, 72, 60))
    north = QgsLayoutItemPicture(layout)
    north.setPicturePath("/usr/share/qgis/svg/arrows/NorthArrow_02.svg")
    north.setLinkedMap(map_item)
    north.setNorthMode(QgsLayoutItemPicture.GridNorth)
    north.setSvgFillColor(QColor("#222222"))
    north.setSvgStrokeColor(QColor("#222222"))
    _add(layout, north, "north", (196, 24, 12, 14))
    scalebar = QgsLayoutItemScaleBar(layout)
    scalebar.setStyle("Single Box")
    scalebar.setLinkedMap(map_item)
    scalebar.setNumberOfSegments(4)
    scalebar.setNumberOfSegmentsLeft(0)
    _add(layout, scalebar, "scalebar", (12, 196, 80, 10))
    _label(layout, "sources", "Data sources: ", 8, (215, 130, 72, 30))
    _label(layout, "method", DEFAULT_METHOD[template], 8, (215, 162, 72, 36))
    return layout


def load_template(project: QgsProject, template: str) -> QgsPrintLayout:
    """The layout of template ``template`` (a key of :data:`TEMPLATES`) in ``project``.

    Raises:
        ValueError: an unknown template, or a file that is not a layout template.
    """
    if template not in TEMPLATES:
        raise ValueError(f"Unknown layout template '{template}': use one of {sorted(TEMPLATES)}.")
    path = LAYOUTS / TEMPLATES[template][0]
    document = QDomDocument()
    if not document.setContent(path.read_text(encoding="utf-8")):
        raise ValueError(f"The layout template {path} is not valid XML: reinstall the plugin.")
    layout = QgsPrintLayout(project)
    _, ok = layout.loadFromTemplate(document, QgsReadWriteContext())
    if not ok or layout.itemById("map") is None:
        raise ValueError(f"The layout template {path} has no item 'map': restore the template.")
    return layout


def _set_text(layout: QgsPrintLayout, item_id: str, text: str) -> None:
    item = layout.itemById(item_id)
    if isinstance(item, QgsLayoutItemLabel) and text:
        item.setText(text)


def _extent(layer: QgsMapLayer, project: QgsProject) -> QgsRectangle:
    """The layer's extent in the project CRS, grown by 3 %."""
    from qgis.core import QgsCoordinateTransform

    transform = QgsCoordinateTransform(layer.crs(), project.crs(), project)
    extent = transform.transformBoundingBox(layer.extent())
    extent.scale(1.03)
    return extent


def _drop_band_names(legend: QgsLayoutItemLegend) -> None:
    """Leave out the raster legends' "Band 1: name (Gray)" line (the layer name says it)."""
    from qgis.core import QgsMapLayerLegendUtils

    model = legend.model()
    for node in model.rootGroup().findLayers():
        texts = [n.data(Qt.DisplayRole) or "" for n in model.layerLegendNodes(node)]
        keep = [i for i, text in enumerate(texts) if not str(text).startswith("Band ")]
        if len(keep) < len(texts):
            QgsMapLayerLegendUtils.setLegendNodeOrder(node, keep)
            model.refreshLayerLegend(node)


def _fit(extent: QgsRectangle, ratio: float) -> QgsRectangle:
    """``extent`` grown around its centre to the width/height ``ratio`` of the map item."""
    width, height = extent.width(), extent.height()
    if width / max(height, 1e-12) < ratio:
        width = height * ratio
    else:
        height = width / ratio
    centre = extent.center()
    return QgsRectangle(
        centre.x() - width / 2,
        centre.y() - height / 2,
        centre.x() + width / 2,
        centre.y() + height / 2,
    )


def fill_layout(project: QgsProject, content: LayoutContent) -> QgsPrintLayout:
    """Load the template, add ``content.layers`` to ``project`` and set the map and texts."""
    for layer in reversed(content.layers):
        project.addMapLayer(layer)
    project.setCrs(content.layers[0].crs())
    layout = load_template(project, content.template)
    layout.slidewise_project = project  # the layout must not outlive its project (a crash)
    map_item = layout.itemById("map")
    assert isinstance(map_item, QgsLayoutItemMap)
    map_item.setLayers(content.layers)
    map_item.setKeepLayerSet(True)
    map_item.setCrs(project.crs())
    size = map_item.sizeWithUnits()
    # setExtent resizes the item to the extent's shape: give it the item's shape first.
    map_item.setExtent(
        _fit(_extent(content.focus or content.layers[0], project), size.width() / size.height())
    )
    legend = layout.itemById("legend")
    if isinstance(legend, QgsLayoutItemLegend):
        legend.setLinkedMap(map_item)
        legend.setAutoUpdateModel(False)
        for layer in content.unlisted:
            legend.model().rootGroup().removeLayer(layer)
        _drop_band_names(legend)
        legend.updateLegend()
    scalebar = layout.itemById("scalebar")
    if isinstance(scalebar, QgsLayoutItemScaleBar):
        scalebar.setLinkedMap(map_item)
        scalebar.applyDefaultSize(scalebar.guessUnits())
    _set_text(layout, "title", content.title)
    metadata = project.metadata()
    metadata.setTitle(content.title or TEMPLATES[content.template][1])
    project.setMetadata(metadata)
    _set_text(layout, "sources", "Data sources: " + content.sources if content.sources else "")
    _set_text(layout, "method", content.method)
    layout.refresh()
    return layout


def export_pdf(layout: QgsPrintLayout, path: str) -> None:
    """Export ``layout`` to a PDF at 300 dpi (raises RuntimeError when QGIS reports an error)."""
    settings = QgsLayoutExporter.PdfExportSettings()
    settings.dpi = 300
    settings.rasterizeWholeImage = False
    settings.exportMetadata = True
    result = QgsLayoutExporter(layout).exportToPdf(path, settings)
    if result != QgsLayoutExporter.Success:
        raise RuntimeError(f"QGIS could not write the PDF {path} (layout exporter error {result}).")


def export_png(layout: QgsPrintLayout, path: str, dpi: int = 100) -> None:
    """Export ``layout`` to a PNG (for previews and documentation)."""
    settings = QgsLayoutExporter.ImageExportSettings()
    settings.dpi = dpi
    result = QgsLayoutExporter(layout).exportToImage(path, settings)
    if result != QgsLayoutExporter.Success:
        raise RuntimeError(
            f"QGIS could not write the image {path} (layout exporter error {result})."
        )
