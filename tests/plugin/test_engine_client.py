"""The worker round trip from the plugin side: progress, cancel, crashes, bad engines."""

from __future__ import annotations

import os
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from process_helpers import (
    WORKER_END_S,
    alive,
    job_folders,
    leftovers,
    read_until,
    seconds_until_gone,
    start_parent,
    training_job,
    workers_of,
)

from slidewise.processing_provider import engine_client


def test_progress_and_result(engine_python: str, tmp_path: Path) -> None:
    seen: list[float] = []
    out = tmp_path / "slow.txt"
    outcome = engine_client.run_job(
        "sleep",
        {"OUTPUT": str(out), "SECONDS": 0.5},
        python=engine_python,
        callbacks=engine_client.JobCallbacks(on_progress=seen.append),
    )
    assert outcome.outputs == {"OUTPUT": str(out)}
    assert out.is_file()
    assert seen and seen[-1] == 100.0
    assert seen == sorted(seen)


def test_cancel_ends_worker_within_two_seconds_and_leaves_nothing(
    engine_python: str, tmp_path: Path
) -> None:
    out = tmp_path / "slow.txt"
    started: list[float] = []
    pids: list[int] = []

    def cancelled() -> bool:
        return bool(started) and time.monotonic() - started[0] > 0.0

    def on_progress(value: float) -> None:
        if value > 5 and not started:
            started.append(time.monotonic())

    logs: list[str] = []
    with pytest.raises(engine_client.EngineJobCancelled):
        engine_client.run_job(
            "sleep",
            {"OUTPUT": str(out), "SECONDS": 60},
            python=engine_python,
            callbacks=engine_client.JobCallbacks(
                on_progress=on_progress,
                is_cancelled=cancelled,
                on_log=lambda message, level: logs.append(message),
                on_start=pids.append,
            ),
            outputs=[str(out)],
        )
    assert time.monotonic() - started[0] < 2.0
    assert len(pids) == 1 and not alive(pids[0])
    assert list(tmp_path.iterdir()) == []
    # The log of a cancelled job never says it is done.
    assert not [line for line in logs if "job done" in line], logs
    assert any("job cancelled" in line for line in logs), logs


def _cancel_in_background(run: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors


def test_cancel_of_a_real_training_ends_its_worker_within_two_seconds(
    engine_python: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker itself (by pid) is gone within 2 s of the Cancel, not only run_job's return."""
    out, jobs = tmp_path / "out", tmp_path / "jobs"
    out.mkdir()
    jobs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(jobs))
    job, params, outputs = training_job(out)
    pids: list[int] = []
    training = threading.Event()
    cancel = threading.Event()
    callbacks = engine_client.JobCallbacks(
        on_start=pids.append,
        on_log=lambda message, level: training.set() if "Recipe" in message else None,
        is_cancelled=cancel.is_set,
    )
    thread, errors = _cancel_in_background(
        lambda: engine_client.run_job(
            job, params, python=engine_python, callbacks=callbacks, outputs=outputs
        )
    )
    try:
        assert training.wait(120), "the training never started"
        time.sleep(1.0)  # inside the epoch loop
        assert pids and alive(pids[0])
        cancel.set()
        gone = seconds_until_gone(pids, timeout=10)
        thread.join(10)
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    print(f"cancel: worker gone after {gone:.2f} s")
    assert gone <= WORKER_END_S, f"worker {pids[0]} outlived the cancel by {gone:.2f} s"
    assert errors and isinstance(errors[0], engine_client.EngineJobCancelled), errors
    assert leftovers(out) == [] and job_folders(jobs) == []


def test_sigkill_of_the_parent_ends_the_worker_within_two_seconds(
    engine_python: str, tmp_path: Path
) -> None:
    """A parent killed outright (no clean-up of its own): the worker ends by itself, and cleans."""
    out, jobs = tmp_path / "out", tmp_path / "jobs"
    out.mkdir()
    parent = start_parent(training_job(out), engine_python, jobs)
    try:
        worker = int(read_until(parent, "PID").split()[1])
        read_until(parent, "PROGRESS")
        time.sleep(3.0)  # reading chips, then training
        assert alive(worker)
        parent.kill()
        parent.wait(10)
        gone = seconds_until_gone([worker], timeout=10)
    finally:
        parent.kill()
        for pid in workers_of(parent.pid):
            os.kill(pid, signal.SIGKILL)
    print(f"parent SIGKILL: worker gone after {gone:.2f} s")
    assert gone <= WORKER_END_S, f"the orphan worker ran {gone:.2f} s after its parent died"
    assert leftovers(out) == [] and job_folders(jobs) == []


def test_killed_worker_becomes_clear_error_and_partials_are_removed(
    engine_python: str, tmp_path: Path
) -> None:
    out = tmp_path / "slow.txt"
    pids: list[int] = []

    def on_progress(value: float) -> None:
        if value > 5 and not pids:
            # Kill this test's own worker (a child of this process), as the OOM killer would.
            import subprocess

            found = subprocess.run(
                ["pgrep", "-P", str(os.getpid()), "-f", "slidewise.engine.worker"],
                capture_output=True,
                text=True,
            ).stdout.split()
            for pid in found:
                pids.append(int(pid))
                os.kill(int(pid), 9)

    with pytest.raises(engine_client.EngineJobError) as info:
        engine_client.run_job(
            "sleep",
            {"OUTPUT": str(out), "SECONDS": 30},
            python=engine_python,
            callbacks=engine_client.JobCallbacks(on_progress=on_progress),
            outputs=[str(out)],
        )
    assert "killed by signal 9" in str(info.value)
    assert "Nothing was written" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_engine_python_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(engine_client.EngineUnavailableError) as info:
        engine_client.run_job(
            "checkengine", {}, python=str(tmp_path / "nope" / "python"), origin="test"
        )
    message = str(info.value)
    assert "was not found" in message and "Set up engine" in message


def test_broken_engine_python_is_a_clear_error(tmp_path: Path) -> None:
    """An interpreter without the engine's packages (Debian's python3 has no torch)."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nexec /usr/bin/python3 -I -S "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(engine_client.EngineJobError) as info:
        engine_client.run_job("checkengine", {}, python=str(fake), origin="test")
    message = str(info.value)
    assert "Set up engine" in message
    assert "Traceback" not in message


def test_engine_user_error_is_relayed(engine_python: str, tmp_path: Path) -> None:
    with pytest.raises(engine_client.EngineJobError) as info:
        engine_client.run_job(
            "terrainfactors",
            {"INPUT": str(tmp_path / "missing.tif"), "OUTPUT": str(tmp_path / "out.tif")},
            python=engine_python,
        )
    assert "does not exist" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(engine_client.ENV_VAR, "/env/python")
    assert engine_client.engine_python("/setting/python") == (
        "/env/python",
        f"environment variable {engine_client.ENV_VAR}",
    )
    monkeypatch.delenv(engine_client.ENV_VAR)
    assert engine_client.engine_python("/setting/python")[0] == "/setting/python"
    assert engine_client.engine_python("")[0] == str(engine_client.default_engine_python())


def test_many_log_lines_do_not_deadlock(engine_python: str) -> None:
    """stdout and stderr are drained concurrently."""
    done = threading.Event()

    def run() -> None:
        engine_client.run_job("checkengine", {}, python=engine_python)
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(120)
    assert done.is_set()


def test_partials_of_a_killed_worker_are_removed(tmp_path: Path) -> None:
    """The plugin removes a partial file named by the engine's rule (one rule, in the contract)."""
    from slidewise.contract.partials import partial_path

    final = tmp_path / "out.tif"
    partial = partial_path(final)
    partial.write_text("x")
    engine_client.remove_partials(str(final))
    assert not partial.exists()


def test_output_completed_before_a_stop_without_its_result_is_removed(tmp_path: Path) -> None:
    """A stop after an output was renamed into place, before the manifest and result: no output.

    The fake worker does what the engine does up to that point (a whole output file,
    no manifest, no result yet) and then waits; the cancel must leave no orphan output,
    while a file the run did not write, and a checkpoint (whole after every epoch), stay.
    """
    out, kept = tmp_path / "done.tif", tmp_path / "kept.tif"
    kept.write_text("an earlier run's output, not replaced by this one")
    checkpoint = tmp_path / "epoch.safetensors"  # whole after every epoch: kept_on_stop
    worker = tmp_path / "python"
    worker.write_text(
        "#!/bin/sh\n"
        f"printf whole > '{checkpoint}'\n"
        f"printf whole > '{out}'\n"
        'echo \'{"type": "progress", "value": 99}\'\n'
        "exec sleep 30\n"
    )
    worker.chmod(worker.stat().st_mode | stat.S_IXUSR)
    callbacks = engine_client.JobCallbacks(
        on_progress=lambda value: None, is_cancelled=lambda: out.exists()
    )
    started = time.monotonic()
    with pytest.raises(engine_client.EngineJobCancelled):
        engine_client.run_job(
            "terrainfactors",
            {"OUTPUT": str(out)},
            python=str(worker),
            origin="test",
            callbacks=callbacks,
            outputs=[str(out), str(kept), str(checkpoint)],
            kept=[str(checkpoint)],
        )
    assert time.monotonic() - started < 10
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["epoch.safetensors", "kept.tif", "python"]


def test_cancel_after_the_result_is_too_late(tmp_path: Path) -> None:
    """A job that sent its result is done: a cancel then neither stops it nor hides it."""
    import json
    import subprocess
    import sys

    out = tmp_path / "done.txt"
    out.write_text("written")
    lines = [
        {"type": "progress", "value": 100},
        {"type": "result", "outputs": {"OUTPUT": str(out)}, "figures": {}},
        {"type": "log", "message": "after the result", "level": "info"},
    ]
    script = (
        "import sys, time\n"
        + "".join(f"print({json.dumps(json.dumps(line))}, flush=True)\n" for line in lines)
        + "time.sleep(0.5)\n"
        + "print('slidewise worker: job done after 0.50 s', file=sys.stderr)\n"
    )
    seen: list[str] = []
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    callbacks = engine_client.JobCallbacks(
        on_log=lambda message, level: seen.append(message),
        is_cancelled=lambda: "after the result" in seen,
    )
    try:
        run = engine_client.relay(proc, callbacks)
    finally:
        engine_client.close_worker(proc)
    assert not run.cancelled and run.code == 0
    assert "slidewise worker: job done after 0.50 s" in seen
    outcome = engine_client.finish(run, [str(out)], sys.executable, "test")
    assert outcome.outputs == {"OUTPUT": str(out)}
    assert out.read_text() == "written"


def test_ctrl_c_during_a_job_is_recorded_and_the_handlers_restored() -> None:
    """In the main thread SIGINT and SIGTERM only mark the run; the old handlers return."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with engine_client.stop_on_signals() as request:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # the first signal counts
        time.sleep(0.05)
    assert request.signum == signal.SIGINT
    assert {signum: signal.getsignal(signum) for signum in before} == before
