"""The ``checkengine`` job: what this engine environment can do."""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass
from typing import Any

from slidewise.contract.specs.checkengine import SPEC as CHECKENGINE_SPEC
from slidewise.engine.core.job import JobContext, JobResult
from slidewise.engine.core.manifest import package_versions
from slidewise.engine.core.params import JobParams

#: Report entries logged one per line, before the package versions.
LOGGED = ("python", "python_version", "device", "gpu_name", "gpu_memory_gb")


@dataclass(frozen=True)
class CheckEngineParams(JobParams):
    """Parameters of the ``checkengine`` job (declared in ``contract/specs/checkengine.py``).

    Attributes:
        output: JSON file to save the full report to; ``None``: no file.
    """

    SPEC = CHECKENGINE_SPEC

    output: str | None = None


def engine_report() -> dict[str, Any]:
    """Describe the engine: interpreter, packages, torch device and GPU."""
    report: dict[str, Any] = {
        "python": sys.executable,
        "python_version": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
    }
    import torch

    from slidewise.engine.core.runtime import select_device
    from slidewise.engine.imagery.tvcompat import torchvision_status

    device = select_device("auto")
    report["device"] = device.type
    report["cuda_available"] = torch.cuda.is_available()
    report["torch_threads"] = torch.get_num_threads()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        report["gpu_name"] = props.name
        report["gpu_memory_gb"] = round(props.total_memory / 1024**3, 2)
        report["cuda_version"] = torch.version.cuda
    else:
        report["gpu_name"] = None
        report["gpu_memory_gb"] = None
    report["torchvision_ops"] = torchvision_status()
    return report


def log_report(report: dict[str, Any], ctx: JobContext) -> None:
    """Log the report's main entries and the package versions, one per line."""
    for key in LOGGED:
        ctx.log(f"{key}: {report[key]}")
    for name, version in report["packages"].items():
        ctx.log(f"  {name}: {version or 'not installed'}")
    ctx.log(f"torchvision ops: {report['torchvision_ops']}")


def write_report(report: dict[str, Any], path: str) -> None:
    """Save the report as indented JSON (written to a partial file, then renamed)."""
    from slidewise.engine.core.outputs import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2), encoding="utf-8")


def run_job(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Report the engine's Python, packages, device and GPU (saved as JSON if OUTPUT is set)."""
    options = CheckEngineParams.from_params(params)
    ctx.progress(10)
    report = engine_report()
    log_report(report, ctx)
    outputs: dict[str, str] = {}
    if options.output:
        write_report(report, options.output)
        outputs["OUTPUT"] = options.output
    return JobResult(outputs=outputs, figures=report, manifest=False, device=report["device"])
