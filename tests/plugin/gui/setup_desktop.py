"""Run inside the real QGIS desktop (``qgis --code``) by test_engine_setup_gui.py.

With no engine (SLIDEWISE_PYTHON points nowhere), the start-up check must show the
message bar with a *Set up engine* button; the button opens the Set up engine dialog.
Screenshots and what was found go to ``SLIDEWISE_GUI_OUT``; QGIS then quits.
"""

import json
import os
import traceback
from pathlib import Path

from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication, QPushButton
from qgis.utils import iface, plugins

OUT = Path(os.environ["SLIDEWISE_GUI_OUT"])
found = {"plugin_loaded": "slidewise" in plugins}
waited = {"tries": 0}


def finish():
    (OUT / "result.json").write_text(json.dumps(found, indent=1))
    QApplication.instance().exit(0)


def message_bar_button():
    """The Set up engine button of a Slidewise message in the bar, if any."""
    for item in iface.messageBar().items():
        for button in item.findChildren(QPushButton):
            if "Set up engine" in button.text():
                return item, button
    return None, None


def wait_for_bar():
    try:
        item, button = message_bar_button()
        if item is None and waited["tries"] < 120:
            waited["tries"] += 1
            QTimer.singleShot(500, wait_for_bar)
            return
        found["message_bar"] = item is not None
        if item is None:
            finish()
            return
        found["message_text"] = item.text() if hasattr(item, "text") else ""
        found["menu"] = [a.text() for a in iface.pluginMenu().actions()]
        iface.mainWindow().grab().scaledToWidth(1200).save(str(OUT / "message_bar.png"))
        # The button opens the dialog modally: look at it once it is up, then close it.
        QTimer.singleShot(1500, look_at_dialog)
        button.click()
    except Exception:
        found["error"] = traceback.format_exc()
        finish()


def look_at_dialog():
    try:
        from slidewise.ui.setup_dialog import SetupDialog

        dialogs = [
            w
            for w in QApplication.topLevelWidgets()
            if isinstance(w, SetupDialog) and w.isVisible()
        ]
        found["dialog_open"] = bool(dialogs)
        if dialogs:
            dialog = dialogs[0]
            dialog.log_view.setPlainText(
                "Click Install to create the engine environment.\n"
                "pip's output appears here line by line; Cancel stops it."
            )
            found["dialog_status"] = dialog.status.text()
            found["dialog_gpu"] = dialog.gpu_label.text()
            found["dialog_buttons"] = [b.text() for b in dialog.findChildren(QPushButton)]
            found["dialog_env"] = dialog.env_dir()
            dialog.grab().save(str(OUT / "setup_dialog.png"))
            engine_env = os.environ.get("SLIDEWISE_GUI_ENGINE_ENV", "")
            if engine_env:
                # Check an existing environment: the task runs, the log fills, the status turns.
                dialog.env_widget.setFilePath(engine_env)
                dialog.buttons["check"].click()
                found["check_started"] = dialog.task is not None
                QTimer.singleShot(500, lambda: wait_for_check(dialog))
                return
            dialog.close()
    except Exception:
        found["error"] = traceback.format_exc()
    QTimer.singleShot(300, finish)


def wait_for_check(dialog):
    try:
        if dialog.task is not None and waited["tries"] < 240:
            waited["tries"] += 1
            QTimer.singleShot(500, lambda: wait_for_check(dialog))
            return
        found["check_status"] = dialog.status.text()
        found["check_log"] = dialog.log_view.toPlainText()
        found["check_progress"] = dialog.progress.value()
        dialog.grab().save(str(OUT / "setup_dialog_check.png"))
        QTimer.singleShot(300, lambda: remove_fake(dialog))
        return
    except Exception:
        found["error"] = traceback.format_exc()
    QTimer.singleShot(300, finish)


def remove_fake(dialog):
    """Remove asks first (answered Yes here), then deletes a throw-away environment."""
    try:
        from qgis.PyQt.QtWidgets import QMessageBox

        fake = OUT / "fake-env"
        (fake / "bin").mkdir(parents=True)
        (fake / "pyvenv.cfg").write_text("home = /usr/bin\n")
        dialog.env_widget.setFilePath(str(fake))

        def answer():
            boxes = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox)]
            boxes = [b for b in boxes if b.isVisible()]
            if not boxes:
                QTimer.singleShot(200, answer)
                return
            found["remove_question"] = boxes[0].text()
            boxes[0].button(QMessageBox.StandardButton.Yes).click()

        QTimer.singleShot(300, answer)
        dialog.buttons["remove"].click()
        QTimer.singleShot(500, lambda: wait_removed(dialog, fake))
    except Exception:
        found["error"] = traceback.format_exc()
        QTimer.singleShot(300, finish)


def wait_removed(dialog, fake):
    try:
        if dialog.task is not None and waited["tries"] < 400:
            waited["tries"] += 1
            QTimer.singleShot(300, lambda: wait_removed(dialog, fake))
            return
        found["fake_env_removed"] = not fake.exists()
        found["remove_status"] = dialog.status.text()
        # From now on Slidewise's engine is the working one: closing the dialog re-checks.
        os.environ["SLIDEWISE_PYTHON"] = os.environ["SLIDEWISE_GUI_ENGINE_ENV"] + "/bin/python"
        dialog.close()
        QTimer.singleShot(300, open_diagnostics)
    except Exception:
        found["error"] = traceback.format_exc()
        QTimer.singleShot(300, finish)


def open_diagnostics():
    """Diagnostics (with the engine of SLIDEWISE_GUI_ENGINE_ENV) and Settings' Test button."""
    try:
        from slidewise.ui.diagnostics_dialog import DiagnosticsDialog
        from slidewise.ui.settings_dialog import SettingsDialog

        python = os.environ["SLIDEWISE_PYTHON"]
        diagnostics = DiagnosticsDialog(iface.mainWindow())
        diagnostics.show()
        settings = SettingsDialog(iface.mainWindow())
        settings.python_edit.setText(python)
        settings.show()
        settings.test_button.click()
        QTimer.singleShot(500, lambda: wait_for_diagnostics(diagnostics, settings))
    except Exception:
        found["error"] = traceback.format_exc()
        QTimer.singleShot(300, finish)


def wait_for_diagnostics(diagnostics, settings):
    try:
        busy = plugins["slidewise"].startup_task is not None
        if (diagnostics.task or settings.task or busy) and waited["tries"] < 400:
            waited["tries"] += 1
            QTimer.singleShot(500, lambda: wait_for_diagnostics(diagnostics, settings))
            return
        # SLIDEWISE_PYTHON points at a working engine: the check after the dialog closed
        # took the message away.
        found["bar_after_setup"] = message_bar_button()[0] is not None
        diagnostics.copy_button.click()
        found["diagnostics"] = diagnostics.text.toPlainText()
        found["clipboard"] = QApplication.clipboard().text()
        found["settings_status"] = settings.status.text()
        diagnostics.grab().save(str(OUT / "diagnostics.png"))
        settings.grab().save(str(OUT / "settings.png"))
        diagnostics.close()
        settings.close()
    except Exception:
        found["error"] = traceback.format_exc()
    QTimer.singleShot(300, finish)


QTimer.singleShot(1000, wait_for_bar)
