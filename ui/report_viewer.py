"""HTML reports of Slidewise inside QGIS.

The evaluation reports are single HTML files with their figures embedded as
base64 PNG. They open in QtWebKit where QGIS has it; otherwise in a
``QTextBrowser`` that decodes the embedded images itself (Qt 5's text browser
does not read ``data:`` URLs); the system browser is a button away in both.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtGui import QDesktopServices, QImage, QTextDocument
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
)

from slidewise.processing_provider.algorithms.base import tr

_DATA_URL = re.compile(r"^data:image/[a-z+]+;base64,(.*)$", re.DOTALL)


def decode_data_url(url: str) -> bytes | None:
    """The bytes of a ``data:image/...;base64,`` URL (``None`` for other URLs)."""
    found = _DATA_URL.match(url)
    if not found:
        return None
    try:
        return base64.b64decode(found.group(1).strip(), validate=True)
    except ValueError:
        return None


class ReportBrowser(QTextBrowser):
    """A text browser that shows images embedded as ``data:`` URLs and opens links outside."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setOpenExternalLinks(True)

    def loadResource(self, kind: int, url: QUrl):
        if kind == QTextDocument.ImageResource:
            data = decode_data_url(url.toString())
            if data is not None:
                image = QImage()
                image.loadFromData(data)
                if image.width() > 900:
                    image = image.scaledToWidth(900)
                return image
        return super().loadResource(kind, url)


def _web_view():
    """A QtWebKit view, or ``None`` where QGIS has no QtWebKit."""
    try:
        from qgis.PyQt.QtWebKitWidgets import QWebView
    except ImportError:
        return None
    return QWebView()


class ReportViewer(QDialog):
    """One HTML report, with a button for the system browser."""

    def __init__(self, path: str | Path, parent=None, prefer_webkit: bool = True) -> None:
        super().__init__(parent)
        self.path = Path(path)
        self.setWindowTitle(tr("Slidewise report: {name}").format(name=self.path.name))
        self.resize(900, 760)
        layout = QVBoxLayout(self)
        url = QUrl.fromLocalFile(str(self.path))
        view = _web_view() if prefer_webkit else None
        if view is not None:
            view.load(url)
            self.engine = "webkit"
        else:
            view = ReportBrowser()
            view.setSearchPaths([str(self.path.parent)])
            view.setHtml(self.path.read_text(encoding="utf-8", errors="replace"))
            self.engine = "textbrowser"
        self.view = view
        layout.addWidget(view)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        external = QPushButton(tr("Open in web browser"))
        external.clicked.connect(lambda: QDesktopServices.openUrl(url))
        buttons.addButton(external, QDialogButtonBox.ActionRole)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)


def open_report(path: str | Path, parent=None) -> ReportViewer | None:
    """Show a report inside QGIS (non-modal); the system browser if it cannot be read."""
    file = Path(path)
    if not file.is_file():
        return None
    try:
        viewer = ReportViewer(file, parent)
    except OSError:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(file)))
        return None
    viewer.show()
    return viewer
