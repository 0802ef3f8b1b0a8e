"""Slidewise models in the QGIS Browser: ``.safetensors`` files with a model card.

:class:`ModelItemProvider` makes every ``.safetensors`` file a Browser item;
:class:`ModelItemGuiProvider` gives those items a *Model card…* context action
and opens the card on double-click. The items are plain ``QgsDataItem``; all
behaviour sits in the GUI provider (Python subclasses of data items do not
survive the Browser's ownership).
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsDataItem, QgsDataItemProvider, QgsDataProvider
from qgis.gui import QgsDataItemGuiProvider
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from slidewise.processing_provider.algorithms.base import ICONS, tr

SUFFIX = ".safetensors"
PROVIDER_KEY = "slidewise"
_CUSTOM = Qgis.BrowserItemType.Custom if hasattr(Qgis, "BrowserItemType") else QgsDataItem.Custom
_POPULATED = (
    Qgis.BrowserItemState.Populated if hasattr(Qgis, "BrowserItemState") else QgsDataItem.Populated
)
_FILES = (
    Qgis.DataItemProviderCapability.Files
    if hasattr(Qgis, "DataItemProviderCapability")
    else QgsDataProvider.File
)
_OPEN: list = []


def is_model_item(item) -> bool:
    """Whether a Browser item is a ``.safetensors`` file."""
    return item is not None and str(item.path()).lower().endswith(SUFFIX)


def open_card(path: str):
    """Open the model card of ``path`` (kept alive until closed)."""
    from slidewise.ui.model_card import show_model_card

    dialog = show_model_card(path)
    _OPEN.append(dialog)
    dialog.finished.connect(lambda _=0: _OPEN.remove(dialog) if dialog in _OPEN else None)
    return dialog


class ModelItemProvider(QgsDataItemProvider):
    """Makes ``.safetensors`` files Browser items."""

    def name(self) -> str:
        return "slidewise_models"

    def dataProviderKey(self) -> str:
        return PROVIDER_KEY

    def capabilities(self) -> int:
        return _FILES

    def createDataItem(self, path: str, parentItem):
        """A leaf item for a ``.safetensors`` file, ``None`` for anything else."""
        if not (path and path.lower().endswith(SUFFIX) and Path(path).is_file()):
            return None
        item = QgsDataItem(_CUSTOM, parentItem, Path(path).name, path, PROVIDER_KEY)
        item.setState(_POPULATED)
        item.setToolTip(tr("Slidewise model: double-click for its model card"))
        item.setIcon(QIcon(str(ICONS / "slidewise.svg")))
        return item


class ModelItemGuiProvider(QgsDataItemGuiProvider):
    """*Model card…* in the context menu of model files; double-click opens it."""

    def name(self) -> str:
        return "slidewise_models"

    def populateContextMenu(self, item, menu, selectedItems, context) -> None:
        if not is_model_item(item):
            return
        action = QAction(QIcon(str(ICONS / "slidewise.svg")), tr("Model card…"), menu)
        action.triggered.connect(lambda: open_card(item.path()))
        menu.addAction(action)

    def handleDoubleClick(self, item, context) -> bool:
        if not is_model_item(item):
            return False
        open_card(item.path())
        return True
