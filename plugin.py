"""The Slidewise plugin object: Processing provider, menu, toolbar and settings."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from slidewise.processing_provider.algorithms import ALGORITHMS
from slidewise.processing_provider.algorithms.base import GROUPS, tr
from slidewise.processing_provider.provider import SlidewiseProvider

ICONS = Path(__file__).resolve().parent / "resources" / "icons"
MENU = "&Slidewise"


class SlidewisePlugin:
    """Registers the provider in ``initProcessing`` (so qgis_process sees it headless).

    The menu has one entry per algorithm; each opens that Processing algorithm's
    dialog, so the desktop, the Toolbox and qgis_process share one code path.
    """

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: SlidewiseProvider | None = None
        self.actions: list[QAction] = []
        self.startup_task = None
        self.engine_message = None

    def initProcessing(self) -> None:
        """Register the Processing provider (called by QGIS and qgis_process)."""
        if self.provider is None:
            self.provider = SlidewiseProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        """Add the menu entries and register the provider."""
        self.initProcessing()
        if self.iface is None:
            return
        for algorithm_class in ALGORITHMS:
            alg = algorithm_class
            text = f"{tr(GROUPS[alg.GROUP])} › {tr(alg.DISPLAY_NAME)}…"
            action = QAction(QIcon(str(ICONS / alg.ICON)), text, self.iface.mainWindow())
            action.triggered.connect(lambda _=False, a=alg.ALG_ID: self.open_algorithm(a))
            self.iface.addPluginToMenu(MENU, action)
            self.actions.append(action)
        settings = QAction(
            QIcon(str(ICONS / "slidewise.svg")), tr("Settings…"), self.iface.mainWindow()
        )
        settings.triggered.connect(self.open_settings)
        self.iface.addPluginToMenu(MENU, settings)
        self.actions.append(settings)
        self.add_engine_actions()
        self.check_engine_at_startup()

    def open_algorithm(self, alg_id: str) -> None:
        """Open the Processing dialog of one Slidewise algorithm."""
        import processing

        processing.execAlgorithmDialog(f"slidewise:{alg_id}", {})

    def open_settings(self) -> None:
        """Open the settings dialog (engine Python)."""
        from slidewise.ui.settings_dialog import SettingsDialog

        SettingsDialog(self.iface.mainWindow()).exec()

    # --- engine setup (Set up engine, Diagnostics, the start-up check) --------------
    def add_engine_actions(self) -> None:
        """Menu entries Set up engine… and Diagnostics…"""
        for text, slot in (
            (tr("Set up engine…"), self.open_setup),
            (tr("Diagnostics…"), self.open_diagnostics),
        ):
            action = QAction(QIcon(str(ICONS / "engine.svg")), text, self.iface.mainWindow())
            action.triggered.connect(lambda _=False, s=slot: s())
            self.iface.addPluginToMenu(MENU, action)
            self.actions.append(action)

    def check_engine_at_startup(self) -> None:
        """Check the engine in the background; a message bar offers setup when it is missing.

        Never blocks start-up: the check (the interpreter exists and imports the engine
        and torch) runs as a QGIS task and reports when it ends.
        """
        from slidewise.processing_provider import engine_setup
        from slidewise.ui.setup_dialog import engine_setting, run_in_background

        setting = engine_setting()
        self.startup_task = run_in_background(
            tr("Slidewise: check the engine"),
            lambda callbacks: engine_setup.quick_check(setting),
            self.engine_checked,
        )

    def engine_checked(self, ok: bool, error: str, result) -> None:
        """Show the message bar when the quick check failed; take it away once it passes."""
        self.startup_task = None
        shown = self.engine_message
        if ok and result is not None and result.ok:
            self.engine_message = None
            if shown is not None:
                try:
                    self.iface.messageBar().popWidget(shown)
                except RuntimeError:  # the user closed it already
                    pass
            return
        from slidewise.processing_provider import engine_setup

        message = result.message if result is not None else error
        engine_setup.RECENT_ERRORS.append(message)
        if shown is None:
            self.show_engine_missing(message, missing=result is not None and result.missing)

    def show_engine_missing(self, message: str, missing: bool = True) -> None:
        """A warning in QGIS's message bar with a *Set up engine* button."""
        from qgis.core import Qgis
        from qgis.PyQt.QtWidgets import QPushButton

        if self.iface is None:
            return
        bar = self.iface.messageBar()
        text = (
            tr("The engine is not set up yet: set it up once (a few minutes) to run the tools.")
            if missing
            else tr("The engine environment is broken: open Set up engine and choose Repair.")
        )
        widget = bar.createMessage(tr("Slidewise"), text)
        widget.setToolTip(message)
        button = QPushButton(tr("Set up engine…"), widget)
        button.clicked.connect(self.open_setup)
        widget.layout().addWidget(button)
        self.engine_message = widget
        bar.pushWidget(widget, Qgis.MessageLevel.Warning)

    def open_setup(self) -> None:
        """Open the Set up engine dialog."""
        from slidewise.ui.setup_dialog import SetupDialog

        SetupDialog(self.iface.mainWindow()).exec()
        if self.engine_message is not None and self.startup_task is None:
            self.check_engine_at_startup()  # check again: the message goes once it passes

    def open_diagnostics(self) -> None:
        """Open the diagnostics report."""
        from slidewise.ui.diagnostics_dialog import DiagnosticsDialog

        DiagnosticsDialog(self.iface.mainWindow()).exec()

    def unload(self) -> None:
        """Remove menu entries and the provider."""
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
        self.actions.clear()
        if self.startup_task is not None:
            self.startup_task.relay.done.disconnect()
            self.startup_task = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
