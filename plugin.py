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

    def open_algorithm(self, alg_id: str) -> None:
        """Open the Processing dialog of one Slidewise algorithm."""
        import processing

        processing.execAlgorithmDialog(f"slidewise:{alg_id}", {})

    def open_settings(self) -> None:
        """Open the settings dialog (engine Python)."""
        from slidewise.ui.settings_dialog import SettingsDialog

        SettingsDialog(self.iface.mainWindow()).exec_()

    def unload(self) -> None:
        """Remove menu entries and the provider."""
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
        self.actions.clear()
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
