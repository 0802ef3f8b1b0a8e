"""Processing parameters built from the contract's specifications, and read back for the engine.

:func:`definition` turns one :class:`~slidewise.contract.spec.Param` into its
``QgsProcessingParameter*`` (range, default, unit in the label, help with the
range and unit); :func:`job_value` reads what the user gave as the value the
engine job expects, ``None`` when unset so the job's default applies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDatabaseSchema,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterProviderConnection,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
)

from slidewise.contract.spec import OUTPUTS, Param
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr

VECTOR_TYPES = {
    "vector": [QgsProcessing.TypeVectorAnyGeometry],
    "points": [QgsProcessing.TypeVectorPoint],
    "polygons": [QgsProcessing.TypeVectorPolygon],
    "points_or_polygons": [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon],
}


def label_of(param: Param) -> str:
    """The dialog label, with the unit in parentheses: ``Buffer around landslides (m)``."""
    label = tr(param.label)
    return f"{label} ({param.unit})" if param.unit else label


def _number(param: Param, label: str, optional: bool) -> QgsProcessingParameterNumber:
    kind = (
        QgsProcessingParameterNumber.Integer
        if param.kind == "int"
        else QgsProcessingParameterNumber.Double
    )
    definition = QgsProcessingParameterNumber(
        param.name, label, kind, defaultValue=param.default, optional=optional
    )
    if param.minimum is not None:
        definition.setMinimum(param.minimum)
    if param.maximum is not None:
        definition.setMaximum(param.maximum)
    return definition


def _input(param: Param, label: str, optional: bool) -> QgsProcessingParameterDefinition:
    kind = param.kind
    if kind in ("file", "folder"):
        behaviour = (
            QgsProcessingParameterFile.Folder
            if kind == "folder"
            else QgsProcessingParameterFile.File
        )
        return QgsProcessingParameterFile(
            param.name, label, behavior=behaviour, fileFilter=param.file_filter, optional=optional
        )
    if kind == "raster":
        return QgsProcessingParameterRasterLayer(param.name, label, optional=optional)
    if kind == "rasters":
        return QgsProcessingParameterMultipleLayers(
            param.name, label, QgsProcessing.TypeRaster, optional=optional
        )
    if kind == "connection":
        return QgsProcessingParameterProviderConnection(
            param.name, label, param.provider, defaultValue=param.default, optional=optional
        )
    if kind == "schema":
        return QgsProcessingParameterDatabaseSchema(
            param.name, label, param.parent, defaultValue=param.default, optional=optional
        )
    if kind == "field":
        return QgsProcessingParameterField(
            param.name,
            label,
            defaultValue=param.default,
            parentLayerParameterName=param.parent,
            optional=optional,
        )
    return QgsProcessingParameterVectorLayer(
        param.name, label, VECTOR_TYPES[kind], optional=optional
    )


def _output(param: Param, label: str, optional: bool) -> QgsProcessingParameterDefinition:
    if param.kind == "output_raster":
        made = QgsProcessingParameterRasterDestination(param.name, label, optional=optional)
    elif param.kind == "output_vector":
        made = QgsProcessingParameterVectorDestination(param.name, label, optional=optional)
    elif param.kind == "output_folder":
        made = QgsProcessingParameterFolderDestination(param.name, label, optional=optional)
    else:
        made = QgsProcessingParameterFileDestination(
            param.name, label, fileFilter=param.file_filter, optional=optional
        )
    made.setCreateByDefault(param.create_by_default)
    return made


def definition(param: Param) -> QgsProcessingParameterDefinition:
    """The Processing declaration of ``param`` (without help: see :func:`add_params`)."""
    label, optional = label_of(param), not param.required
    kind = param.kind
    if kind in ("int", "float"):
        return _number(param, label, optional and param.default is None)
    if kind == "bool":
        return QgsProcessingParameterBoolean(param.name, label, defaultValue=bool(param.default))
    if kind == "choice":
        default = param.choices.index(param.default) if param.default in param.choices else 0
        return QgsProcessingParameterEnum(
            param.name, label, options=[tr(x) for x in param.labels], defaultValue=default
        )
    if kind in ("text", "names", "numbers"):
        default = param.default
        if isinstance(default, list | tuple):
            default = ", ".join(str(v) for v in default)
        return QgsProcessingParameterString(
            param.name, label, defaultValue=default or "", optional=optional
        )
    if kind in OUTPUTS:
        return _output(param, label, optional)
    return _input(param, label, optional)


def add_params(alg: SlidewiseAlgorithm, params: Iterable[Param]) -> None:
    """Add each parameter to ``alg`` with its full help (range, unit, default)."""
    for param in params:
        alg.add(definition(param), param.full_help(), advanced=param.advanced)


def job_value(
    alg: SlidewiseAlgorithm, param: Param, parameters: dict[str, Any], context: QgsProcessingContext
) -> Any:
    """What the user gave for ``param``, as the engine job expects it (``None``: unset)."""
    name, kind = param.name, param.kind
    given = parameters.get(name)
    if kind in ("int", "float"):
        if given in (None, ""):
            return None
        return (alg.parameterAsInt if kind == "int" else alg.parameterAsDouble)(
            parameters, name, context
        )
    if kind == "bool":
        return alg.parameterAsBool(parameters, name, context)
    if kind == "choice":
        return param.choices[alg.parameterAsEnum(parameters, name, context)]
    if kind in ("text", "names", "numbers", "field"):
        return alg.parameterAsString(parameters, name, context).strip() or None
    if kind == "connection":
        return alg.parameterAsConnectionName(parameters, name, context).strip() or None
    if kind == "schema":
        return alg.parameterAsSchema(parameters, name, context).strip() or None
    if kind in ("file", "folder"):
        return alg.parameterAsFile(parameters, name, context) or None
    if kind == "raster":
        return alg.raster_path(parameters, name, context, label_of(param)) if given else None
    if kind == "rasters":
        layers = alg.parameterAsLayerList(parameters, name, context)
        return [layer.source().split("|")[0] for layer in layers] or None
    if kind in VECTOR_TYPES:
        return alg.vector_path(parameters, name, context) or None
    if kind in ("output_raster", "output_vector"):
        return alg.parameterAsOutputLayer(parameters, name, context) or None
    return alg.parameterAsFileOutput(parameters, name, context) or None


def job_values(
    alg: SlidewiseAlgorithm,
    params: Iterable[Param],
    parameters: dict[str, Any],
    context: QgsProcessingContext,
) -> dict[str, Any]:
    """Engine parameters of ``params``; unset ones are left out so the job's default applies."""
    values = {p.name: job_value(alg, p, parameters, context) for p in params}
    return {name: value for name, value in values.items() if value is not None}
