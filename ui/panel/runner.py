"""Runs one Processing algorithm in the background and relays its progress and log."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsApplication,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
)
from qgis.PyQt.QtCore import QObject, pyqtSignal


class PanelFeedback(QgsProcessingFeedback):
    """Processing feedback whose log lines become a Qt signal (safe across threads)."""

    logged = pyqtSignal(str, str)

    def pushInfo(self, info: str) -> None:
        super().pushInfo(info)
        self.logged.emit(info, "info")

    def pushWarning(self, warning: str) -> None:
        super().pushWarning(warning)
        self.logged.emit(warning, "warning")

    def reportError(self, error: str, fatalError: bool = False) -> None:
        super().reportError(error, fatalError)
        self.logged.emit(error, "error")

    def pushCommandInfo(self, info: str) -> None:
        super().pushCommandInfo(info)
        self.logged.emit(info, "debug")

    def pushDebugInfo(self, info: str) -> None:
        super().pushDebugInfo(info)
        self.logged.emit(info, "debug")

    def pushConsoleInfo(self, info: str) -> None:
        super().pushConsoleInfo(info)
        self.logged.emit(info, "debug")

    def setProgressText(self, text: str) -> None:
        super().setProgressText(text)
        self.logged.emit(text, "info")


class StepRunner(QObject):
    """One background run of a Processing algorithm (``QgsProcessingAlgRunnerTask``).

    Signals:
        progress(float): 0-100.
        logged(str, str): a log line and its level (info, warning, error, debug).
        finished(bool, dict): success and the Processing results.
    """

    progress = pyqtSignal(float)
    logged = pyqtSignal(str, str)
    finished = pyqtSignal(bool, dict)

    def __init__(self, alg_id: str, parameters: dict[str, Any], parent=None) -> None:
        super().__init__(parent)
        self.alg_id = alg_id
        self.parameters = parameters
        self.context = QgsProcessingContext()
        self.context.setProject(QgsProject.instance())
        self.feedback = PanelFeedback()
        self.feedback.progressChanged.connect(self.progress.emit)
        self.feedback.logged.connect(self.logged.emit)
        self.task: QgsProcessingAlgRunnerTask | None = None
        self.cancelled = False

    def start(self) -> None:
        """Create the task and hand it to QGIS's task manager."""
        algorithm = QgsApplication.processingRegistry().createAlgorithmById(self.alg_id)
        if algorithm is None:
            self.logged.emit(f"Algorithm {self.alg_id} is not available.", "error")
            self.finished.emit(False, {})
            return
        self.algorithm = algorithm
        self.task = QgsProcessingAlgRunnerTask(
            algorithm, self.parameters, self.context, self.feedback
        )
        self.task.executed.connect(self._executed)
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        """Ask the algorithm to stop; the engine removes what it had written."""
        self.cancelled = True
        self.feedback.cancel()
        if self.task is not None:
            self.task.cancel()

    def _executed(self, successful: bool, results: dict) -> None:
        self.task = None
        self.finished.emit(bool(successful) and not self.cancelled, dict(results or {}))
