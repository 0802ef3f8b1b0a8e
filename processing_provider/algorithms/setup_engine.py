"""slidewise:setupengine — create, repair or remove the engine environment from Processing.

It runs in QGIS's own Python (there is no engine yet), so it does not go through
:func:`engine_client.run_job`: :mod:`..engine_setup` does the work, and this
algorithm relays its log, progress and cancel to Processing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.core import QgsProcessingException, QgsProcessingOutputString, QgsSettings

from slidewise.contract.specs.setupengine import SPEC
from slidewise.processing_provider import engine_client, engine_setup
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr


class SetupEngineAlgorithm(SlidewiseAlgorithm):
    """Installs the engine environment (torch and the engine) and checks it."""

    ALG_ID = "setupengine"
    DISPLAY_NAME = "Set up engine"
    GROUP = "engine"
    ICON = "engine.svg"
    JOB = ""
    RUNS_IN_QGIS = True
    SPEC = SPEC
    SHORT_HELP = (
        "Creates the Python environment the Slidewise engine runs in, with no administrator "
        "rights and no terminal: finds a Python 3.10+, creates the environment in a folder you "
        "can write to, installs PyTorch (the CUDA build when an NVIDIA GPU is found, else the "
        "CPU build, or from a package index you give) and the engine from this plugin's "
        "folder, then runs Check the engine. With a wheelhouse folder it installs offline. "
        "Repair empties the environment and installs again; Remove deletes it. The log is kept "
        "in ~/.local/share/slidewise/logs/setup.log. The same as Plugins › Slidewise › Set up "
        "engine…"
    )

    def initAlgorithm(self, config=None) -> None:
        """SPEC's parameters, and the engine Python and device as outputs."""
        super().initAlgorithm(config)
        self.addOutput(QgsProcessingOutputString("PYTHON", tr("Engine Python")))
        self.addOutput(QgsProcessingOutputString("DEVICE", tr("Device")))
        self.addOutput(QgsProcessingOutputString("LOG", tr("Setup log")))

    def plan(self, parameters, context) -> engine_setup.SetupPlan:
        """The setup plan from the parameters (empty folder: the environment in use now)."""
        setting = QgsSettings().value(engine_client.SETTINGS_KEY, "", type=str)
        action = SPEC["ACTION"].choices[self.parameterAsEnum(parameters, "ACTION", context)]
        env_path = self.parameterAsFile(parameters, "ENV_PATH", context).strip()
        return engine_setup.SetupPlan(
            action=action,
            env_dir=Path(env_path) if env_path else engine_setup.default_env_dir(setting),
            torch=SPEC["TORCH"].choices[self.parameterAsEnum(parameters, "TORCH", context)],
            index_url=self.parameterAsString(parameters, "INDEX_URL", context).strip(),
            wheelhouse=self.parameterAsFile(parameters, "WHEELHOUSE", context).strip(),
            python=self.parameterAsFile(parameters, "PYTHON", context).strip(),
        )

    def processAlgorithm(self, parameters, context, feedback) -> dict[str, Any]:
        """Carry out the plan, relaying pip's output; remember a non-default environment."""
        plan = self.plan(parameters, context)
        callbacks = engine_setup.SetupCallbacks(
            on_progress=feedback.setProgress,
            on_log=feedback.pushConsoleInfo,
            is_cancelled=feedback.isCanceled,
        )
        try:
            report = engine_setup.run_setup(plan, callbacks)
        except engine_setup.SetupCancelled as exc:
            raise QgsProcessingException(tr("Cancelled: {why}").format(why=exc)) from None
        except engine_setup.SetupError as exc:
            raise QgsProcessingException(str(exc)) from None
        python = str(engine_setup.env_python(plan.env_dir))
        if plan.action in ("install", "repair"):
            remember_environment(python, feedback)
            feedback.pushInfo(tr("Engine check: {report}").format(report=json.dumps(report)))
        return {
            "PYTHON": python if plan.action != "remove" else "",
            "DEVICE": str(report.get("device", "")),
            "LOG": str(plan.log_file),
        }


def remember_environment(python: str, feedback) -> None:
    """Store ``python`` as the engine Python unless it is the default one; warn if overridden."""
    if Path(python) == engine_client.default_engine_python():
        QgsSettings().remove(engine_client.SETTINGS_KEY)
    else:
        QgsSettings().setValue(engine_client.SETTINGS_KEY, python)
    chosen, origin = engine_client.engine_python(
        QgsSettings().value(engine_client.SETTINGS_KEY, "", type=str)
    )
    if Path(chosen) != Path(python):
        feedback.pushWarning(
            tr(
                "Slidewise will still use {chosen} (from the {origin}): unset it to use the new "
                "environment."
            ).format(chosen=chosen, origin=origin)
        )
