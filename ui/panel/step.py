"""One step of a workflow tab: the algorithm's parameters, a Run button, its state.

The parameter widgets are Processing's own (``QgsProcessingGuiRegistry``), made
from the algorithm's parameter definitions, which come from the contract spec:
the panel and the Processing dialog show the same parameters with the same help.
Advanced parameters sit in a collapsed group.
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingDestinationParameter,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFileDestination,
    QgsProject,
)
from qgis.gui import (
    QgsCollapsibleGroupBox,
    QgsGui,
    QgsProcessingContextGenerator,
    QgsProcessingGui,
)
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from slidewise.processing_provider.algorithms.base import tr
from slidewise.ui.panel.workflow import EMPTY_MEANS, EXTENT_LABELS, EXTENTS, OutputSlot, Step

#: Spec kinds of Processing destination parameters.
DESTINATION_KINDS = {
    "rasterDestination": "output_raster",
    "vectorDestination": "output_vector",
    "fileDestination": "output_file",
    "folderDestination": "output_folder",
}


class _ContextGenerator(QgsProcessingContextGenerator):
    """Gives the widgets a Processing context bound to the current project."""

    def __init__(self) -> None:
        super().__init__()
        self.context = QgsProcessingContext()
        self.context.setProject(QgsProject.instance())

    def processingContext(self) -> QgsProcessingContext:
        return self.context


class StepWidget(QgsCollapsibleGroupBox):
    """A collapsible box with one algorithm's parameters and a Run button.

    Signals:
        run_requested(StepWidget): the user pressed Run.
    """

    run_requested = pyqtSignal(object)

    def __init__(self, number: int, step: Step, widget_context, parent=None) -> None:
        super().__init__(parent)
        self.step = step
        self.setTitle(f"{number}. {tr(step.title)}")
        self.algorithm = QgsApplication.processingRegistry().algorithmById(step.alg_id)
        self.wrappers: dict[str, Any] = {}
        self.advanced_names: list[str] = []
        self.extent_combo: QComboBox | None = None
        self._generator = _ContextGenerator()
        layout = QVBoxLayout(self)
        about = QLabel(tr(step.description))
        about.setWordWrap(True)
        font = about.font()
        font.setItalic(True)
        about.setFont(font)
        layout.addWidget(about)
        if self.algorithm is None:
            layout.addWidget(QLabel(tr("This algorithm is not available.")))
            return
        basic = QFormLayout()
        basic.setRowWrapPolicy(QFormLayout.WrapAllRows)
        advanced_box = QgsCollapsibleGroupBox(tr("Advanced parameters"))
        advanced_box.setCollapsed(True)
        advanced = QFormLayout(advanced_box)
        advanced.setRowWrapPolicy(QFormLayout.WrapAllRows)
        for definition in self.algorithm.parameterDefinitions():
            if definition.flags() & QgsProcessingParameterDefinition.FlagHidden:
                continue
            is_advanced = bool(definition.flags() & QgsProcessingParameterDefinition.FlagAdvanced)
            if is_advanced:
                self.advanced_names.append(definition.name())
            self._add_parameter(definition, advanced if is_advanced else basic, widget_context)
        layout.addLayout(basic)
        if step.alg == "maplandslides":
            self._add_extent_choice(basic)
        if advanced.rowCount():
            layout.addWidget(advanced_box)
        for wrapper in self.wrappers.values():
            wrapper.postInitialize(list(self.wrappers.values()))
        buttons = QHBoxLayout()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.linkActivated.connect(self._open_card)
        buttons.addWidget(self.status, 1)
        self.run_button = QPushButton(QgsApplication.getThemeIcon("/mActionStart.svg"), tr("Run"))
        self.run_button.setToolTip(
            tr("Run {name} in the background").format(name=self.algorithm.displayName())
        )
        self.run_button.clicked.connect(lambda: self.run_requested.emit(self))
        buttons.addWidget(self.run_button)
        layout.addLayout(buttons)

    # --- parameters ---------------------------------------------------------
    def _add_parameter(self, definition, form: QFormLayout, widget_context) -> None:
        registry = QgsGui.processingGuiRegistry()
        wrapper = registry.createParameterWidgetWrapper(definition, QgsProcessingGui.Standard)
        if wrapper is None:
            form.addRow(QLabel(definition.description()), QLabel(tr("(set in the dialog)")))
            return
        wrapper.setWidgetContext(widget_context)
        wrapper.registerProcessingContextGenerator(self._generator)
        widget = wrapper.createWrappedWidget(self._generator.context)
        label = wrapper.createWrappedLabel()
        if widget is None:
            return
        widget.setToolTip(definition.help() or "")
        if definition.isDestination():
            self._adapt_destination(definition, widget)
        empty_means = EMPTY_MEANS.get((self.step.alg, definition.name()))
        if empty_means:
            for edit in widget.findChildren(QLineEdit):
                edit.setPlaceholderText(tr(empty_means))
        if label is not None:
            label.setToolTip(definition.help() or "")
            form.addRow(label, widget)
        else:
            form.addRow(widget)
        self.wrappers[definition.name()] = wrapper

    @staticmethod
    def _adapt_destination(definition, widget: QWidget) -> None:
        """The panel loads results itself and writes them to the run's folder: say so."""
        for box in widget.findChildren(QCheckBox):
            box.setChecked(False)
            box.hide()
        is_model = "safetensors" in getattr(definition, "fileFilter", lambda: "")().lower()
        text = tr("[in the models folder]") if is_model else tr("[in the run's folder]")
        for edit in widget.findChildren(QLineEdit):
            edit.setPlaceholderText(text)

    def _add_extent_choice(self, form: QFormLayout) -> None:
        self.extent_combo = QComboBox()
        for key in EXTENTS:
            self.extent_combo.addItem(tr(EXTENT_LABELS[key]), key)
        self.extent_combo.setToolTip(
            tr(
                "Map the whole raster, only what the map canvas shows, or the polygons of "
                "the area of interest layer."
            )
        )
        row = 1
        aoi = self.wrappers.get("AOI")
        if aoi is not None:
            row, _role = form.getWidgetPosition(aoi.wrappedWidget())
        form.insertRow(max(row, 0), tr("Extent"), self.extent_combo)
        self.extent_combo.currentIndexChanged.connect(self._extent_changed)
        self._extent_changed()

    def _extent_changed(self) -> None:
        aoi = self.wrappers.get("AOI")
        if aoi is None or self.extent_combo is None:
            return
        enabled = self.extent_combo.currentData() == "aoi"
        aoi.wrappedWidget().setEnabled(enabled)
        if aoi.wrappedLabel() is not None:
            aoi.wrappedLabel().setEnabled(enabled)

    def extent(self) -> str:
        """``whole``, ``canvas`` or ``aoi`` (Map a raster only; else ``whole``)."""
        return self.extent_combo.currentData() if self.extent_combo is not None else "whole"

    def output_slots(self) -> list[OutputSlot]:
        """The algorithm's destination parameters as :class:`OutputSlot`."""
        slots = []
        for definition in self.algorithm.destinationParameterDefinitions():
            kind = DESTINATION_KINDS.get(definition.type(), "output_file")
            file_filter = ""
            if isinstance(definition, QgsProcessingParameterFileDestination):
                file_filter = definition.fileFilter()
            by_default = True
            if isinstance(definition, QgsProcessingDestinationParameter):
                optional = definition.flags() & QgsProcessingParameterDefinition.FlagOptional
                by_default = bool(definition.createByDefault() or not optional)
            slots.append(OutputSlot(definition.name(), kind, file_filter, by_default))
        return slots

    def parameter_names(self) -> list[str]:
        """Names of the algorithm's parameters."""
        if self.algorithm is None:
            return []
        return [d.name() for d in self.algorithm.parameterDefinitions()]

    def values(self) -> dict[str, Any]:
        """Current widget values, unset ones left out."""
        values = {}
        for name, wrapper in self.wrappers.items():
            value = wrapper.parameterValue()
            if value is None or value == "" or value == []:
                continue
            values[name] = value
        return values

    def set_value(self, name: str, value: Any) -> bool:
        """Set one parameter's widget; ``False`` if the step has no such widget."""
        wrapper = self.wrappers.get(name)
        if wrapper is None:
            return False
        wrapper.setParameterValue(value, self._generator.context)
        return True

    def set_running(self, running: bool, busy: bool) -> None:
        """Show this step running; ``busy``: another step runs (Run disabled)."""
        if self.algorithm is None:
            return
        self.run_button.setEnabled(not busy)
        if running:
            self.status.setText(tr("Running…"))

    def _open_card(self, path: str) -> None:
        from slidewise.ui.browser import open_card

        open_card(path)

    def set_status(self, text: str) -> None:
        """A short line beside the Run button (last result)."""
        self.status.setText(text)


class StepsPage(QWidget):
    """The steps of one workflow, one below the other."""

    def __init__(self, steps, widget_context, parent=None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.steps: list[StepWidget] = []
        for number, step in enumerate(steps, start=1):
            widget = StepWidget(number, step, widget_context, self)
            widget.setCollapsed(number > 1)
            layout.addWidget(widget)
            self.steps.append(widget)
        layout.addStretch(1)

    def step(self, alg: str) -> StepWidget | None:
        """The step running ``alg``."""
        for widget in self.steps:
            if widget.step.alg == alg:
                return widget
        return None
