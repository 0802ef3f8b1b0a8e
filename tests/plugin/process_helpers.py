"""Processes of the plugin tests: find a run's engine workers, wait for them to end.

Workers are found by their command line (``slidewise.engine.worker``) and by the
parent the engine client named in their environment (``SLIDEWISE_PARENT_PID``),
so workers of other test runs on the same machine are never counted. Run as a
script, this module is a small parent process that runs one engine job through
``engine_client.run_job`` and reports on its standard output (``PID n``,
``PROGRESS v``, then ``DONE``, ``CANCELLED: ...`` or ``ERROR: ...``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from plugin_helpers import BIJIE, PLUGINS_DIR, TEST_DATA

WORKER_MODULE = b"slidewise.engine.worker"
#: The bound on how long a worker may outlive its end (issue 15).
WORKER_END_S = 2.0


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        return entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not reaped yet, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def workers_of(parent: int) -> list[int]:
    """Live engine workers started by process ``parent`` (also after it ended)."""
    entry = f"SLIDEWISE_PARENT_PID={parent}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if WORKER_MODULE in cmdline and _environ_has(int(name), entry) and alive(int(name)):
            found.append(int(name))
    return found


def wait_for_worker(parent: int, timeout: float = 60.0) -> int:
    """The pid of the worker of ``parent``, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = workers_of(parent)
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no engine worker of process {parent} after {timeout} s")


def seconds_until_gone(pids: list[int], timeout: float = 10.0) -> float:
    """Seconds until every process of ``pids`` has ended (``inf`` after ``timeout``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if not any(alive(pid) for pid in pids):
            return time.monotonic() - start
        time.sleep(0.02)
    return float("inf")


def leftovers(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (hidden partial files included)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def job_folders(tmp: Path) -> list[str]:
    """The engine client's job folders left in the temporary folder ``tmp``.

    Other files there are not ours (torch keeps a compile cache in the temporary folder).
    """
    return sorted(p.name for p in tmp.glob("slidewise-job-*"))


def training_job(out: Path, epochs: int = 1000) -> tuple[str, dict, list[str]]:
    """A real mapping training on the shipped Bijie pairs: (job, params, outputs)."""
    model = str(out / "model.safetensors")
    params = {
        "TRAIN_IMAGES": str(BIJIE / "train" / "images"),
        "TRAIN_MASKS": str(BIJIE / "train" / "masks"),
        "MASK_COLOR": "255,255,0",
        "ENCODER": "resnet18",
        "ENCODER_DEPTH": 3,
        "EPOCHS": epochs,
        "CHIP_SIZE": 128,
        "BATCH_SIZE": 4,
        "OUTPUT": model,
    }
    return "trainmapping", params, [model]


def terrain_job(out: Path) -> tuple[str, dict, list[str]]:
    """A short real job: terrain factors of the shipped Ecuador DEM, in small blocks."""
    raster = str(out / "terrain.tif")
    params = {
        "INPUT": str(TEST_DATA / "ecuador" / "dem_10m.tif"),
        "BLOCK_SIZE": 64,
        "OUTPUT": raster,
    }
    return "terrainfactors", params, [raster]


def start_parent(
    job: tuple[str, dict, list[str]], engine_python: str, tmp: Path
) -> subprocess.Popen[str]:
    """Start this module as a parent that runs ``job``; its temporary folder is ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp), SLIDEWISE_PYTHON=engine_python)
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS_DIR), str(Path(__file__).parent)])
    return subprocess.Popen(
        [sys.executable, __file__, json.dumps(list(job))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_until(proc: subprocess.Popen[str], prefix: str, timeout: float = 120.0) -> str:
    """Read the parent's lines until one starts with ``prefix``; return that line."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"parent ended before '{prefix}' ({proc.wait()})")
        if line.startswith(prefix):
            return line.strip()
    raise AssertionError(f"no '{prefix}' from the parent after {timeout} s")


def _parent_main(spec: str) -> int:
    from slidewise.processing_provider import engine_client

    job, params, outputs = json.loads(spec)

    def say(text: str) -> None:
        print(text, flush=True)

    callbacks = engine_client.JobCallbacks(
        on_start=lambda pid: say(f"PID {pid}"),
        on_progress=lambda value: say(f"PROGRESS {value}"),
    )
    try:
        engine_client.run_job(job, params, callbacks=callbacks, outputs=outputs)
    except engine_client.EngineJobCancelled as exc:
        say(f"CANCELLED: {exc}")
        return 3
    except engine_client.EngineJobError as exc:
        say(f"ERROR: {exc}")
        return 1
    say("DONE")
    return 0


if __name__ == "__main__":
    sys.exit(_parent_main(sys.argv[1]))
