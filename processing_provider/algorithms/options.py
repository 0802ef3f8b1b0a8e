"""Declarative parameter tables: one :class:`Option` per engine parameter.

Algorithms with many plain parameters (numbers, texts, switches, choices,
files) declare them as tables of :class:`Option`; :func:`add_options` adds
them to the algorithm with their help text, and :func:`option_params` reads
them back as engine job parameters, leaving out what the user left unset so
the engine's documented default applies. Parameter groups used by several
algorithms (the mapping datasets, label reading) are defined here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)

from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr

#: Choices whose label starts with this are "leave it to the engine" (not sent).
UNSET_PREFIX = "("


@dataclass(frozen=True)
class Option:
    """One algorithm parameter that maps one-to-one onto an engine parameter.

    Attributes:
        name: Parameter name (the same in Processing and in the engine job).
        label: Short label shown in the dialog.
        kind: ``int``, ``float``, ``text``, ``bool``, ``choice``, ``file``,
            ``folder`` or ``polygons`` (a polygon vector layer).
        help: Help text (tooltip and algorithm help).
        default: Default value; ``None`` leaves the parameter optional and
            unset, so the engine's default applies.
        choices: Labels of a ``choice`` (sent as they are, except those in
            parentheses, which mean "the engine's default").
        minimum: Smallest number allowed.
        maximum: Largest number allowed.
        advanced: Shown under "Advanced parameters".
        required: A file or folder the algorithm cannot run without.
        file_filter: File dialog filter of a ``file``.
    """

    name: str
    label: str
    kind: str
    help: str
    default: Any = None
    choices: Sequence[str] = ()
    minimum: float | None = 0
    maximum: float | None = None
    advanced: bool = True
    required: bool = False
    file_filter: str = ""


def _definition(option: Option) -> Any:
    label = tr(option.label)
    kind = option.kind
    if kind in ("int", "float"):
        param = QgsProcessingParameterNumber(
            option.name,
            label,
            QgsProcessingParameterNumber.Integer
            if kind == "int"
            else QgsProcessingParameterNumber.Double,
            defaultValue=option.default,
            optional=option.default is None,
        )
        if option.minimum is not None:
            param.setMinimum(option.minimum)
        if option.maximum is not None:
            param.setMaximum(option.maximum)
        return param
    if kind == "text":
        return QgsProcessingParameterString(
            option.name, label, defaultValue=option.default or "", optional=not option.required
        )
    if kind == "bool":
        return QgsProcessingParameterBoolean(option.name, label, defaultValue=bool(option.default))
    if kind == "choice":
        return QgsProcessingParameterEnum(
            option.name, label, options=list(option.choices), defaultValue=option.default or 0
        )
    if kind in ("file", "folder"):
        return QgsProcessingParameterFile(
            option.name,
            label,
            behavior=QgsProcessingParameterFile.Folder
            if kind == "folder"
            else QgsProcessingParameterFile.File,
            fileFilter=option.file_filter,
            optional=not option.required,
        )
    if kind == "polygons":
        return QgsProcessingParameterVectorLayer(
            option.name, label, [QgsProcessing.TypeVectorPolygon], optional=not option.required
        )
    raise ValueError(f"unknown option kind {kind!r}")


def add_options(alg: SlidewiseAlgorithm, options: Sequence[Option]) -> None:
    """Add every option of a table to ``alg``, with its help text."""
    for option in options:
        alg.add(_definition(option), option.help, advanced=option.advanced)


class OptionAlgorithm(SlidewiseAlgorithm):
    """An algorithm made of option tables and one output file (a model, an encoder).

    Subclasses set ``OPTIONS`` (tables of :class:`Option`, in dialog order) and
    ``OUTPUT_LABEL``, ``OUTPUT_FILTER`` and ``OUTPUT_HELP``.
    """

    OPTIONS: tuple[Sequence[Option], ...] = ()
    OUTPUT_LABEL = "Model file"
    OUTPUT_FILTER = "Slidewise model (*.safetensors)"
    OUTPUT_HELP = ""
    RUNTIME_PARAMETERS = True

    def initAlgorithm(self, config=None) -> None:
        for table in self.OPTIONS:
            add_options(self, table)
        self.add_output_file(self.OUTPUT_LABEL, self.OUTPUT_FILTER, self.OUTPUT_HELP)

    def job_parameters(self, parameters, context, feedback):
        params: dict[str, Any] = {}
        for table in self.OPTIONS:
            params.update(option_params(self, parameters, context, table))
        return self.with_output_file(params, parameters, context)


def option_params(
    alg: SlidewiseAlgorithm,
    parameters: dict[str, Any],
    context: QgsProcessingContext,
    options: Sequence[Option],
) -> dict[str, Any]:
    """Engine parameters of a table of options; unset ones are left out."""
    params: dict[str, Any] = {}
    for option in options:
        name, kind = option.name, option.kind
        if kind in ("int", "float"):
            if parameters.get(name) in (None, ""):
                continue
            read = alg.parameterAsInt if kind == "int" else alg.parameterAsDouble
            params[name] = read(parameters, name, context)
        elif kind == "text":
            value = alg.parameterAsString(parameters, name, context).strip()
            if value:
                params[name] = value
        elif kind == "bool":
            params[name] = alg.parameterAsBool(parameters, name, context)
        elif kind == "choice":
            value = option.choices[alg.parameterAsEnum(parameters, name, context)]
            if not value.startswith(UNSET_PREFIX):
                params[name] = value
        elif kind in ("file", "folder"):
            value = alg.parameterAsFile(parameters, name, context)
            if value:
                params[name] = value
        elif kind == "polygons":
            value = alg.vector_path(parameters, name, context)
            if value:
                params[name] = value
    return params


#: Dataset readers of the mapping jobs (engine: ``slidewise.engine.imagery.datasets``).
DATASET_TYPES = ("pairs", "l4s_h5", "geotiff")

#: How label files are read: shared by trainmapping, addregion and pretrainencoder.
LABEL_READING = (
    Option(
        "LANDSLIDE_VALUES",
        "Landslide values",
        "text",
        "Mask or label values meaning landslide, e.g. 2; empty: 1 in 0/1 masks, 255 in 0/255.",
    ),
    Option(
        "IGNORE_VALUES",
        "Ignored values",
        "text",
        "Label values not counted, e.g. 0 for unlabelled.",
    ),
    Option(
        "MASK_COLOR",
        "Landslide colour in colour masks",
        "text",
        "RGB of landslide pixels in colour masks, e.g. 255,255,0 (Bijie yellow); empty: auto.",
    ),
    Option(
        "BANDS",
        "Bands",
        "text",
        "Bands to use, 1-based numbers or names (e.g. 4,3,2); empty: all. Stored in the "
        "model and checked when mapping.",
    ),
)

#: A labelled mapping dataset with optional validation data (trainmapping, addregion).
MAPPING_DATASET = (
    Option(
        "DATASET_TYPE",
        "Dataset type",
        "choice",
        "pairs: image and mask files with the same names; l4s_h5: Landslide4Sense "
        "image_N.h5 / mask_N.h5; geotiff: georeferenced images with label rasters or "
        "landslide polygons.",
        choices=DATASET_TYPES,
        advanced=False,
    ),
    Option(
        "TRAIN_IMAGES",
        "Training images (folder or file)",
        "folder",
        "Folder (or one file) of training images.",
        advanced=False,
        required=True,
    ),
    Option(
        "TRAIN_MASKS",
        "Training masks (folder or file)",
        "folder",
        "Masks or label rasters with the images' file names (Landslide4Sense: mask_N.h5).",
        advanced=False,
    ),
    Option(
        "VALID_IMAGES",
        "Validation images",
        "folder",
        "Optional separate validation images; otherwise a spatial split of the training data "
        "is used.",
        advanced=False,
    ),
    Option(
        "VALID_MASKS",
        "Validation masks",
        "folder",
        "Masks of the validation images.",
        advanced=False,
    ),
    Option(
        "LABEL_POLYGONS",
        "Landslide polygons",
        "polygons",
        "For geotiff datasets: landslide polygons rasterised on each image grid.",
        advanced=False,
    ),
    *LABEL_READING,
)
