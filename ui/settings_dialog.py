"""Settings dialog: which Python runs the engine, with a Test button and a status line."""

from __future__ import annotations

import html
import os
from typing import Any

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

from slidewise.processing_provider import engine_client, engine_setup
from slidewise.processing_provider.algorithms.base import tr


class SettingsDialog(QDialog):
    """Edits the ``slidewise/engine_python`` setting; Test runs the quick engine check."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("Slidewise settings"))
        self.task = None
        layout = QVBoxLayout(self)
        intro = QLabel(
            tr(
                "Engine Python (empty: {default}). The environment variable {env}, "
                "when set, takes precedence."
            ).format(default=engine_client.default_engine_python(), env=engine_client.ENV_VAR)
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        row = QHBoxLayout()
        self.python_edit = QLineEdit(QgsSettings().value(engine_client.SETTINGS_KEY, "", type=str))
        self.python_edit.setToolTip(tr("Path to the python executable of the engine environment."))
        browse = QPushButton(tr("Browse…"))
        browse.clicked.connect(self.browse)
        self.test_button = QPushButton(tr("Test"))
        self.test_button.setToolTip(
            tr("Check that this Python starts and imports the engine and torch.")
        )
        self.test_button.clicked.connect(self.test)
        row.addWidget(self.python_edit)
        row.addWidget(browse)
        row.addWidget(self.test_button)
        layout.addLayout(row)
        self.status = QLabel(tr("Status: not tested yet."))
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        setup_row = QHBoxLayout()
        setup = QPushButton(tr("Set up engine…"))
        setup.setToolTip(tr("Create or repair the engine environment."))
        setup.clicked.connect(self.open_setup)
        setup_row.addWidget(setup)
        setup_row.addStretch(1)
        layout.addLayout(setup_row)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(640, 180)

    def browse(self) -> None:
        """Pick the interpreter file."""
        path, _ = QFileDialog.getOpenFileName(self, tr("Engine Python"))
        if path:
            self.python_edit.setText(path)

    def test(self) -> None:
        """Run the quick check on the typed path (in the background)."""
        from slidewise.ui.setup_dialog import run_in_background

        if self.task is not None:
            return
        typed = self.python_edit.text().strip()
        self.test_button.setEnabled(False)
        self.status.setText(tr("Status: testing…"))
        self.task = run_in_background(
            tr("Slidewise: test the engine"),
            lambda callbacks: engine_setup.quick_check(python=typed),
            self.tested,
        )

    def tested(self, ok: bool, error: str, result: Any) -> None:
        """Show the quick check's outcome."""
        self.task = None
        self.test_button.setEnabled(True)
        if ok and result is not None and result.ok:
            text = tr("Status: the engine works ({python}).").format(python=result.python)
            colour = "#1a7f37"
            overridden = os.environ.get(engine_client.ENV_VAR, "").strip()
            if overridden and overridden != result.python:
                text += " " + tr("Note: Slidewise uses {env}={path} while it is set.").format(
                    env=engine_client.ENV_VAR, path=overridden
                )
        else:
            text = tr("Status: {message}").format(message=result.message if result else error)
            colour = "#b42318"
        self.status.setText(f"<span style='color:{colour}'>{html.escape(text)}</span>")

    def open_setup(self) -> None:
        """Open the Set up engine dialog."""
        from slidewise.ui.setup_dialog import SetupDialog

        SetupDialog(self).exec()

    def save(self) -> None:
        """Store the setting and close."""
        QgsSettings().setValue(engine_client.SETTINGS_KEY, self.python_edit.text().strip())
        self.accept()
