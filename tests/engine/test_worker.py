"""Tests of the engine worker, run as a real subprocess speaking the JSON-lines protocol."""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import torch

from slidewise.contract.partials import manifest_path, partial_glob, remove_partials
from slidewise.contract.protocol import parse_line

WORKER = [sys.executable, "-m", "slidewise.engine.worker"]
TYPES = {"progress", "log", "result", "error"}

# Test jobs, registered in the catalogue by a launcher that then runs the worker's main().
TEST_JOBS = textwrap.dedent(
    """
    import ctypes
    import os
    import shutil

    from slidewise.contract.spec import AlgorithmSpec, Param
    from slidewise.engine.core.job import JobResult
    from slidewise.engine.core.outputs import atomic_output
    from slidewise.engine.core.params import read_params

    COPY = AlgorithmSpec(
        "copy",
        (
            Param("INPUT", "Input", "file", "File to copy.", required=True),
            Param("OUTPUT", "Output", "output_file", "Copy.", required=True),
        ),
    )

    def copy(params, ctx):
        read_params(COPY, params)
        # Libraries that print must not corrupt the protocol.
        print("noise: print() from a library")
        os.write(1, b"noise: os.write to fd 1\\n")
        libc = ctypes.CDLL(None)
        libc.printf(b"noise: printf from C\\n")
        libc.fflush(None)
        ctx.progress(50)
        ctx.log("copying")
        ctx.warn("careful")
        with atomic_output(params["OUTPUT"]) as tmp:
            shutil.copyfile(params["INPUT"], tmp)
        size = os.path.getsize(params["OUTPUT"])
        return JobResult(
            outputs={"OUTPUT": params["OUTPUT"]},
            inputs=[params["INPUT"]],
            figures={"bytes": size, "not_a_number": float("nan")},
        )

    def boom(params, ctx):
        ctx.log("about to fail")
        return {}["missing"]

    def warn(params, ctx):
        import warnings

        import numpy as np
        from rasterio.errors import NotGeoreferencedWarning
        from sklearn.linear_model import LogisticRegression

        warnings.warn("first line\\n   second   line", UserWarning)
        warnings.warn("Dataset has no geotransform.", NotGeoreferencedWarning)
        rng = np.random.default_rng(0)
        LogisticRegression(max_iter=1).fit(rng.normal(size=(40, 3)), np.arange(40) % 2)
        return JobResult(figures={"warned": 3})
    """
)
LAUNCHER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from slidewise.engine import jobs
    jobs.JOBS["testcopy"] = "sw_test_jobs:copy"
    jobs.JOBS["testboom"] = "sw_test_jobs:boom"
    jobs.JOBS["testwarn"] = "sw_test_jobs:warn"
    from slidewise.engine.worker import main
    sys.exit(main(sys.argv[2:]))
    """
)


def _messages(stdout: str) -> list[dict[str, Any]]:
    """Every line of the protocol stream must be one JSON protocol message."""
    messages = []
    for line in stdout.splitlines():
        message = json.loads(line)  # raises on any non-JSON line
        assert parse_line(line) == message
        assert message["type"] in TYPES, message
        messages.append(message)
    return messages


def _job_file(tmp_path: Path, job: dict[str, Any], name: str = "job.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(job))
    return path


def _run(
    tmp_path: Path, job: dict[str, Any], test_jobs: bool = False, timeout: float = 120
) -> tuple[int, list[dict[str, Any]], str]:
    job_path = _job_file(tmp_path, job)
    if test_jobs:
        (tmp_path / "sw_test_jobs.py").write_text(TEST_JOBS)
        command = [sys.executable, "-c", LAUNCHER, str(tmp_path), str(job_path)]
    else:
        command = [*WORKER, str(job_path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    return proc.returncode, _messages(proc.stdout), proc.stderr


def _start_sleep(tmp_path: Path, output: Path, seconds: float = 60) -> subprocess.Popen[str]:
    job_path = _job_file(
        tmp_path, {"job": "sleep", "params": {"OUTPUT": str(output), "SECONDS": seconds}}
    )
    proc = subprocess.Popen(
        [*WORKER, str(job_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    # The first progress message: the SIGTERM handler is installed and the
    # temporary output is open and being written.
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    assert ready, "the worker did not start within 60 s"
    first = json.loads(proc.stdout.readline())
    assert first == {"type": "progress", "value": 0.0}
    assert len(list(output.parent.glob(partial_glob(output)))) == 1
    return proc


def test_sleep_job_success(tmp_path: Path) -> None:
    output = tmp_path / "slept.txt"
    code, messages, _ = _run(
        tmp_path, {"job": "sleep", "params": {"OUTPUT": str(output), "SECONDS": 0.3}}
    )
    assert code == 0
    assert messages[-1] == {
        "type": "result",
        "outputs": {"OUTPUT": str(output)},
        "figures": {},
    }
    values = [m["value"] for m in messages if m["type"] == "progress"]
    assert values == sorted(values) and values[-1] == 100
    assert output.read_text().splitlines()[-1] == "2"
    assert not list(tmp_path.glob(partial_glob(output)))
    assert not manifest_path(output).exists()  # the sleep job asks for no manifest


def test_sigterm_cancels_within_two_seconds_and_cleans_up(tmp_path: Path) -> None:
    output = tmp_path / "cancelled.txt"
    proc = _start_sleep(tmp_path, output)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=2)
    elapsed = time.monotonic() - started
    assert proc.returncode == 3, stderr
    assert elapsed < 2.0
    assert all(m["type"] == "progress" for m in _messages(stdout))  # no result, no error
    assert not output.exists()
    assert not list(tmp_path.glob(partial_glob(output)))
    assert "job done" not in stderr
    assert "slidewise worker: job cancelled after" in stderr


def test_library_warnings_become_one_clean_log_line_each(tmp_path: Path) -> None:
    """rasterio, sklearn and plain warnings: 'warning: <category>: <message>', no source."""
    code, messages, stderr = _run(tmp_path, {"job": "testwarn"}, test_jobs=True)
    assert code == 0, stderr
    logs = [m["message"] for m in messages if m["type"] == "log"]
    assert "warning: UserWarning: first line second line" in logs
    assert "warning: NotGeoreferencedWarning: Dataset has no geotransform." in logs
    convergence = [line for line in logs if line.startswith("warning: ConvergenceWarning: ")]
    assert len(convergence) == 1 and "\n" not in convergence[0]
    assert "Warning" not in stderr, stderr  # nothing about them on stderr either
    assert "sw_test_jobs.py" not in stderr and "warnings.warn(" not in stderr
    assert "slidewise worker: job done after" in stderr


def test_sigkill_leaves_a_partial_that_remove_partials_cleans(tmp_path: Path) -> None:
    output = tmp_path / "killed.txt"
    proc = _start_sleep(tmp_path, output)
    proc.kill()
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    leftovers = list(tmp_path.glob(partial_glob(output)))
    assert len(leftovers) == 1 and not output.exists()
    assert remove_partials(output) == leftovers
    assert not list(tmp_path.glob(partial_glob(output)))


def test_printing_libraries_do_not_corrupt_the_protocol(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import ctypes, os
        from slidewise.engine.core.protocol import Reporter
        from slidewise.engine.worker import protocol_stream
        reporter = Reporter(protocol_stream())
        print("noise: print")
        os.write(1, b"noise: fd 1\\n")
        libc = ctypes.CDLL(None)
        libc.printf(b"noise: printf\\n")
        libc.fflush(None)
        reporter.log("hello")
        reporter.progress(12.5)
        reporter.result({"outputs": {}, "figures": {"x": float("inf")}})
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert _messages(proc.stdout) == [
        {"type": "log", "message": "hello", "level": "info"},
        {"type": "progress", "value": 12.5},
        {"type": "result", "outputs": {}, "figures": {"x": None}},
    ]
    for noise in ("noise: print", "noise: fd 1", "noise: printf"):
        assert noise in proc.stderr


def test_job_with_output_writes_manifest_and_clean_protocol(tmp_path: Path) -> None:
    source = tmp_path / "input.bin"
    source.write_bytes(os.urandom(50_000))
    output = tmp_path / "copy.bin"
    params = {"INPUT": str(source), "OUTPUT": str(output)}
    code, messages, stderr = _run(
        tmp_path,
        {"job": "testcopy", "params": params, "options": {"seed": 7, "device": "cpu"}},
        test_jobs=True,
    )
    assert code == 0, stderr
    assert [m["type"] for m in messages] == ["progress", "log", "log", "progress", "result"]
    assert messages[2] == {"type": "log", "message": "careful", "level": "warning"}
    for noise in ("print() from a library", "os.write to fd 1", "printf from C"):
        assert noise in stderr
    result = messages[-1]
    assert result["outputs"] == {"OUTPUT": str(output)}
    assert result["figures"] == {"bytes": 50_000, "not_a_number": None}
    assert output.read_bytes() == source.read_bytes()

    record_path = manifest_path(output)
    assert result["manifest"] == str(record_path)
    record = json.loads(record_path.read_text())
    assert record["algorithm"] == "slidewise:testcopy"
    assert record["parameters"] == params
    assert record["inputs"] == {str(source): hashlib.sha256(source.read_bytes()).hexdigest()}
    assert record["outputs"] == {"OUTPUT": str(output)}
    assert record["seed"] == 7 and record["device"] == "cpu"
    assert record["packages"]["numpy"] == metadata.version("numpy")
    assert record["packages"]["rasterio"] == metadata.version("rasterio")
    assert record["packages"]["torch"] == metadata.version("torch")
    assert isinstance(record["duration_s"], float) and 0 <= record["duration_s"] < 60
    assert time.strptime(record["started_utc"], "%Y-%m-%dT%H:%M:%SZ")
    assert record["figures"]["not_a_number"] is None


def test_internal_exception_exits_2(tmp_path: Path) -> None:
    code, messages, stderr = _run(tmp_path, {"job": "testboom"}, test_jobs=True)
    assert code == 2
    assert messages[0] == {"type": "log", "message": "about to fail", "level": "info"}
    error = messages[-1]
    assert error["type"] == "error" and error["kind"] == "internal"
    assert error["message"].startswith("Internal engine error (KeyError: 'missing')")
    assert "Traceback" in stderr


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ({"job": "nosuchjob"}, "Unknown engine job 'nosuchjob': known jobs are "),
        (
            {"job": "sleep", "params": {"OUTPUT": "x.txt", "FOO": 1}},
            "Unknown parameter(s) FOO: this job takes OUTPUT, SECONDS.",
        ),
        (
            {"job": "sleep", "params": {"OUTPUT": "x.txt", "SECONDS": -1}},
            "SECONDS must be between 0 and 3600, got -1.",
        ),
        ({"job": "sleep", "params": {"SECONDS": 1}}, "Missing required parameter(s): OUTPUT."),
        (
            {"job": "checkengine", "params": {"OUTPUT": "x.txt", "FOO": 1}},
            "Unknown parameter(s) FOO: this job takes OUTPUT.",
        ),
        (
            {"job": "sleep", "params": {"OUTPUT": "x.txt"}, "options": {"device": "tpu"}},
            "Unknown device 'tpu': use one of auto, cpu, cuda, mps.",
        ),
        (
            {"job": "sleep", "params": {"OUTPUT": "x.txt"}, "options": {"colour": "red"}},
            "Unknown runtime option(s) ['colour']",
        ),
    ],
)
def test_user_errors_exit_1_with_one_error_message(
    tmp_path: Path, job: dict[str, Any], expected: str
) -> None:
    code, messages, _ = _run(tmp_path, job)
    assert code == 1
    assert len(messages) == 1
    error = messages[0]
    assert error["type"] == "error" and error["kind"] == "input"
    assert error["message"].startswith(expected)
    assert not (tmp_path / "x.txt").exists()


def test_job_on_stdin_and_unreadable_job_file(tmp_path: Path) -> None:
    proc = subprocess.run(
        WORKER,
        input=json.dumps({"job": "nosuchjob"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "Unknown engine job 'nosuchjob'" in _messages(proc.stdout)[0]["message"]

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = subprocess.run(
        [*WORKER, str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    (error,) = _messages(proc.stdout)
    assert error["message"].startswith("Could not read the job description")


def test_checkengine_reports_cpu_and_versions(tmp_path: Path) -> None:
    code, messages, stderr = _run(tmp_path, {"job": "checkengine", "options": {"device": "cpu"}})
    assert code == 0, stderr
    result = messages[-1]
    assert result["type"] == "result" and "manifest" not in result
    figures = result["figures"]
    # The job was asked for the CPU; whether CUDA exists depends on the machine.
    assert figures["device"] == "cpu"
    assert figures["cuda_available"] is torch.cuda.is_available()
    assert figures["python"] == sys.executable
    assert figures["packages"]["torch"] == metadata.version("torch")
    assert figures["packages"]["safetensors"] == metadata.version("safetensors")
    logs = [m["message"] for m in messages if m["type"] == "log"]
    assert "device: cpu" in logs


def test_checkengine_saves_the_report_as_json(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    code, messages, stderr = _run(
        tmp_path,
        {"job": "checkengine", "params": {"OUTPUT": str(report)}, "options": {"device": "cpu"}},
    )
    assert code == 0, stderr
    result = messages[-1]
    assert result["outputs"] == {"OUTPUT": str(report)} and "manifest" not in result
    assert json.loads(report.read_text(encoding="utf-8")) == result["figures"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.json", "report.json"]


BIJIE = Path(__file__).resolve().parents[1] / "data" / "bijie" / "train"


def _start_watched(
    tmp_path: Path, job: dict[str, Any], parent: int | None = None
) -> tuple[subprocess.Popen[str], Path]:
    """Start the worker as the engine client does: a job folder, a parent pid, a stdin pipe."""
    folder = tmp_path / "slidewise-job-test"
    folder.mkdir()
    job_path = _job_file(folder, job)
    env = dict(os.environ, SLIDEWISE_PARENT_PID=str(parent or os.getpid()))
    proc = subprocess.Popen(
        [*WORKER, str(job_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return proc, folder


def _training(output: Path) -> dict[str, Any]:
    """A real mapping training on the shipped Bijie pairs, far too long to end by itself."""
    params = {
        "TRAIN_IMAGES": str(BIJIE / "images"),
        "TRAIN_MASKS": str(BIJIE / "masks"),
        "MASK_COLOR": "255,255,0",
        "ENCODER": "resnet18",
        "ENCODER_DEPTH": 3,
        "EPOCHS": 1000,
        "CHIP_SIZE": 128,
        "BATCH_SIZE": 4,
        "OUTPUT": str(output),
    }
    return {"job": "trainmapping", "params": params, "outputs": [str(output)]}


def _wait_for_training(proc: subprocess.Popen[str]) -> None:
    """Read the protocol until the training loop runs (its recipe line, then a second)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, f"the worker ended early: {proc.wait()} {proc.stderr.read()[-2000:]}"
        if "Recipe" in line:
            time.sleep(1.0)
            return
    raise AssertionError("the training did not start within 120 s")


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT", "closed stdin"])
def test_a_real_training_stops_within_two_seconds_and_leaves_nothing(
    tmp_path: Path, stop: str
) -> None:
    """SIGTERM (Cancel, the parent's death), SIGINT and the parent's pipe closing all cancel."""
    output = tmp_path / "model.safetensors"
    proc, folder = _start_watched(tmp_path, _training(output))
    try:
        _wait_for_training(proc)
        started = time.monotonic()
        if stop == "closed stdin":
            assert proc.stdin is not None
            proc.stdin.close()
        else:
            proc.send_signal(getattr(signal, stop))
        proc.wait(timeout=5)
        elapsed = time.monotonic() - started
    finally:
        proc.kill()
    assert proc.returncode == 3, proc.stderr.read()[-2000:] if proc.stderr else ""
    assert elapsed < 2.0, f"the worker took {elapsed:.2f} s to stop"
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "partial or job folder left"
    assert not folder.exists()


def test_a_worker_whose_parent_is_already_gone_cancels_at_once(tmp_path: Path) -> None:
    """The parent died before the worker could ask the kernel for SIGTERM: the ppid tells."""
    output = tmp_path / "never.txt"
    job = {"job": "sleep", "params": {"OUTPUT": str(output), "SECONDS": 60}}
    gone_parent = os.getpid() + 1_000_000  # no such process: this worker's ppid differs
    proc, folder = _start_watched(tmp_path, job, parent=gone_parent)
    try:
        _, stderr = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 3, stderr
    assert "job cancelled" in stderr
    assert not output.exists() and not list(tmp_path.glob(partial_glob(output)))
    assert not folder.exists()


def test_a_worker_started_by_hand_keeps_its_job_file(tmp_path: Path) -> None:
    """Without SLIDEWISE_PARENT_PID nothing watches the worker and the user's job file stays."""
    folder = tmp_path / "slidewise-job-mine"
    folder.mkdir()
    output = tmp_path / "slept.txt"
    job_path = _job_file(
        folder, {"job": "sleep", "params": {"OUTPUT": str(output), "SECONDS": 0.1}}
    )
    env = {k: v for k, v in os.environ.items() if k != "SLIDEWISE_PARENT_PID"}
    proc = subprocess.run(
        [*WORKER, str(job_path)], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert job_path.is_file() and output.is_file()


def test_the_worker_watches_its_parent_before_importing_torch() -> None:
    """Importing PyTorch takes seconds on a loaded machine: the lifeline must not wait for it.

    The worker module (and what it imports up to the job) stays free of torch, so the
    parent's death is noticed within the 2 s the plugin promises even during start-up.
    """
    code = "import sys, slidewise.engine.worker; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
