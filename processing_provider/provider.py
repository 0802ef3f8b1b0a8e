"""The Slidewise Processing provider."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from slidewise.processing_provider.algorithms import ALGORITHMS
from slidewise.processing_provider.algorithms.base import ICONS, tr

VERSION_FILE = Path(__file__).resolve().parents[1] / "metadata.txt"


class SlidewiseProvider(QgsProcessingProvider):
    """Registers every Slidewise algorithm under the id ``slidewise``."""

    def id(self) -> str:
        return "slidewise"

    def name(self) -> str:
        return tr("Slidewise")

    def longName(self) -> str:
        return tr("Slidewise landslide susceptibility, mapping and detection")

    def icon(self) -> QIcon:
        return QIcon(str(ICONS / "slidewise.svg"))

    def versionInfo(self) -> str:
        for line in VERSION_FILE.read_text(encoding="utf-8").splitlines():
            if line.startswith("version="):
                return line.split("=", 1)[1].strip()
        return ""

    def loadAlgorithms(self) -> None:
        for algorithm_class in ALGORITHMS:
            self.addAlgorithm(algorithm_class())
