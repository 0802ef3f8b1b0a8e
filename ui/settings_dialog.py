"""Settings dialog: which Python runs the engine."""

from __future__ import annotations

from qgis.core import QgsSettings
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
)

from slidewise.processing_provider import engine_client
from slidewise.processing_provider.algorithms.base import tr


class SettingsDialog(QDialog):
    """Edits the ``slidewise/engine_python`` setting."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("Slidewise settings"))
        layout = QVBoxLayout(self)
        layout.addWidget(
            QLabel(
                tr(
                    "Engine Python (empty: {default}). The environment variable {env}, "
                    "when set, takes precedence."
                ).format(default=engine_client.default_engine_python(), env=engine_client.ENV_VAR)
            )
        )
        row = QHBoxLayout()
        self.python_edit = QLineEdit(QgsSettings().value(engine_client.SETTINGS_KEY, "", type=str))
        self.python_edit.setToolTip(tr("Path to the python executable of the engine environment."))
        browse = QPushButton(tr("Browse…"))
        browse.clicked.connect(self.browse)
        row.addWidget(self.python_edit)
        row.addWidget(browse)
        layout.addLayout(row)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def browse(self) -> None:
        """Pick the interpreter file."""
        path, _ = QFileDialog.getOpenFileName(self, tr("Engine Python"))
        if path:
            self.python_edit.setText(path)

    def save(self) -> None:
        """Store the setting and close."""
        QgsSettings().setValue(engine_client.SETTINGS_KEY, self.python_edit.text().strip())
        self.accept()
