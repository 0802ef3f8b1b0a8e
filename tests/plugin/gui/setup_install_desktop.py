"""Run inside the real QGIS desktop by test_engine_setup_slow.py: Install from the dialog.

The Set up engine dialog of the unzipped plugin installs offline from a wheelhouse into
a fresh HOME: a first Install is cancelled while pip runs (nothing may be left), a second
one runs to the end. What was seen, and a screenshot, go to ``SLIDEWISE_GUI_OUT``.
"""

import json
import os
import traceback
from pathlib import Path

from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface

OUT = Path(os.environ["SLIDEWISE_GUI_OUT"])
found = {}
state = {"ticks": 0, "dialog": None}


def finish():
    (OUT / "result.json").write_text(json.dumps(found, indent=1))
    QApplication.instance().exit(0)


def guarded(step):
    def run():
        try:
            step()
        except Exception:
            found["error"] = traceback.format_exc()
            finish()

    return run


@guarded
def start():
    from slidewise.ui.setup_dialog import SetupDialog

    dialog = SetupDialog(iface.mainWindow())
    state["dialog"] = dialog
    dialog.wheelhouse_widget.setFilePath(os.environ["SLIDEWISE_GUI_WHEELHOUSE"])
    dialog.python_widget.setFilePath("/usr/bin/python3")
    dialog.show()
    found["env_dir"] = dialog.env_dir()
    found["torch_enabled_offline"] = dialog.torch_combo.isEnabled()
    dialog.buttons["install"].click()
    QTimer.singleShot(200, cancel_when_pip_runs)


@guarded
def cancel_when_pip_runs():
    dialog = state["dialog"]
    text = dialog.log_view.toPlainText()
    if "Collecting" not in text and "Processing" not in text and dialog.task is not None:
        QTimer.singleShot(200, cancel_when_pip_runs)
        return
    found["cancel_while_running"] = dialog.task is not None
    dialog.cancel_button.click()
    QTimer.singleShot(500, wait_cancelled)


@guarded
def wait_cancelled():
    dialog = state["dialog"]
    if dialog.task is not None:
        QTimer.singleShot(500, wait_cancelled)
        return
    found["after_cancel_status"] = dialog.status.text()
    found["after_cancel_env_exists"] = Path(found["env_dir"]).exists()
    dialog.buttons["install"].click()
    QTimer.singleShot(1000, wait_installed)


@guarded
def wait_installed():
    dialog = state["dialog"]
    state["ticks"] += 1
    if dialog.task is not None and state["ticks"] < 1200:
        QTimer.singleShot(1000, wait_installed)
        return
    found["status"] = dialog.status.text()
    found["progress"] = dialog.progress.value()
    log = dialog.log_view.toPlainText()
    found["log"] = log[-3000:]
    found["offline"] = "--no-index" in log and "--index-url" not in log
    found["engine_ready"] = dialog.engine_ready
    dialog.grab().save(str(OUT / "setup_dialog_installed.png"))
    dialog.close()
    QTimer.singleShot(300, finish)


QTimer.singleShot(1000, start)
