"""The "Models & reports" tab: the models and reports of the session and earlier runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qgis.PyQt.QtCore import Qt, QUrl
from qgis.PyQt.QtGui import QDesktopServices, QFont
from qgis.PyQt.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from slidewise.processing_provider.algorithms.base import tr
from slidewise.ui.panel.workflow import find_files


class ResultsPage(QWidget):
    """Lists of models (with their model cards) and HTML reports."""

    def __init__(
        self, models_folder: Callable[[], Path], runs_folder: Callable[[], Path], parent=None
    ) -> None:
        super().__init__(parent)
        self.models_folder = models_folder
        self.runs_folder = runs_folder
        self.session_reports: list[str] = []
        self.session_models: list[str] = []
        self.dialogs: list = []
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>" + tr("Models") + "</b>"))
        self.models = self._list()
        self.models.itemDoubleClicked.connect(lambda item: self.open_card(item.data(Qt.UserRole)))
        layout.addWidget(self.models)
        row = QHBoxLayout()
        card = QPushButton(tr("Model card…"))
        card.setToolTip(tr("Show what the selected model was trained on and how well"))
        card.clicked.connect(self._card_of_selected)
        row.addWidget(card)
        other = QPushButton(tr("Other model file…"))
        other.clicked.connect(self._card_of_file)
        row.addWidget(other)
        folder = QPushButton(tr("Open folder"))
        folder.clicked.connect(lambda: self._open_folder(self.models_folder()))
        row.addWidget(folder)
        layout.addLayout(row)
        layout.addWidget(QLabel("<b>" + tr("Reports") + "</b>"))
        self.reports = self._list()
        self.reports.itemDoubleClicked.connect(
            lambda item: self.open_report(item.data(Qt.UserRole))
        )
        layout.addWidget(self.reports)
        row = QHBoxLayout()
        show = QPushButton(tr("Open report"))
        show.clicked.connect(self._open_selected_report)
        row.addWidget(show)
        runs = QPushButton(tr("Open runs folder"))
        runs.clicked.connect(lambda: self._open_folder(self.runs_folder()))
        row.addWidget(runs)
        refresh = QPushButton(tr("Refresh"))
        refresh.clicked.connect(self.refresh)
        row.addWidget(refresh)
        layout.addLayout(row)
        self.refresh()

    def refresh(self) -> None:
        """List the session's models and reports first (bold), then earlier ones on disk."""
        self._fill(
            self.models, self.session_models, find_files(self.models_folder(), ".safetensors")
        )
        self._fill(self.reports, self.session_reports, find_files(self.runs_folder(), ".html"))

    @staticmethod
    def _list() -> QListWidget:
        widget = QListWidget()
        widget.setTextElideMode(Qt.ElideMiddle)
        widget.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        return widget

    @staticmethod
    def _fill(widget: QListWidget, session: list[str], on_disk: list[Path]) -> None:
        widget.clear()
        seen = set()
        bold = QFont()
        bold.setBold(True)
        for path in reversed(session):
            item = QListWidgetItem(f"{Path(path).name}  ({tr('this session')})")
            item.setData(Qt.UserRole, path)
            item.setToolTip(path)
            item.setFont(bold)
            widget.addItem(item)
            seen.add(str(Path(path)))
        for path in on_disk:
            if str(path) in seen:
                continue
            label = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
            item = QListWidgetItem(label)
            item.setData(Qt.UserRole, str(path))
            item.setToolTip(str(path))
            widget.addItem(item)

    def add_report(self, path: str, open_now: bool = False) -> None:
        """Add a report of this session (and open it)."""
        if path not in self.session_reports:
            self.session_reports.append(path)
        self.refresh()
        if open_now:
            self.open_report(path)

    def add_model(self, path: str) -> None:
        """Add a model trained in this session."""
        if path not in self.session_models:
            self.session_models.append(path)
        self.refresh()

    def open_report(self, path: str) -> None:
        """Show a report in the viewer inside QGIS."""
        from slidewise.ui.report_viewer import open_report

        viewer = open_report(path, self)
        if viewer is not None:
            self.dialogs.append(viewer)

    def open_card(self, path: str) -> None:
        """Show the model card of a model file."""
        from slidewise.ui.model_card import show_model_card

        self.dialogs.append(show_model_card(path, self))

    def _card_of_selected(self) -> None:
        item = self.models.currentItem()
        if item is not None:
            self.open_card(item.data(Qt.UserRole))

    def _card_of_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, tr("Model file"), str(self.models_folder()), "Slidewise model (*.safetensors)"
        )
        if path:
            self.open_card(path)

    def _open_selected_report(self) -> None:
        item = self.reports.currentItem()
        if item is not None:
            self.open_report(item.data(Qt.UserRole))

    @staticmethod
    def _open_folder(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))
