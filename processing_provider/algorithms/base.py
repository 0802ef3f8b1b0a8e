"""Common base of the Slidewise Processing algorithms.

Every algorithm is thin: it turns its parameters into an engine job, runs the
job in the engine worker (:mod:`..engine_client`), relays progress and log
lines to the feedback, and hands the outputs back to Processing, which loads
them with the style from ``resources/styles``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsApplication,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsSettings,
    QgsVectorFileWriter,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from slidewise.contract.spec import NUMERIC, OUTPUTS, AlgorithmSpec, Param, ParameterError
from slidewise.contract.specs.groups import RUNTIME, RUNTIME_NAMES
from slidewise.processing_provider import engine_client

PLUGIN_DIR = Path(__file__).resolve().parents[2]
ICONS = PLUGIN_DIR / "resources" / "icons"
STYLES = PLUGIN_DIR / "resources" / "styles"

#: Toolbox groups in the order of the work (group id -> name).
GROUPS = {
    "preparation": "Data preparation",
    "susceptibility": "Susceptibility",
    "mapping": "Mapping",
    "detection": "Detection",
    "engine": "Engine",
}


def group_title(group_id: str) -> str:
    """Toolbox title of a group, numbered: QGIS sorts groups by name, so the number keeps
    the order of the work (``1. Data preparation`` ... ``5. Engine``)."""
    number = list(GROUPS).index(group_id) + 1
    return f"{number}. {tr(GROUPS[group_id])}"


DEVICES = list(RUNTIME[0].choices)
#: Parameter kinds of vector layers (which the engine may get as a temporary copy).
VECTOR_KINDS = ("vector", "points", "polygons", "points_or_polygons")


@contextlib.contextmanager
def gdal_pam_off() -> Iterator[None]:
    """GDAL's PAM off in this thread, so that opening the user's input rasters (QGIS
    computes their statistics) writes no ``.aux.xml`` beside them."""
    from osgeo import gdal

    before = gdal.GetThreadLocalConfigOption("GDAL_PAM_ENABLED", None)
    gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", "NO")
    try:
        yield
    finally:
        gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", before)


def runs_slidewise_in_qgis_process(arguments: list[str]) -> bool:
    """Whether ``arguments`` (this program's command line) are ``qgis_process run`` of a
    Slidewise algorithm."""
    if not arguments or "qgis_process" not in Path(arguments[0]).name:
        return False
    words = arguments[1:]
    return "run" in words and any(word.startswith("slidewise:") for word in words)


def pam_off_for_qgis_process() -> bool:
    """GDAL's PAM off for the whole ``qgis_process run slidewise:...`` command.

    ``qgis_process`` opens the input rasters to check the parameters before any Slidewise
    code runs, and QGIS computes their statistics, which GDAL would keep in an ``.aux.xml``
    beside the user's input when the program ends. Called when the provider loads (before
    the parameters are read); any other command (another provider's algorithm, QGIS
    itself) keeps PAM as it was.

    Returns:
        Whether PAM was turned off.
    """
    from osgeo import gdal

    if not runs_slidewise_in_qgis_process(QCoreApplication.arguments()):
        return False
    gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", "NO")
    return True


def unreadable_file_message(name: str, path: str, what: str = "raster") -> str:
    """Why the file ``path`` given for ``name`` cannot be used, and the fix.

    QGIS says "not found" for any layer it cannot load; a file that exists but is empty,
    not a ``what`` or cut short is named as such, with GDAL's own reason.
    """
    from osgeo import gdal

    file = Path(path)
    if not file.exists():
        return tr(
            "The file '{path}' given for {name} does not exist: check the path (and the "
            "folder it is in)."
        ).format(path=path, name=name)
    if file.is_file() and file.stat().st_size == 0:
        reason = tr("it is empty: 0 bytes")
    else:
        flags = gdal.OF_RASTER if what == "raster" else gdal.OF_VECTOR
        gdal.PushErrorHandler("CPLQuietErrorHandler")
        gdal.ErrorReset()
        try:
            with gdal_pam_off():
                opened = gdal.OpenEx(str(file), flags) is not None
            reason = gdal.GetLastErrorMsg().strip() or tr("its content is in no format GDAL knows")
        finally:
            gdal.PopErrorHandler()
        if opened:  # GDAL opens it, QGIS could not load it as a layer
            reason = tr("QGIS could not load it as a layer")
    return tr(
        "The file '{path}' given for {name} exists but cannot be read as a {what} ({reason}). "
        "Check that it is a {what} file GDAL reads (GeoTIFF, GeoPackage...) that was written "
        "completely: export or download it again, or choose another file."
    ).format(path=path, name=name, what=tr(what), reason=reason)


def out_of_range_message(param: Param, value: Any) -> str:
    """The contract's refusal of ``value`` for ``param`` with its range, unit and default,
    or ``""`` when the contract accepts it."""
    try:
        param.read(value)
    except ParameterError as exc:
        text, allowed = str(exc), param.range_text()
        if allowed and param.unit:
            text = text.replace(f"must be {allowed},", f"must be {allowed} {param.unit},")
        if allowed and f"must be {allowed}" not in text:  # refused for another reason
            text += " " + tr("Allowed: {allowed} {unit}.").format(allowed=allowed, unit=param.unit)
        default = param.default
        if default is not None:
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            text += " " + tr("Default: {default}.").format(default=shown)
        return text.replace(" .", ".")
    return ""


def layer_paths(value: Any) -> list[str]:
    """The file paths in a layer parameter's raw value (a path, several, or none)."""
    items = value if isinstance(value, list | tuple) else str(value or "").split(";")
    return [str(v).split("|")[0].strip() for v in items if isinstance(v, str) and v.strip()]


def tr(text: str) -> str:
    """Translate a user-facing string in the Slidewise context."""
    return QCoreApplication.translate("Slidewise", text)


def flatten_figures(figures: dict[str, Any], prefix: str = "", depth: int = 2) -> dict[str, Any]:
    """Scalar figures as Processing results: ``{"cv": {"auc": 0.8}}`` -> ``CV_AUC``."""
    flat: dict[str, Any] = {}
    for key, value in figures.items():
        name = f"{prefix}{key}".upper()
        if isinstance(value, bool | int | float | str):
            flat[name] = value
        elif isinstance(value, dict) and depth > 1:
            flat.update(flatten_figures(value, prefix=f"{name}_", depth=depth - 1))
    return flat


class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Applies a QML style to an output layer once Processing has loaded it.

    Processing keeps only a raw pointer to a post-processor and calls it after
    the algorithm has finished, when the copy of the algorithm that ran (and
    anything it owned) is already gone. So post-processors are never owned by
    an algorithm: :func:`style_post_processor` hands out one shared instance per
    style, kept for the life of the plugin.
    """

    def __init__(self, qml: Path) -> None:
        super().__init__()
        self.qml = qml

    def postProcessLayer(self, layer, context, feedback) -> None:
        if layer is not None and layer.isValid() and self.qml.is_file():
            layer.loadNamedStyle(str(self.qml))
            layer.triggerRepaint()


#: One post-processor per QML file, alive as long as this module (see StylePostProcessor).
_STYLE_POST_PROCESSORS: dict[str, StylePostProcessor] = {}
_STYLE_LOCK = threading.Lock()


def style_post_processor(qml_name: str) -> StylePostProcessor:
    """The shared post-processor that applies ``resources/styles/<qml_name>``."""
    with _STYLE_LOCK:
        processor = _STYLE_POST_PROCESSORS.get(qml_name)
        if processor is None:
            processor = StylePostProcessor(STYLES / qml_name)
            _STYLE_POST_PROCESSORS[qml_name] = processor
        return processor


class SlidewiseAlgorithm(QgsProcessingAlgorithm):
    """Base class: metadata helpers, parameter help, and the engine call.

    Subclasses set ``ALG_ID``, ``DISPLAY_NAME``, ``GROUP`` (a key of
    :data:`GROUPS`), ``ICON``, ``SHORT_HELP``, ``JOB`` (engine job name) and
    ``SPEC`` (the parameters, from :mod:`slidewise.contract.specs`); the
    dialog and the job parameters are built from ``SPEC``.
    """

    ALG_ID = ""
    DISPLAY_NAME = ""
    GROUP = "engine"
    ICON = "slidewise.svg"
    SHORT_HELP = ""
    JOB = ""
    SPEC: AlgorithmSpec | None = None
    RUNTIME_PARAMETERS = False

    # --- metadata -------------------------------------------------------
    def name(self) -> str:
        return self.ALG_ID

    def displayName(self) -> str:
        return tr(self.DISPLAY_NAME)

    def group(self) -> str:
        return group_title(self.GROUP)

    def groupId(self) -> str:
        return self.GROUP

    def icon(self) -> QIcon:
        return QIcon(str(ICONS / self.ICON))

    def createInstance(self) -> SlidewiseAlgorithm:
        return type(self)()

    def tr(self, text: str) -> str:
        return tr(text)

    def shortHelpString(self) -> str:
        """The algorithm's help with one entry per parameter."""
        lines = [tr(self.SHORT_HELP), "", "<b>" + tr("Parameters") + "</b>", "<ul>"]
        for definition in self.parameterDefinitions():
            text = definition.help() or ""
            lines.append(
                f"<li><b>{definition.description()}</b> ({definition.name()}): {text}</li>"
            )
        for definition in self.outputDefinitions():
            if self.parameterDefinition(definition.name()) is None:
                lines.append(f"<li><b>{definition.description()}</b> ({definition.name()})</li>")
        lines.append("</ul>")
        return "\n".join(lines)

    # --- parameter helpers --------------------------------------------------
    def add(
        self, parameter: QgsProcessingParameterDefinition, help_text: str, advanced: bool = False
    ) -> None:
        """Add a parameter with its help text (shown as tooltip and in the help)."""
        parameter.setHelp(tr(help_text))
        if advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(parameter)

    def add_runtime_parameters(self) -> None:
        """Device, seed and determinism, shared by every torch-based algorithm (advanced)."""
        from slidewise.processing_provider.algorithms.spec_parameters import add_params

        add_params(self, RUNTIME)

    def add_output_file(self, label: str, file_filter: str, help_text: str) -> None:
        """OUTPUT (the file the job writes), then the runtime parameters."""
        self.add(
            QgsProcessingParameterFileDestination("OUTPUT", tr(label), fileFilter=file_filter),
            help_text,
        )
        self.add_runtime_parameters()

    def with_output_file(
        self, params: dict[str, Any], parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[dict[str, Any], list[str]]:
        """Job parameters of a one-file algorithm: ``params`` plus SEED and OUTPUT."""
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        seed = self.parameterAsInt(parameters, "SEED", context)
        return {**params, "SEED": seed, "OUTPUT": output}, [output]

    def runtime_options(self, parameters: dict[str, Any], context: QgsProcessingContext) -> dict:
        """Runtime options from the shared advanced parameters."""
        if not self.RUNTIME_PARAMETERS:
            return {}
        return {
            "device": DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)],
            "seed": self.parameterAsInt(parameters, "SEED", context),
            "deterministic": self.parameterAsBool(parameters, "DETERMINISTIC", context),
        }

    def raster_path(
        self, parameters: dict[str, Any], name: str, context: QgsProcessingContext, what: str
    ) -> str:
        """File path of a raster layer parameter, with a clear error if unusable."""
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            raw = parameters.get(name)
            raise QgsProcessingException(
                tr(
                    "The {what} '{raw}' could not be opened as a raster: check the path "
                    "and that the file is a raster GDAL can read."
                ).format(what=what, raw=raw)
            )
        return layer.source().split("|")[0]

    def vector_path(
        self, parameters: dict[str, Any], name: str, context: QgsProcessingContext
    ) -> str:
        """A file the engine can read for a vector parameter ('' when unset).

        A plain OGR file is passed as it is; anything else (a layer inside a
        multi-layer file, a subset, a memory or delimited-text layer) is saved
        to a temporary GeoPackage first.
        """
        layer = self.parameterAsVectorLayer(parameters, name, context)
        if layer is None:
            if parameters.get(name):
                raise QgsProcessingException(
                    tr(
                        "The layer '{raw}' given for {name} could not be opened as a vector "
                        "layer: check the path."
                    ).format(raw=parameters.get(name), name=name)
                )
            return ""
        parts = layer.source().split("|")
        if layer.providerType() == "ogr" and Path(parts[0]).is_file() and len(parts) == 1:
            return parts[0]
        out = QgsProcessingUtils.generateTempFilename(f"{name.lower()}.gpkg")
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        result = QgsVectorFileWriter.writeAsVectorFormatV2(
            layer, out, context.transformContext(), options
        )
        error = result[0] if isinstance(result, tuple) else result
        if error != QgsVectorFileWriter.NoError:
            raise QgsProcessingException(
                tr("Could not prepare layer '{layer}' for the engine: {msg}").format(
                    layer=layer.name(), msg=result[1] if isinstance(result, tuple) else error
                )
            )
        return out

    def style_output(self, path: str, qml_name: str, context: QgsProcessingContext) -> None:
        """Attach the QML style to an output if Processing loads it."""
        if path and context.willLoadLayerOnCompletion(path):
            processor = style_post_processor(qml_name)
            context.layerToLoadOnCompletionDetails(path).setPostProcessor(processor)

    # --- engine call -----------------------------------------------------
    def spec_params(self) -> list[Param]:
        """The parameters of ``SPEC`` that the dialog shows (runtime options apart)."""
        if self.SPEC is None:
            return []
        skip = self.SPEC.hidden | RUNTIME_NAMES
        return [p for p in self.SPEC.params if p.name not in skip]

    def initAlgorithm(self, config=None) -> None:
        """Declare ``SPEC``'s parameters, then the runtime options if the job uses torch."""
        from slidewise.processing_provider.algorithms.spec_parameters import add_params

        add_params(self, self.spec_params())
        if self.RUNTIME_PARAMETERS:
            self.add_runtime_parameters()

    def job_parameters(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> tuple[dict[str, Any], list[str]]:
        """Engine job parameters and the output paths (for clean-up on cancel).

        By default every parameter of ``SPEC`` the user set (but those used in QGIS,
        ``SPEC.in_qgis``), plus SEED when the job takes it; subclasses add checks across
        parameters.
        """
        from slidewise.processing_provider.algorithms.spec_parameters import job_values

        in_qgis = self.SPEC.in_qgis if self.SPEC is not None else frozenset()
        sent = [p for p in self.spec_params() if p.name not in in_qgis]
        params = job_values(self, sent, parameters, context)
        if self.SPEC is not None and "SEED" in self.SPEC.names and "SEED" not in params:
            params["SEED"] = self.parameterAsInt(parameters, "SEED", context)
        self.keep_models(params, feedback)
        self.check_outputs_spare_layers(params, parameters, context)
        outputs = [
            str(params[p.name])
            for p in self.spec_params()
            if p.kind in OUTPUTS and p.name in params
        ]
        return params, outputs

    def kept_outputs(self, params: dict[str, Any]) -> list[str]:
        """The outputs a stopped run keeps: whole after every step (``kept_on_stop``)."""
        return [
            str(params[p.name]) for p in self.spec_params() if p.kept_on_stop and params.get(p.name)
        ]

    def check_outputs_spare_layers(
        self, params: dict[str, Any], parameters: dict[str, Any], context: QgsProcessingContext
    ) -> None:
        """Refuse an output that is the file of an input layer the engine gets a copy of.

        The engine refuses an output that names one of its inputs, but a layer inside a
        multi-layer file, a subset or a memory layer reaches it as a temporary copy
        (:meth:`vector_path`): the user's file is compared here.

        Raises:
            QgsProcessingException: naming the output, the input and the fix.
        """
        outputs = [
            (p.name, str(params[p.name]))
            for p in self.spec_params()
            if p.kind in OUTPUTS and p.kind != "output_folder" and params.get(p.name)
        ]
        for param in self.spec_params():
            if param.kind not in VECTOR_KINDS or not parameters.get(param.name):
                continue
            layer = self.parameterAsVectorLayer(parameters, param.name, context)
            source = layer.source().split("|")[0] if layer is not None else ""
            for name, output in outputs:
                if source and Path(source).is_file() and Path(output).exists():
                    same = os.path.samefile(source, output)
                else:
                    same = bool(source) and Path(source).resolve() == Path(output).resolve()
                if same:
                    raise QgsProcessingException(
                        tr(
                            "{output} is the file of the input {input} ('{path}'): a run never "
                            "overwrites its own input. Choose another file name for {output}."
                        ).format(output=name, input=param.name, path=source)
                    )

    def keep_models(self, params: dict[str, Any], feedback: QgsProcessingFeedback) -> None:
        """Trained models left to a temporary file go to the Slidewise models folder instead.

        A model in Processing's temporary folder would be gone when QGIS closes: it is
        written to ``<project>/slidewise_models/`` (the profile's models folder when the
        project is unsaved), under a name that never replaces an earlier model.
        """
        from qgis.core import QgsProject

        from slidewise.ui.panel import workflow

        temporary = Path(QgsProcessingUtils.tempFolder()).resolve()
        for param in self.spec_params():
            value = params.get(param.name)
            is_model = param.kind == "output_file" and "safetensors" in param.file_filter
            if not (is_model and value and temporary in Path(str(value)).resolve().parents):
                continue
            folder = workflow.models_folder(
                QgsProject.instance().homePath(), QgsApplication.qgisSettingsDirPath()
            )
            folder.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            kept = workflow.unique_path(folder / f"{self.ALG_ID}_{stamp}.safetensors")
            params[param.name] = str(kept)
            feedback.pushInfo(tr("The model is kept in {path}").format(path=kept))

    def run_engine(
        self,
        params: dict[str, Any],
        options: dict[str, Any],
        outputs: list[str],
        feedback: QgsProcessingFeedback,
    ) -> engine_client.JobOutcome:
        """Run the engine job, relaying progress and logs; errors become Processing errors."""
        setting = QgsSettings().value(engine_client.SETTINGS_KEY, "", type=str)
        python, origin = engine_client.engine_python(setting)

        def on_log(message: str, level: str) -> None:
            if level == "warning":
                feedback.pushWarning(message)
            elif level == "debug":
                feedback.pushDebugInfo(message)
            else:
                feedback.pushInfo(message)

        try:
            return engine_client.run_job(
                self.JOB,
                params,
                options,
                python=python,
                origin=origin,
                callbacks=engine_client.JobCallbacks(
                    on_progress=feedback.setProgress,
                    on_log=on_log,
                    is_cancelled=feedback.isCanceled,
                ),
                outputs=outputs,
                kept=self.kept_outputs(params),
            )
        except engine_client.EngineJobCancelled as exc:
            feedback.reportError(str(exc))
            raise QgsProcessingException(tr("Cancelled: no output was written.")) from None
        except engine_client.EngineJobError as exc:
            raise QgsProcessingException(str(exc)) from None

    def checkParameterValues(self, parameters, context):
        """QGIS's checks, with a message that names the problem and the fix.

        QGIS's own messages are generic ("Incorrect parameter value for X", "... not
        found" for a file that exists but cannot be read): the refusal is rephrased from
        the contract (range, unit, default) or from the file (missing, empty, not a
        raster). Input rasters QGIS opens for the checks leave no side file (PAM off).
        """
        with gdal_pam_off():
            ok, message = super().checkParameterValues(parameters, context)
            if ok:
                return ok, message
            return False, self.refusal_message(parameters, context) or message

    def refusal_message(self, parameters: dict[str, Any], context: QgsProcessingContext) -> str:
        """A clear message for the first parameter QGIS refuses ('' when none is known)."""
        spec = {p.name: p for p in self.SPEC.params} if self.SPEC is not None else {}
        for definition in self.parameterDefinitions():
            name = definition.name()
            value = parameters.get(name, definition.defaultValue())
            if definition.checkValueIsAcceptable(value, context):
                continue
            param = spec.get(name)
            if param is not None and (param.kind in NUMERIC or param.kind == "numbers"):
                text = out_of_range_message(param, value) if value not in (None, "") else ""
                if text:
                    return text
            kind = definition.type()
            if kind in ("raster", "multilayer", "vector", "source"):
                what = (
                    "raster"
                    if kind == "raster" or (param and param.kind == "rasters")
                    else ("vector layer")
                )
                for path in layer_paths(value):
                    layer = QgsProcessingUtils.mapLayerFromString(path, context)
                    if layer is None or not layer.isValid():
                        return unreadable_file_message(name, path, what)
            return ""
        return ""

    def processAlgorithm(self, parameters, context, feedback):
        """Run the job and return its outputs (plus its figures, where scalar)."""
        with gdal_pam_off():  # input layers loaded here write no .aux.xml beside them
            params, outputs = self.job_parameters(parameters, context, feedback)
        outcome = self.run_engine(
            params, self.runtime_options(parameters, context), outputs, feedback
        )
        results: dict[str, Any] = dict(outcome.outputs)
        for key, value in flatten_figures(outcome.figures).items():
            results.setdefault(key, value)
        if outcome.manifest:
            results["MANIFEST"] = outcome.manifest
            feedback.pushInfo(tr("Run manifest: {path}").format(path=outcome.manifest))
        self.style_outputs(results, context)
        return results

    def style_outputs(self, results: dict[str, Any], context: QgsProcessingContext) -> None:
        """Attach styles to loaded outputs; subclasses override."""


#: Runs once, when the provider loads: see pam_off_for_qgis_process.
PAM_OFF_FOR_QGIS_PROCESS = pam_off_for_qgis_process()

__all__ = [
    "GROUPS",
    "QgsProcessing",
    "QgsProcessingParameterString",
    "SlidewiseAlgorithm",
    "tr",
]
