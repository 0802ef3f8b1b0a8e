"""The Slidewise dock panel: workflow tabs, a shared progress bar, log and Cancel.

Each step runs its Processing algorithm in the background
(:class:`.runner.StepRunner`); when it ends, the results are added to the run's
layer group (:mod:`.layers`) and fill the inputs of the next steps
(:func:`.workflow.chained_values`).
"""

from __future__ import annotations

import html
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingOutputLayerDefinition,
    QgsProject,
    QgsRasterLayer,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.gui import QgsDockWidget, QgsProcessingParameterWidgetContext
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from slidewise.processing_provider.algorithms.base import tr
from slidewise.ui.panel import workflow
from slidewise.ui.panel.layers import add_to_group, open_layer, remove_from_group, run_group
from slidewise.ui.panel.results import ResultsPage
from slidewise.ui.panel.runner import StepRunner
from slidewise.ui.panel.step import StepsPage, StepWidget

#: Panel tab -> the exportlayout TEMPLATE it opens with (0 susceptibility, 1 inventory).
LAYOUT_TEMPLATES = {"susceptibility": 0, "mapping": 1}
LOG_COLOURS = {"warning": "#b36b00", "error": "#c0392b", "debug": "#7f8c8d"}


@dataclass
class Run:
    """One run of a workflow: its start, folder and layer group."""

    started: datetime
    folder: Path
    outputs_set: dict[str, dict[str, str]] = field(default_factory=dict)
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def stamp(self) -> str:
        return workflow.run_stamp(self.started)

    @property
    def group_name(self) -> str:
        return workflow.run_group_name(self.started)


def profile_dir() -> str:
    """The QGIS profile folder."""
    return QgsApplication.qgisSettingsDirPath()


def output_value(value: Any) -> Any:
    """A destination widget value as a path (layer destinations hold it in their sink)."""
    if isinstance(value, QgsProcessingOutputLayerDefinition):
        return value.sink.staticValue()
    return value


def is_unset_output(value: Any) -> bool:
    """Whether a destination widget value asks for a temporary file (or nothing)."""
    value = output_value(value)
    return value in (None, "") or str(value) == QgsProcessing.TEMPORARY_OUTPUT


class SlidewisePanel(QgsDockWidget):
    """The dock: Susceptibility, Mapping, Detection and Models & reports tabs.

    Signals:
        step_finished(str, bool, dict): algorithm, success, results (tests wait on it).
    """

    step_finished = pyqtSignal(str, bool, dict)

    def __init__(self, iface, parent=None) -> None:
        super().__init__(tr("Slidewise"), parent)
        self.setObjectName("SlidewisePanel")
        self.iface = iface
        self.runs: dict[str, Run] = {}
        self.runner: StepRunner | None = None
        self.running_step: StepWidget | None = None
        self.widget_context = QgsProcessingParameterWidgetContext()
        self.widget_context.setProject(QgsProject.instance())
        if iface is not None:
            self.widget_context.setMapCanvas(iface.mapCanvas())
            self.widget_context.setMessageBar(iface.messageBar())
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)
        splitter = QSplitter(Qt.Vertical)
        self.tabs = QTabWidget()
        self.pages: dict[str, StepsPage] = {}
        for key, steps in workflow.WORKFLOWS.items():
            self.tabs.addTab(self._workflow_tab(key, steps), tr(workflow.TAB_TITLES[key]))
        self.results = ResultsPage(self.models_folder, self.runs_folder, self)
        self.tabs.addTab(self.results, tr("Results"))
        splitter.addWidget(self.tabs)
        splitter.addWidget(self._log_area())
        splitter.setStretchFactor(0, 4)
        splitter.setStretchFactor(1, 1)
        layout.addWidget(splitter)
        self.setWidget(body)

    # --- layout ---------------------------------------------------------------
    def _workflow_tab(self, key: str, steps) -> QWidget:
        tab = QWidget()
        layout = QVBoxLayout(tab)
        layout.setContentsMargins(0, 0, 0, 0)
        header = QHBoxLayout()
        label = QLabel(tr("New run: outputs go to a new layer group and folder."))
        label.setWordWrap(True)
        header.addWidget(label, 1)
        new_run = QPushButton(tr("New run"))
        new_run.setToolTip(tr("Start a new layer group and output folder for the next step"))
        new_run.clicked.connect(lambda: self.new_run(key))
        header.addWidget(new_run)
        if key in LAYOUT_TEMPLATES:
            print_layout = QPushButton(tr("Print layout…"))
            print_layout.setObjectName(f"layout_{key}")
            print_layout.setToolTip(
                tr("Export a map with legend, scale bar, north arrow and notes as a PDF")
            )
            print_layout.clicked.connect(lambda: self.open_layout_dialog(key))
            header.addWidget(print_layout)
        layout.addLayout(header)
        page = StepsPage(steps, self.widget_context)
        for step in page.steps:
            step.run_requested.connect(self.run_step)
        self.pages[key] = page
        page.run_label = label
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(page)
        layout.addWidget(scroll)
        return tab

    def _log_area(self) -> QWidget:
        area = QWidget()
        layout = QVBoxLayout(area)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        row.addWidget(self.progress, 1)
        self.cancel_button = QPushButton(tr("Cancel"))
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip(tr("Stop the running step; what it wrote is removed"))
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.log.setPlaceholderText(tr("The log of the running step appears here."))
        layout.addWidget(self.log)
        return area

    def open_layout_dialog(self, key: str):
        """Open the dialog of slidewise:exportlayout with the template of tab ``key``."""
        from processing.gui.AlgorithmDialog import AlgorithmDialog

        algorithm = QgsApplication.processingRegistry().createAlgorithmById(
            "slidewise:exportlayout"
        )
        if algorithm is None:
            return None
        parent = self.iface.mainWindow() if self.iface is not None else self
        dialog = AlgorithmDialog(algorithm, parent=parent)
        dialog.setParameters({"TEMPLATE": LAYOUT_TEMPLATES[key]})
        self.layout_dialog = dialog
        dialog.show()
        return dialog

    def show_workflow(self, key: str) -> None:
        """Show the tab of workflow ``key`` (or ``results``)."""
        keys = [*workflow.WORKFLOWS, "results"]
        self.tabs.setCurrentIndex(keys.index(key))
        self.show()
        self.raise_()

    # --- places -----------------------------------------------------------------
    def models_folder(self) -> Path:
        """Where trained models go (project folder when saved, else the profile's)."""
        return workflow.models_folder(QgsProject.instance().homePath(), profile_dir())

    def runs_folder(self) -> Path:
        """Where run folders go."""
        return workflow.runs_folder(QgsProject.instance().homePath(), profile_dir())

    def current_run(self, key: str) -> Run:
        """The run of workflow ``key`` (a new one on first use)."""
        if key not in self.runs:
            started = datetime.now()
            folder = self.runs_folder() / f"{workflow.run_stamp(started)}_{key}"
            self.runs[key] = Run(started, folder)
            label = self.pages[key].run_label
            label.setText(
                tr("{group}: outputs in {folder}").format(
                    group=self.runs[key].group_name, folder=folder.name
                )
            )
            label.setToolTip(str(folder))
        return self.runs[key]

    def new_run(self, key: str) -> None:
        """Forget the current run of ``key``: the next step starts a new group and folder."""
        self.runs.pop(key, None)
        self.current_run(key)

    # --- running --------------------------------------------------------------
    def parameters_for(self, step: StepWidget, run: Run) -> dict[str, Any]:
        """The step's widget values, outputs the user left unset going to the run's places."""
        params = step.values()
        keep = workflow.keeps_outputs(step.step.alg, run.parameters.get(step.step.alg), params)
        filled = run.outputs_set.setdefault(step.step.alg, {})
        defaults = workflow.default_outputs(
            step.step.alg, step.output_slots(), run.folder, self.models_folder(), run.stamp
        )
        for name, path in defaults.items():
            current = output_value(params.get(name))
            own = isinstance(current, str) and current == filled.get(name)
            if own and keep and workflow.kept_output(step.step.alg, name):
                params[name] = current  # added to again: scenes already mapped are skipped
                continue
            if is_unset_output(current) or own:
                params[name] = path
                filled[name] = path
                step.set_value(name, path)
        if step.step.alg == "maplandslides":
            self._apply_extent(step, params, run)
        run.parameters[step.step.alg] = dict(params)
        return params

    def _apply_extent(self, step: StepWidget, params: dict[str, Any], run: Run) -> None:
        extent = step.extent()
        if extent == "whole":
            params.pop("AOI", None)
        elif extent == "canvas":
            params["AOI"] = self.canvas_aoi(params.get("INPUT"), run)

    def canvas_aoi(self, raster: Any, run: Run) -> str:
        """A GeoPackage with the canvas extent as one polygon, in the raster's CRS."""
        canvas = self.iface.mapCanvas()
        layer = QgsProject.instance().mapLayer(str(raster)) if raster else None
        if layer is None and raster:
            layer = QgsRasterLayer(str(raster), "input")
        crs = layer.crs() if layer is not None else canvas.mapSettings().destinationCrs()
        extent = canvas.extent()
        source_crs = canvas.mapSettings().destinationCrs()
        if crs.isValid() and source_crs.isValid() and crs != source_crs:
            transform = QgsCoordinateTransform(source_crs, crs, QgsProject.instance())
            extent = transform.transformBoundingBox(extent)
        wkt = workflow.extent_polygon_wkt(
            extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()
        )
        uri = f"Polygon?crs={crs.authid()}" if crs.isValid() and crs.authid() else "Polygon"
        memory = QgsVectorLayer(uri, "canvas", "memory")
        feature = QgsFeature()
        feature.setGeometry(QgsGeometry.fromWkt(wkt))
        memory.dataProvider().addFeatures([feature])
        run.folder.mkdir(parents=True, exist_ok=True)
        path = str(run.folder / "canvas_extent.gpkg")
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        QgsVectorFileWriter.writeAsVectorFormatV2(
            memory, path, QgsProject.instance().transformContext(), options
        )
        return path

    def run_step(self, step: StepWidget) -> None:
        """Run one step in the background (one at a time)."""
        if self.runner is not None:
            return
        key = workflow.workflow_of(step.step.alg)
        run = self.current_run(key)
        self.models_folder().mkdir(parents=True, exist_ok=True)
        existed = run.folder.exists()
        run.folder.mkdir(parents=True, exist_ok=True)
        params = self.parameters_for(step, run)
        self.running_step = step
        self._new_folder = not existed
        self._log(tr("▶ {title}: {alg}").format(title=step.title(), alg=step.step.alg_id))
        self.runner = StepRunner(step.step.alg_id, params, self)
        self.runner.progress.connect(lambda value: self.progress.setValue(int(value)))
        self.runner.logged.connect(self._log)
        self.runner.finished.connect(self._finished)
        self.progress.setValue(0)
        self.cancel_button.setEnabled(True)
        for page in self.pages.values():
            for widget in page.steps:
                widget.set_running(widget is step, busy=True)
        self.runner.start()

    def cancel(self) -> None:
        """Cancel the running step."""
        if self.runner is not None:
            self._log(tr("Cancelling…"), "warning")
            self.runner.cancel()
            self.cancel_button.setEnabled(False)

    def _finished(self, ok: bool, results: dict) -> None:
        runner, step = self.runner, self.running_step
        self.runner, self.running_step = None, None
        self.cancel_button.setEnabled(False)
        for page in self.pages.values():
            for widget in page.steps:
                widget.set_running(False, busy=False)
        alg = step.step.alg
        run = self.runs.get(workflow.workflow_of(alg))
        if ok:
            self.progress.setValue(100)
            self._after_success(step, runner.parameters, results, run)
        else:
            cancelled = runner.cancelled
            message = (
                tr("Cancelled: nothing was written.") if cancelled else tr("Failed: see the log.")
            )
            if cancelled and self._load_kept(step, runner.parameters, run):
                message = tr(workflow.KEPT_ON_CANCEL[alg])
            if not cancelled:
                self._log(message, "error")
            step.set_status(message)
            self.progress.setValue(0)
            if run is not None and self._new_folder:
                self._remove_if_empty(run.folder)
        self.step_finished.emit(alg, ok, results)

    @staticmethod
    def _remove_if_empty(folder: Path) -> None:
        if folder.is_dir() and not any(folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)

    def _load_kept(self, step: StepWidget, params: dict, run: Run | None) -> bool:
        """After a cancel: show the outputs kept whole (an inventory's scenes finished)."""
        alg = step.step.alg
        if alg not in workflow.KEPT_ON_CANCEL or run is None:
            return False
        kept = {
            name: str(params[name])
            for name in workflow.KEPT_OUTPUTS[alg].outputs
            if name in params and Path(str(params[name])).is_file()
        }
        return bool(self._load_outputs(step, params, kept, run))

    def _load_outputs(self, step: StepWidget, params: dict, results: dict, run: Run) -> dict:
        """Add the step's presented outputs to the run's group; output name -> layer id."""
        alg = step.step.alg
        loaded: dict[str, str] = {}
        group = None
        for (source_alg, name), presentation in sorted(
            workflow.PRESENTATIONS.items(), key=lambda item: item[1].rank
        ):
            path = results.get(name)
            if source_alg != alg or not isinstance(path, str) or not Path(path).exists():
                continue
            definition = step.algorithm.parameterDefinition(name)
            source = workflow.layer_source(alg, name, path, params)
            layer = open_layer(source, definition.description() if definition else name)
            if layer is None:
                continue
            group = group or run_group(run.group_name)
            remove_from_group(group, source)  # an inventory added to: its new state only
            add_to_group(group, layer, presentation)
            loaded[name] = layer.id()
        return loaded

    def _after_success(self, step: StepWidget, params: dict, results: dict, run: Run) -> None:
        alg = step.step.alg
        loaded = self._load_outputs(step, params, results, run)
        chained_results = {**results, **loaded}
        for target_alg, values in workflow.chained_values(alg, params, chained_results).items():
            target = self.pages[workflow.workflow_of(target_alg)].step(target_alg)
            if target is None:
                continue
            for name, value in values.items():
                target.set_value(name, value)
        for report in workflow.report_outputs(alg, results):
            self.results.add_report(report, open_now=True)
        step.set_status(tr("Done."))
        for value in results.values():
            if isinstance(value, str) and value.endswith(".safetensors"):
                self.results.add_model(value)
                link = html.escape(value, quote=True)
                step.set_status(tr("Done.") + f' <a href="{link}">' + tr("Model card…") + "</a>")
        self._log(tr("✔ {title} done.").format(title=step.title()))
        page = self.pages[workflow.workflow_of(alg)]
        index = page.steps.index(step)
        if index + 1 < len(page.steps):
            step.setCollapsed(True)
            page.steps[index + 1].setCollapsed(False)

    def _log(self, text: str, level: str = "info") -> None:
        colour = LOG_COLOURS.get(level)
        escaped = html.escape(text)
        if colour:
            escaped = f'<span style="color:{colour}">{escaped}</span>'
        self.log.appendHtml(escaped)
        if level == "error" and self.iface is not None:
            self.iface.messageBar().pushMessage("Slidewise", text, Qgis.Warning, 8)
