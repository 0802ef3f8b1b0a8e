"""slidewise:mapscenes — many scenes mapped into one landslide inventory."""

from __future__ import annotations

import time
from pathlib import Path

from qgis.core import QgsProcessingException, QgsProcessingParameterField

from slidewise.contract.specs.mapscenes import INVENTORY_LAYER, POSTGIS_NAMES, SOURCE_NAMES, SPEC
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr
from slidewise.processing_provider.algorithms.postgis import (
    PostgisError,
    PostgisTarget,
    check_target,
    copy_inventory,
)
from slidewise.processing_provider.algorithms.spec_parameters import job_value


class MapScenesAlgorithm(SlidewiseAlgorithm):
    """Batch Map landslides: one output set per scene, one merged inventory."""

    ALG_ID = "mapscenes"
    DISPLAY_NAME = "Map scenes into an inventory"
    GROUP = "mapping"
    ICON = "mapping.svg"
    JOB = "mapscenes"
    SPEC = SPEC
    RUNTIME_PARAMETERS = True
    SHORT_HELP = (
        "Maps many scenes with one mapping model and builds one landslide inventory from "
        "them. The scenes are the rasters of a folder, the paths of a list file (a text file "
        "with one path per line, or a CSV table with path, region and date columns) or the "
        "features of a footprint layer with path, region and date attributes. Each scene is "
        "mapped exactly as Map landslides maps it (same model, tiles, post-processing, "
        "backend and parallel workers) into its own probability raster and polygons in the "
        "output folder. Its polygons are then added to the inventory GeoPackage, reprojected "
        "to the inventory's CRS: a polygon that overlaps polygons of other scenes is merged "
        "with them (union of the outlines; the scenes listed, earliest and latest date, "
        "largest mean and maximum probability, area of the union), never duplicated. Each "
        "polygon records its scene(s), date, region, decoder, model and model hash. Scenes "
        "already in the inventory (same file, same parameters and model) are skipped, so a "
        "run that was stopped, or a folder that gained scenes, continues where it was. A "
        "scene that cannot be mapped is named in the log and the others go on. The "
        "inventory is rewritten in one step after each scene: a cancel or a crash leaves it "
        "with the scenes finished before. With a PostGIS connection (advanced), QGIS then "
        "copies the inventory's polygons into a PostGIS table, replacing it in one "
        "transaction; the connection, the PostGIS extension and your rights are checked "
        "before any scene is mapped."
    )

    def initAlgorithm(self, config=None) -> None:
        """The parameters of ``SPEC``; the scene fields are text fields of the footprints."""
        super().initAlgorithm(config)
        for name in ("PATH_FIELD", "SCENE_REGION_FIELD", "DATE_FIELD"):
            self.parameterDefinition(name).setDataType(QgsProcessingParameterField.Any)

    def job_parameters(self, parameters, context, feedback):
        """The parameters set, refusing a run without exactly one source of scenes."""
        params, outputs = super().job_parameters(parameters, context, feedback)
        given = [name for name in SOURCE_NAMES if params.get(name)]
        if len(given) != 1:
            raise QgsProcessingException(
                tr(
                    "Give exactly one source of scenes: a folder of scenes, a scene list or "
                    "scene footprints ({count} given)."
                ).format(count=len(given))
            )
        return params, outputs

    def run_engine(self, params, options, outputs, feedback):
        """The job; a cancel says what the inventory kept (not "no output was written")."""
        try:
            return super().run_engine(params, options, outputs, feedback)
        except QgsProcessingException:
            inventory = str(params.get("INVENTORY", ""))
            if not (feedback.isCanceled() and inventory and Path(inventory).is_file()):
                raise
            raise QgsProcessingException(
                tr(
                    "Cancelled: the inventory {path} keeps the scenes finished before; run "
                    "again with the same parameters to map the others."
                ).format(path=inventory)
            ) from None

    def inventory_layer(self, parameters, context) -> str:
        """The inventory's layer name in the GeoPackage."""
        return job_value(self, SPEC["INVENTORY_LAYER"], parameters, context) or INVENTORY_LAYER

    def postgis_target(self, parameters, context) -> PostgisTarget | None:
        """Where the inventory is copied in PostGIS (``None``: no connection given)."""
        values = {name: job_value(self, SPEC[name], parameters, context) for name in POSTGIS_NAMES}
        if not values["POSTGIS"]:
            return None
        table = values["POSTGIS_TABLE"] or self.inventory_layer(parameters, context)
        schema = values["POSTGIS_SCHEMA"] or SPEC["POSTGIS_SCHEMA"].default
        return PostgisTarget(values["POSTGIS"], schema, table)

    def processAlgorithm(self, parameters, context, feedback):
        """Map the scenes in the engine, then copy the inventory to PostGIS if asked.

        The PostGIS target is checked before the engine starts, so a wrong connection
        costs no mapping; the copy replaces the table in one transaction.
        """
        target = self.postgis_target(parameters, context)
        try:
            if target is not None:
                check_target(target)
        except PostgisError as exc:
            raise QgsProcessingException(str(exc)) from None
        results = super().processAlgorithm(parameters, context, feedback)
        if target is None:
            return results
        feedback.pushInfo(
            tr("Copying the inventory to PostGIS table {table}...").format(table=target.name)
        )
        layer = self.inventory_layer(parameters, context)
        started = time.perf_counter()
        try:
            count = copy_inventory(results["INVENTORY"], layer, target, feedback)
        except PostgisError as exc:
            raise QgsProcessingException(
                tr(
                    "{reason} The GeoPackage inventory {path} is complete; run again to copy it "
                    "(finished scenes are skipped)."
                ).format(reason=exc, path=results["INVENTORY"])
            ) from None
        feedback.pushInfo(
            tr("PostGIS table {table}: {count} polygon(s), copied in {seconds:.2f} s.").format(
                table=target.name, count=count, seconds=time.perf_counter() - started
            )
        )
        return {
            **results,
            "POSTGIS_TABLE": target.name,
            "POSTGIS_FEATURES": count,
        }

    def style_outputs(self, results, context) -> None:
        self.style_output(results.get("INVENTORY", ""), "landslide_polygons.qml", context)
