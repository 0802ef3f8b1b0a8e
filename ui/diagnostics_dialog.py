"""Diagnostics: a plain-text report (QGIS, OS, Pythons, engine, device, last errors) to copy."""

from __future__ import annotations

from typing import Any

from qgis.core import Qgis
from qgis.PyQt.QtGui import QFont, QGuiApplication, QIcon
from qgis.PyQt.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from slidewise.processing_provider import engine_setup
from slidewise.processing_provider.algorithms.base import ICONS, tr
from slidewise.ui.setup_dialog import BackgroundTask, engine_setting, run_in_background


def report_text(check: dict[str, Any] | None = None) -> str:
    """The diagnostics report for this QGIS session."""
    return engine_setup.diagnostics_report(Qgis.QGIS_VERSION, engine_setting(), check)


class DiagnosticsDialog(QDialog):
    """Plugins › Slidewise › Diagnostics…: read-only report, Copy, and the engine check."""

    def __init__(self, parent: QWidget | None = None, run_check: bool = True) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("Slidewise — Diagnostics"))
        self.setWindowIcon(QIcon(str(ICONS / "engine.svg")))
        self.task: BackgroundTask | None = None
        layout = QVBoxLayout(self)
        self.note = QLabel(tr("Copy this report into a bug report."))
        layout.addWidget(self.note)
        self.text = QPlainTextEdit(report_text())
        self.text.setReadOnly(True)
        self.text.setFont(QFont("monospace", 9))
        layout.addWidget(self.text, 1)
        row = QHBoxLayout()
        self.copy_button = QPushButton(tr("Copy"))
        self.copy_button.clicked.connect(self.copy)
        row.addWidget(self.copy_button)
        row.addStretch(1)
        close = QPushButton(tr("Close"))
        close.clicked.connect(self.close)
        row.addWidget(close)
        layout.addLayout(row)
        self.resize(720, 520)
        if run_check:
            self.note.setText(tr("Checking the engine (a few seconds)…"))
            self.task = run_in_background(tr("Slidewise: diagnostics"), self.check, self.checked)

    @staticmethod
    def check(callbacks: engine_setup.SetupCallbacks) -> dict[str, Any]:
        """Run the engine check with the engine Python Slidewise uses (task thread)."""
        from slidewise.processing_provider import engine_client

        python, _ = engine_client.engine_python(engine_setting())
        return engine_setup.check_engine(python, lambda line: None, callbacks)

    def checked(self, ok: bool, error: str, result: Any) -> None:
        """Refresh the report with the check's packages and device (or its error)."""
        self.task = None
        self.text.setPlainText(report_text(result if ok else None))
        self.note.setText(
            tr("Copy this report into a bug report.")
            if ok
            else tr(
                "The engine check failed (see Last errors). Copy this report into a bug report."
            )
        )

    def copy(self) -> None:
        """Put the whole report on the clipboard."""
        QGuiApplication.clipboard().setText(self.text.toPlainText())
        self.note.setText(tr("Copied to the clipboard."))

    def closeEvent(self, event) -> None:
        """Closing stops a running check."""
        if self.task is not None:
            self.task.cancel()
        super().closeEvent(event)
