"""The ``checkengine`` job: what this engine environment can do."""

from __future__ import annotations

import platform
import sys
import time
from typing import Any

from slidewise.engine.core.job import JobContext, JobResult, check_known
from slidewise.engine.core.manifest import package_versions


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


def run_job(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Report the engine's Python, packages, device and GPU."""
    check_known(params, set())
    ctx.progress(10)
    report = engine_report()
    for key in ("python", "python_version", "device", "gpu_name", "gpu_memory_gb"):
        ctx.log(f"{key}: {report[key]}")
    for name, version in report["packages"].items():
        ctx.log(f"  {name}: {version or 'not installed'}")
    ctx.log(f"torchvision ops: {report['torchvision_ops']}")
    return JobResult(figures=report, manifest=False, device=report["device"])


def run_sleep_job(params: dict[str, Any], ctx: JobContext) -> JobResult:
    """Test job: write an output slowly, so cancellation can be exercised.

    Parameters: ``OUTPUT`` (path), ``SECONDS`` (float).
    """
    from slidewise.engine.core.outputs import atomic_output

    check_known(params, {"OUTPUT", "SECONDS"})
    seconds = float(params.get("SECONDS", 5))
    output = str(params["OUTPUT"])
    with atomic_output(output) as tmp, open(tmp, "w") as handle:
        steps = max(1, int(seconds * 10))
        for i in range(steps):
            handle.write(f"{i}\n")
            handle.flush()
            ctx.progress(100 * i / steps)
            time.sleep(seconds / steps)
    return JobResult(outputs={"OUTPUT": output}, manifest=False)
