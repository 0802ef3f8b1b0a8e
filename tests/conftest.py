"""For every test run under ``tests/``: the summary names the tests skipped because
their real data is missing (:mod:`data_skips`)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import data_skips


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Count and name the tests skipped for missing real data."""
    data_skips.terminal_summary(terminalreporter)
