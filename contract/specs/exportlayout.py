"""slidewise:exportlayout: a print layout (map, legend, scale bar, north arrow, notes) as PDF.

Runs in QGIS's own Python (listed in ``RUNS_IN_QGIS``): print layouts are QGIS's.
"""

from __future__ import annotations

from slidewise.contract.spec import AlgorithmSpec, Param

#: Layout templates (``resources/layouts/``): the choice words and their labels.
TEMPLATES = ("susceptibility", "inventory")

SPEC = AlgorithmSpec(
    "exportlayout",
    (
        Param(
            "TEMPLATE",
            "Layout",
            "choice",
            "Susceptibility map: the susceptibility (classes or probability) with optional "
            "landslides on top. Landslide inventory map: the landslide polygons (or boxes, or "
            "points) over an optional background image. Both are A4 landscape with legend, "
            "scale bar, north arrow, title, date, data sources and a method note.",
            default="susceptibility",
            choices=TEMPLATES,
            choice_labels=("Susceptibility map", "Landslide inventory map"),
        ),
        Param(
            "SUSCEPTIBILITY",
            "Susceptibility (classes or probability)",
            "raster",
            "The classed map or the probability from Predict susceptibility; needed by the "
            "susceptibility map. A layer of the project keeps its style; a file gets the "
            "Slidewise style.",
        ),
        Param(
            "LANDSLIDES",
            "Landslides",
            "vector",
            "Landslide polygons (from Map landslides or Detect landslides) or inventory points; "
            "needed by the inventory map, drawn on top of the susceptibility map when given.",
        ),
        Param(
            "BACKGROUND",
            "Background",
            "raster",
            "Image or hillshade drawn under the other layers (optional).",
        ),
        Param(
            "TITLE",
            "Title",
            "text",
            "Title printed at the top; empty: 'Landslide susceptibility map' or 'Landslide "
            "inventory map'.",
        ),
        Param(
            "SOURCES",
            "Data sources",
            "text",
            "Data sources printed under the legend (for example 'DEM: SRTM 30 m; inventory: "
            "national survey 2024'); empty: the names of the layers' files.",
        ),
        Param(
            "METHOD_NOTE",
            "Method note",
            "text",
            "A short note on the method printed under the data sources; empty: a standard "
            "note for the template.",
        ),
        Param(
            "OUTPUT",
            "PDF",
            "output_file",
            "The layout exported as a PDF (300 dpi).",
            required=True,
            file_filter="PDF (*.pdf)",
        ),
    ),
)
