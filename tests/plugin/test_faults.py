"""Faults from outside: signals to qgis_process, kills of the worker or its parent.

Whatever ends a run, the engine worker is gone within 2 s, no partial output and
no job folder is left, the user reads what happened, and the next run succeeds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from plugin_helpers import QGIS_PROCESS
from process_helpers import (
    WORKER_END_S,
    alive,
    job_folders,
    leftovers,
    read_until,
    seconds_until_gone,
    start_parent,
    terrain_job,
    training_job,
    wait_for_worker,
    workers_of,
)

from slidewise.processing_provider.engine_client import (
    INTERRUPTED_MESSAGE,
    TERMINATED_AFTER_RESULT_MESSAGE,
    TERMINATED_MESSAGE,
)


def _kill_workers_of(parent: int) -> None:
    for pid in workers_of(parent):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("signum", "code", "message"),
    [
        (signal.SIGTERM, -signal.SIGTERM, TERMINATED_MESSAGE),
        (signal.SIGINT, 1, INTERRUPTED_MESSAGE),
    ],
    ids=["SIGTERM", "SIGINT"],
)
def test_signal_to_qgis_process_stops_a_real_job_cleanly(
    qgis_process_env: dict[str, str], tmp_path: Path, signum: int, code: int, message: str
) -> None:
    """SIGTERM (a scheduler, ``timeout``) ends the run; SIGINT (Ctrl-C) cancels it."""
    out, jobs = tmp_path / "out", tmp_path / "jobs"
    out.mkdir()
    jobs.mkdir()
    _, params, _ = training_job(out)
    args = [f"{name}={value}" for name, value in params.items()]
    proc = subprocess.Popen(
        [QGIS_PROCESS, "run", "slidewise:trainmapping", "--", *args],
        env=dict(qgis_process_env, TMPDIR=str(jobs)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        worker = wait_for_worker(proc.pid, timeout=120)
        time.sleep(4.0)  # past reading the chips, into the epochs
        assert proc.poll() is None and alive(worker)
        proc.send_signal(signum)
        sent = time.monotonic()
        gone = seconds_until_gone([worker], timeout=10)
        stdout, stderr = proc.communicate(timeout=30)
        ended = time.monotonic() - sent
    finally:
        proc.kill()
        _kill_workers_of(proc.pid)
    print(f"{signum!r}: worker gone after {gone:.2f} s, qgis_process after {ended:.2f} s")
    assert gone <= WORKER_END_S, f"worker outlived {signum!r} by {gone:.2f} s"
    assert ended <= 5.0, f"qgis_process took {ended:.2f} s to end"
    assert proc.returncode == code, (proc.returncode, stderr[-2000:])
    assert message in stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert leftovers(out) == []
    assert job_folders(jobs) == []


@dataclass(frozen=True)
class Fault:
    """One injected fault: whom to signal, with what, after how many seconds."""

    target: str  # "worker" or "parent"
    signum: int
    delay: float


def _inject(fault: Fault, parent: subprocess.Popen[str], worker: int) -> float:
    """Send the fault's signal; return the time it was sent."""
    time.sleep(fault.delay)
    sent = time.monotonic()
    try:
        os.kill(worker if fault.target == "worker" else parent.pid, fault.signum)
    except ProcessLookupError:  # the job was done already
        pass
    return sent


def _check_message(fault: Fault, code: int, stdout: str, stderr: str, whole: bool) -> None:
    """The user (or the scheduler) can tell what happened to a run that did not finish.

    ``whole``: the job's outputs were complete when the signal came (the worker had sent
    its result but the parent had not said DONE yet).
    """
    if fault.target == "worker":
        assert code == 1 and "killed by signal 9" in stdout and "Nothing was written" in stdout
    elif fault.signum == signal.SIGTERM:
        message = TERMINATED_AFTER_RESULT_MESSAGE if whole else TERMINATED_MESSAGE
        assert code == -signal.SIGTERM and message in stderr
    elif fault.signum == signal.SIGINT:
        assert code == 3 and INTERRUPTED_MESSAGE in stdout
    else:  # SIGKILL of the parent: nobody is left to speak; the status says it
        assert code == -signal.SIGKILL
    assert "Traceback" not in stdout + stderr


def _run_with_fault(fault: Fault, engine_python: str, out: Path, jobs: Path) -> bool:
    """Run the short job with ``fault``; check what it leaves; return whether it finished."""
    job = terrain_job(out)
    parent = start_parent(job, engine_python, jobs)
    try:
        worker = int(read_until(parent, "PID").split()[1])
        sent = _inject(fault, parent, worker)
        gone = seconds_until_gone([worker], timeout=10)
        stdout, stderr = parent.communicate(timeout=60)
    finally:
        parent.kill()
        _kill_workers_of(parent.pid)
    where = f"{fault} (worker gone after {gone:.2f} s)"
    assert time.monotonic() - sent < 30 and gone <= WORKER_END_S, where
    assert job_folders(jobs) == [], where
    finished = "DONE" in stdout
    written = leftovers(out)
    if finished:  # the fault came too late: the outputs are whole
        assert written == ["terrain.manifest.json", "terrain.tif"], where
    else:
        assert [name for name in written if ".partial-" in name] == [], (where, written)
        assert "terrain.tif" not in written or "terrain.manifest.json" in written, where
        whole = written == ["terrain.manifest.json", "terrain.tif"]
        _check_message(fault, parent.returncode, stdout, stderr, whole)
    print(f"{fault}: {'finished first' if finished else 'stopped'}, worker gone in {gone:.2f} s")
    return finished


@pytest.mark.slow
def test_faults_at_random_points_leave_no_orphan_and_no_partial(
    engine_python: str, tmp_path: Path
) -> None:
    """Kill the worker or its parent at random (seeded) points of a short real job."""
    rng = random.Random(15)
    out, jobs = tmp_path / "out", tmp_path / "jobs"
    out.mkdir()
    kinds = [
        ("worker", signal.SIGKILL),
        ("parent", signal.SIGKILL),
        ("parent", signal.SIGTERM),
        ("parent", signal.SIGINT),
    ] * 2
    rng.shuffle(kinds)
    started = time.monotonic()
    stopped = 0
    for target, signum in kinds:
        fault = Fault(target, signum, round(rng.uniform(0.0, 2.5), 2))
        stopped += not _run_with_fault(fault, engine_python, out, jobs)
        for leftover in out.iterdir():  # whole outputs of a run that finished first
            leftover.unlink()
    assert stopped >= len(kinds) // 2, "the faults came too late to test anything"
    # The next run succeeds.
    parent = start_parent(terrain_job(out), engine_python, jobs)
    stdout, _ = parent.communicate(timeout=120)
    assert parent.returncode == 0 and "DONE" in stdout
    assert leftovers(out) == ["terrain.manifest.json", "terrain.tif"]
    assert job_folders(jobs) == []
    assert time.monotonic() - started < 90


def test_kill_9_of_a_training_with_a_checkpoint_says_how_to_resume(
    engine_python: str, tmp_path: Path
) -> None:
    """kill -9 of the worker mid-training: the message names the checkpoint that remains
    and how to resume (RESUME=true, same command)."""
    from slidewise.contract.checkpoints import checkpoint_epochs

    out, jobs = tmp_path / "out", tmp_path / "jobs"
    out.mkdir()
    job, params, outputs = training_job(out)
    checkpoint = tmp_path / "checkpoint.safetensors"
    for name in ("ENCODER", "ENCODER_DEPTH"):
        params.pop(name)
    tiny = {"widths": [8, 16, 32], "residual": False, "deep_supervision": False}
    params.update(
        ARCHITECTURE="resunet",
        MODEL_OPTIONS=json.dumps(tiny),
        CHIP_SIZE=64,
        CHIPS_PER_EPOCH=4,
        CHECKPOINT=str(checkpoint),
    )
    parent = start_parent((job, params, outputs), engine_python, jobs)
    try:
        worker = int(read_until(parent, "PID").split()[1])
        deadline = time.monotonic() + 120
        while checkpoint_epochs(checkpoint) is None and time.monotonic() < deadline:
            if parent.poll() is not None:
                break
            time.sleep(0.05)
        assert parent.poll() is None, parent.communicate()
        os.kill(worker, signal.SIGKILL)
        stdout, _ = parent.communicate(timeout=60)
    finally:
        parent.kill()
        _kill_workers_of(parent.pid)
    epochs = checkpoint_epochs(checkpoint)
    assert epochs is not None and epochs >= 1
    assert "killed by signal 9" in stdout and "Traceback" not in stdout
    assert f"The checkpoint '{checkpoint}' remains, with {epochs} epoch(s) done" in stdout
    assert "run the same command again with RESUME=true" in stdout
    assert "tick 'Resume from checkpoint'" in stdout
    assert leftovers(out) == [] and job_folders(jobs) == []

    # That resuming works is tested in the engine (test_mapping_train.py, checkpoint resume).
