"""The Slidewise plugin object: Processing provider, panel, toolbar, menu and Browser items."""

from __future__ import annotations

import configparser
from pathlib import Path

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtCore import Qt, QUrl
from qgis.PyQt.QtGui import QDesktopServices, QIcon
from qgis.PyQt.QtWidgets import QAction

from slidewise.processing_provider.algorithms.base import tr
from slidewise.processing_provider.provider import SlidewiseProvider

PLUGIN_DIR = Path(__file__).resolve().parent
ICONS = PLUGIN_DIR / "resources" / "icons"
MENU = "&Slidewise"
#: Menu entries that open the panel on a workflow: (tab, label, icon).
WORKFLOW_ENTRIES = (
    ("susceptibility", "Susceptibility…", "susceptibility.svg"),
    ("mapping", "Mapping…", "mapping.svg"),
    ("detection", "Detection…", "detection.svg"),
)


def help_url() -> QUrl:
    """The project's homepage from metadata.txt, else the README shipped with the plugin."""
    parser = configparser.ConfigParser()
    parser.read(PLUGIN_DIR / "metadata.txt", encoding="utf-8")
    homepage = parser.get("general", "homepage", fallback="")
    if homepage.startswith("http") and "example." not in homepage:
        return QUrl(homepage)
    return QUrl.fromLocalFile(str(PLUGIN_DIR / "README.md"))


class SlidewisePlugin:
    """Registers the provider in ``initProcessing`` (so qgis_process sees it headless).

    On the desktop: a toolbar button shows the Slidewise panel; the Plugins ›
    Slidewise menu opens the panel on each workflow and has Settings, Set up
    engine, Diagnostics and Help; ``.safetensors`` files in the Browser show
    their model card.
    """

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: SlidewiseProvider | None = None
        self.actions: list[QAction] = []
        self.startup_task = None
        self.engine_message = None
        self.toolbar_action: QAction | None = None
        self.panel = None
        self.browser_providers: tuple = ()

    def initProcessing(self) -> None:
        """Register the Processing provider (called by QGIS and qgis_process)."""
        if self.provider is None:
            self.provider = SlidewiseProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        """Add the toolbar button, the menu entries and the Browser items."""
        self.initProcessing()
        if self.iface is None:
            return
        window = self.iface.mainWindow()
        self.toolbar_action = QAction(
            QIcon(str(ICONS / "slidewise.svg")), tr("Slidewise panel"), window
        )
        self.toolbar_action.setCheckable(True)
        self.toolbar_action.setToolTip(
            tr("Show the Slidewise panel: susceptibility, mapping and detection")
        )
        self.toolbar_action.toggled.connect(self.toggle_panel)
        self.iface.addToolBarIcon(self.toolbar_action)
        self.iface.addPluginToMenu(MENU, self.toolbar_action)
        for key, label, icon in WORKFLOW_ENTRIES:
            self._menu_entry(label, icon, lambda _=False, k=key: self.open_panel(k))
        self._menu_entry("Settings…", "slidewise.svg", self.open_settings)
        self._menu_entry("Set up engine…", "engine.svg", self.open_setup)
        self._menu_entry("Diagnostics…", "engine.svg", self.open_diagnostics)
        self._menu_entry("Help", "slidewise.svg", self.open_help)
        self._add_browser_items()
        self.check_engine_at_startup()

    def _menu_entry(self, label: str, icon: str, slot) -> QAction:
        action = QAction(QIcon(str(ICONS / icon)), tr(label), self.iface.mainWindow())
        action.triggered.connect(slot)
        self.iface.addPluginToMenu(MENU, action)
        self.actions.append(action)
        return action

    def _add_browser_items(self) -> None:
        from qgis.gui import QgsGui

        from slidewise.ui.browser import ModelItemGuiProvider, ModelItemProvider

        items, gui = ModelItemProvider(), ModelItemGuiProvider()
        QgsApplication.dataItemProviderRegistry().addProvider(items)
        QgsGui.dataItemGuiProviderRegistry().addProvider(gui)
        self.browser_providers = (items, gui)

    # --- panel ------------------------------------------------------------------
    def ensure_panel(self):
        """The dock panel, created on first use and docked on the right."""
        if self.panel is None:
            from slidewise.ui.panel.dock import SlidewisePanel

            self.panel = SlidewisePanel(self.iface, self.iface.mainWindow())
            self.panel.visibilityChanged.connect(self._panel_visibility)
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.panel)
        return self.panel

    def _panel_visibility(self, visible: bool) -> None:
        if self.toolbar_action is not None and self.toolbar_action.isChecked() != visible:
            self.toolbar_action.blockSignals(True)
            self.toolbar_action.setChecked(visible)
            self.toolbar_action.blockSignals(False)

    def toggle_panel(self, visible: bool) -> None:
        """Show or hide the panel (toolbar button)."""
        if visible:
            self.ensure_panel().show()
            self.panel.raise_()
        elif self.panel is not None:
            self.panel.hide()

    def open_panel(self, workflow: str) -> None:
        """Show the panel on the tab of ``workflow``."""
        self.ensure_panel().show_workflow(workflow)
        self._panel_visibility(True)

    # --- dialogs ----------------------------------------------------------------
    def open_settings(self) -> None:
        """Open the settings dialog (engine Python)."""
        from slidewise.ui.settings_dialog import SettingsDialog

        SettingsDialog(self.iface.mainWindow()).exec()

    # --- engine setup (Set up engine, Diagnostics, the start-up check) --------------
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

    def open_help(self) -> None:
        """Open the user guide."""
        QDesktopServices.openUrl(help_url())

    def unload(self) -> None:
        """Remove the panel, the toolbar button, the menu entries and the providers."""
        for action in [*self.actions, self.toolbar_action]:
            if action is not None:
                self.iface.removePluginMenu(MENU, action)
        if self.toolbar_action is not None:
            self.iface.removeToolBarIcon(self.toolbar_action)
            self.toolbar_action = None
        self.actions.clear()
        if self.startup_task is not None:
            self.startup_task.relay.done.disconnect()
            self.startup_task = None
        if self.panel is not None:
            if self.panel.runner is not None:
                self.panel.runner.cancel()
            self.iface.removeDockWidget(self.panel)
            self.panel.deleteLater()
            self.panel = None
        if self.browser_providers:
            from qgis.gui import QgsGui

            items, gui = self.browser_providers
            QgsApplication.dataItemProviderRegistry().removeProvider(items)
            QgsGui.dataItemGuiProviderRegistry().removeProvider(gui)
            self.browser_providers = ()
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
