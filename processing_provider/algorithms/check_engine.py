"""slidewise:checkengine — what the engine environment can do."""

from __future__ import annotations

import json

from qgis.core import QgsProcessingOutputString

from slidewise.contract.specs.checkengine import SPEC
from slidewise.processing_provider.algorithms.base import SlidewiseAlgorithm, tr


class CheckEngineAlgorithm(SlidewiseAlgorithm):
    """Reports the engine's Python, package versions, device and GPU."""

    ALG_ID = "checkengine"
    DISPLAY_NAME = "Check the engine"
    GROUP = "engine"
    ICON = "engine.svg"
    JOB = "checkengine"
    SPEC = SPEC
    SHORT_HELP = (
        "Starts the Slidewise engine worker and reports its Python interpreter, the versions "
        "of its packages, the torch device it will use (cuda, mps or cpu), the GPU name and "
        "memory, and whether torchvision's compiled operators or the pure-PyTorch fallbacks "
        "are used. Run it first when something does not work. The engine Python comes from "
        "the SLIDEWISE_PYTHON environment variable, then Plugins › Slidewise › Settings…, then "
        "the default environment created by Plugins › Slidewise › Set up engine…"
    )

    def initAlgorithm(self, config=None) -> None:
        """SPEC's report file (skipped unless asked for), and the string outputs."""
        super().initAlgorithm(config)
        self.addOutput(QgsProcessingOutputString("DEVICE", tr("Device")))
        self.addOutput(QgsProcessingOutputString("PYTHON", tr("Engine Python")))

    def processAlgorithm(self, parameters, context, feedback):
        """Run the check (the engine saves the report when OUTPUT is set); return its figures."""
        params, outputs = self.job_parameters(parameters, context, feedback)
        outcome = self.run_engine(params, {}, outputs, feedback)
        report = outcome.figures
        results = {
            "DEVICE": report.get("device"),
            "PYTHON": report.get("python"),
            "GPU_NAME": report.get("gpu_name") or "",
            "GPU_MEMORY_GB": report.get("gpu_memory_gb") or 0,
            "TORCHVISION_OPS": report.get("torchvision_ops"),
            "PACKAGES": json.dumps(report.get("packages", {})),
        }
        results.update(outcome.outputs)
        return results
