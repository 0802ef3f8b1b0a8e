"""Set up engine: create, repair, remove and check the engine environment from QGIS.

The work is :mod:`slidewise.processing_provider.engine_setup` (no Qt); this dialog
gathers the plan, runs it in a :class:`QgsTask` so QGIS stays responsive, and shows
pip's output line by line with a progress bar and a Cancel button.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import QgsApplication, QgsSettings, QgsTask
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import QObject, pyqtSignal
from qgis.PyQt.QtGui import QFont, QIcon
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from slidewise.contract.specs.setupengine import SPEC
from slidewise.processing_provider import engine_client, engine_setup
from slidewise.processing_provider.algorithms.base import ICONS, tr

Work = Callable[[engine_setup.SetupCallbacks], Any]


class Relay(QObject):
    """Carries a task's log lines and its end from the task's thread to the dialog."""

    line = pyqtSignal(str)
    done = pyqtSignal(bool, str, object)


class BackgroundTask(QgsTask):
    """Runs ``work`` off the main thread with setup callbacks wired to the task.

    ``relay.done`` gets ``(ok, error message, result)`` in the main thread.
    """

    def __init__(self, description: str, work: Work) -> None:
        super().__init__(description, QgsTask.Flag.CanCancel)
        self.work = work
        self.relay = Relay()
        self.result: Any = None
        self.error = ""

    def run(self) -> bool:
        """Do the work (task thread); errors become a message, never an exception."""
        callbacks = engine_setup.SetupCallbacks(
            on_progress=self.setProgress, on_log=self.relay.line.emit, is_cancelled=self.isCanceled
        )
        try:
            self.result = self.work(callbacks)
        except engine_setup.SetupError as exc:
            self.error = str(exc)
        except Exception as exc:  # shown to the user instead of a traceback in the task
            self.error = f"{type(exc).__name__}: {exc}"
        if self.error:
            engine_setup.RECENT_ERRORS.append(self.error)
        return not self.error

    def finished(self, result: bool) -> None:
        """Report the end (main thread)."""
        self.relay.done.emit(bool(result), self.error, self.result)


def run_in_background(
    description: str,
    work: Work,
    on_done: Callable[[bool, str, Any], None],
    on_log: Callable[[str], None] | None = None,
) -> BackgroundTask:
    """Start ``work`` in QGIS's task manager; keep the returned task while it runs."""
    task = BackgroundTask(description, work)
    task.relay.done.connect(on_done)
    if on_log is not None:
        task.relay.line.connect(on_log)
    QgsApplication.taskManager().addTask(task)
    return task


def engine_setting() -> str:
    """The engine Python stored in the Slidewise settings ('' when unset)."""
    return QgsSettings().value(engine_client.SETTINGS_KEY, "", type=str)


def gpu_text(gpus: list[engine_setup.GpuInfo]) -> str:
    """What the dialog says about the GPU and the torch build Automatic will pick."""
    if not gpus:
        return tr("No NVIDIA GPU found (nvidia-smi): Automatic installs the CPU build of PyTorch.")
    gpu = gpus[0]
    build = engine_setup.cuda_build(gpu)
    if not build:
        return tr(
            "NVIDIA GPU: {name}, driver {driver} — too old for PyTorch's CUDA builds: "
            "Automatic installs the CPU build."
        ).format(name=gpu.name, driver=gpu.driver)
    return tr(
        "NVIDIA GPU: {name}, driver {driver} — Automatic installs the CUDA build {build}."
    ).format(name=gpu.name, driver=gpu.driver, build=build)


class SetupDialog(QDialog):
    """Plugins › Slidewise › Set up engine…"""

    def __init__(self, parent: QWidget | None = None, gpus: list | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(tr("Slidewise — Set up engine"))
        self.setWindowIcon(QIcon(str(ICONS / "engine.svg")))
        self.task: BackgroundTask | None = None
        self.engine_ready = False
        self.gpus = engine_setup.detect_gpus() if gpus is None else gpus
        layout = QVBoxLayout(self)
        intro = QLabel(
            tr(
                "Slidewise computes in its own Python environment with PyTorch. Install creates "
                "it in the folder below (no administrator rights needed), installs PyTorch and "
                "the engine from this plugin, and checks it. Offline: give a wheelhouse folder."
            )
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.status = QLabel()
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addLayout(self.build_form())
        layout.addLayout(self.build_buttons())
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setFormat(tr("%p %"))
        layout.addWidget(self.progress)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setFont(QFont("monospace", 9))
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setPlaceholderText(tr("pip's output and the engine check appear here."))
        layout.addWidget(self.log_view, 1)
        self.resize(760, 600)
        self.show_status()
        self.set_running(False)

    # --- layout ---------------------------------------------------------------
    def build_form(self) -> QFormLayout:
        """Environment folder, PyTorch build (with the GPU found), index, wheelhouse, Python."""
        form = QFormLayout()
        self.env_widget = QgsFileWidget()
        self.env_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.env_widget.setFilePath(str(engine_setup.default_env_dir(engine_setting())))
        self.env_widget.setToolTip(tr(SPEC["ENV_PATH"].help))
        form.addRow(tr("Environment folder"), self.env_widget)
        self.torch_combo = QComboBox()
        for choice, label in zip(SPEC["TORCH"].choices, SPEC["TORCH"].labels, strict=True):
            self.torch_combo.addItem(tr(label), choice)
        self.torch_combo.setToolTip(tr(SPEC["TORCH"].help))
        self.torch_combo.currentIndexChanged.connect(self.update_fields)
        form.addRow(tr("PyTorch build"), self.torch_combo)
        self.gpu_label = QLabel(gpu_text(self.gpus))
        self.gpu_label.setWordWrap(True)
        form.addRow("", self.gpu_label)
        self.index_edit = QLineEdit()
        self.index_edit.setPlaceholderText("https://download.pytorch.org/whl/cu126")
        self.index_edit.setToolTip(tr(SPEC["INDEX_URL"].help))
        form.addRow(tr("Package index of PyTorch"), self.index_edit)
        self.wheelhouse_widget = QgsFileWidget()
        self.wheelhouse_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.wheelhouse_widget.setToolTip(tr(SPEC["WHEELHOUSE"].help))
        self.wheelhouse_widget.lineEdit().setPlaceholderText(
            tr("empty: download from the internet")
        )
        self.wheelhouse_widget.fileChanged.connect(self.update_fields)
        form.addRow(tr("Wheelhouse folder (offline)"), self.wheelhouse_widget)
        self.python_widget = QgsFileWidget()
        self.python_widget.setToolTip(tr(SPEC["PYTHON"].help))
        self.python_widget.lineEdit().setPlaceholderText(tr("empty: found automatically"))
        form.addRow(tr("Python used to create it"), self.python_widget)
        return form

    def build_buttons(self) -> QHBoxLayout:
        """Install, Repair, Remove, Check, Diagnostics, Cancel, Close."""
        row = QHBoxLayout()
        self.buttons: dict[str, QPushButton] = {}
        for key, text, tip in (
            ("install", tr("Install"), tr("Create the environment and install the engine.")),
            ("repair", tr("Repair"), tr("Empty the environment and install again.")),
            ("remove", tr("Remove"), tr("Delete the environment folder.")),
            ("check", tr("Check"), tr("Run Check the engine in the environment.")),
            ("diagnostics", tr("Diagnostics…"), tr("A report to copy into a bug report.")),
        ):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(lambda _=False, k=key: self.start(k))
            row.addWidget(button)
            self.buttons[key] = button
        row.addStretch(1)
        self.cancel_button = QPushButton(tr("Cancel"))
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.cancel_button)
        close = QPushButton(tr("Close"))
        close.clicked.connect(self.close)
        row.addWidget(close)
        return row

    # --- state ------------------------------------------------------------------
    def update_fields(self) -> None:
        """The index field only for 'From the package index'; no torch choice offline."""
        offline = bool(self.wheelhouse_widget.filePath().strip())
        self.torch_combo.setEnabled(not offline)
        self.gpu_label.setText(
            tr("Offline: PyTorch and everything else come from the wheelhouse folder.")
            if offline
            else gpu_text(self.gpus)
        )
        self.index_edit.setEnabled(not offline and self.torch_combo.currentData() == "index")

    def set_running(self, running: bool) -> None:
        """Disable the action buttons while a task runs; Cancel only then."""
        for button in self.buttons.values():
            button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.update_fields()

    def show_status(self, text: str = "", ok: bool | None = None) -> None:
        """The status line: the environment's state, or ``text``."""
        if not text:
            python = engine_setup.env_python(self.env_dir())
            if (Path(self.env_dir()) / engine_setup.MARKER).is_file():
                text, ok = tr("Installed: {python}. Check runs it.").format(python=python), True
            elif python.is_file():
                text, ok = (
                    tr("An environment exists here ({python}); Check or Repair it.").format(
                        python=python
                    ),
                    None,
                )
            else:
                text, ok = tr("No engine environment here yet: choose Install."), None
        colour = {True: "#1a7f37", False: "#b42318", None: "#444"}[ok]
        self.status.setText(f"<span style='color:{colour}'>{html.escape(text)}</span>")

    def env_dir(self) -> str:
        """The environment folder of the form."""
        return self.env_widget.filePath().strip()

    def plan(self, action: str) -> engine_setup.SetupPlan:
        """The setup plan of the form."""
        return engine_setup.SetupPlan(
            action=action,
            env_dir=Path(self.env_dir()),
            torch=self.torch_combo.currentData(),
            index_url=self.index_edit.text().strip(),
            wheelhouse=self.wheelhouse_widget.filePath().strip(),
            python=self.python_widget.filePath().strip(),
        )

    # --- actions ------------------------------------------------------------------
    def start(self, action: str) -> None:
        """Run ``action`` in the background (Diagnostics opens its own dialog)."""
        if action == "diagnostics":
            from slidewise.ui.diagnostics_dialog import DiagnosticsDialog

            DiagnosticsDialog(self).exec()
            return
        if self.task is not None or not self.confirmed(action):
            return
        self.log_view.clear()
        self.progress.setValue(0)
        if action == "check":
            python = str(engine_setup.env_python(self.env_dir()))

            def work(callbacks: engine_setup.SetupCallbacks) -> Any:
                return engine_setup.check_engine(python, callbacks.on_log, callbacks)
        else:
            plan = self.plan(action)

            def work(callbacks: engine_setup.SetupCallbacks) -> Any:
                return engine_setup.run_setup(plan, callbacks)

        self.action = action
        self.set_running(True)
        self.show_status(tr("Running: {action}…").format(action=action))
        self.task = run_in_background(
            tr("Slidewise: set up engine ({action})").format(action=action),
            work,
            self.finished,
            self.log_view.appendPlainText,
        )
        self.task.progressChanged.connect(lambda value: self.progress.setValue(int(value)))

    def confirmed(self, action: str) -> bool:
        """Repair and Remove delete the environment's contents: ask first."""
        if action not in ("repair", "remove"):
            return True
        question = (
            tr("Delete the engine environment {folder}? Your models and data are not touched.")
            if action == "remove"
            else tr("Empty the engine environment {folder} and install it again?")
        ).format(folder=self.env_dir())
        answer = QMessageBox.question(
            self,
            tr("Slidewise — Set up engine"),
            question,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def cancel(self) -> None:
        """Ask the running task to stop (pip is killed)."""
        if self.task is not None:
            self.log_view.appendPlainText(tr("Cancelling…"))
            self.task.cancel()

    def finished(self, ok: bool, error: str, result: Any) -> None:
        """Show the outcome; a new environment becomes the one Slidewise uses."""
        self.task = None
        self.set_running(False)
        if not ok:
            self.log_view.appendPlainText(error)
            self.show_status(error, False)
            return
        self.progress.setValue(100)
        if self.action in ("install", "repair"):
            self.remember()
        if self.action == "remove":
            self.show_status(tr("The environment was removed."), None)
            return
        report = result or {}
        self.engine_ready = True
        self.show_status(
            tr("The engine works: device {device}, torch {torch}.").format(
                device=report.get("device", "?"),
                torch=(report.get("packages") or {}).get("torch", "?"),
            ),
            True,
        )

    def remember(self) -> None:
        """Store the new environment's Python in the settings (unless it is the default)."""
        python = engine_setup.env_python(self.env_dir())
        settings = QgsSettings()
        if python == engine_client.default_engine_python():
            settings.remove(engine_client.SETTINGS_KEY)
        else:
            settings.setValue(engine_client.SETTINGS_KEY, str(python))
        chosen, origin = engine_client.engine_python(engine_setting())
        if Path(chosen) != python:
            self.log_view.appendPlainText(
                tr("Note: Slidewise still uses {chosen} (from the {origin}).").format(
                    chosen=chosen, origin=origin
                )
            )

    def closeEvent(self, event) -> None:
        """Closing while a task runs cancels it."""
        if self.task is not None:
            self.task.cancel()
        super().closeEvent(event)
