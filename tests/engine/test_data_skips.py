"""The summary counts and names the tests skipped for missing real data (tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine_helpers import REPO

SAMPLE = """
import pytest

def test_runs():
    pass

def test_needs_region():
    pytest.skip("shared data not available")

@pytest.mark.skipif(True, reason="Bijie pairs not available")
def test_needs_pairs():
    pass

def test_needs_tool():
    pytest.skip("gdaldem (package gdal-bin) is not installed")
"""


def test_summary_names_the_tests_skipped_for_missing_data(tmp_path: Path) -> None:
    folder = REPO / "tests" / "engine" / f"_tmp_skips_{tmp_path.name}"
    folder.mkdir()
    try:
        (folder / "test_sample.py").write_text(SAMPLE)
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", str(folder), "-q", "-p", "no:cacheprovider"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    out = proc.stdout
    assert proc.returncode == 0, out
    assert "2 test(s) skipped because their real data is missing" in out, out
    assert "test_sample.py::test_needs_region: shared data not available" in out
    assert "test_sample.py::test_needs_pairs: Bijie pairs not available" in out
    assert "test_needs_tool" not in out.split("real data missing")[1]
