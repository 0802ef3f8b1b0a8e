"""Tests skipped because their real data is missing, counted and named in the summary.

Many tests read real data from ``../shared/data`` (or a folder of it) and skip when it
is absent, so a run on a fresh clone passes while running few real-data tests. The
summary says so: how many were skipped for missing data, and which, with their reason.
A skip counts as one for missing data when its reason says the data is "not
available", "not found" or "missing" (the wording every such skip uses); a tool that is
not installed is another kind of skip.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

#: Words of a skip reason that mean the test's data is absent.
MISSING_DATA = re.compile(r"not available|not found|missing", re.IGNORECASE)


def skip_reason(report: Any) -> str:
    """The reason of a skipped test's report (``Skipped: `` removed)."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def data_skips(reports: Iterable[Any]) -> list[tuple[str, str]]:
    """``(test id, reason)`` of every test skipped for missing data, in run order."""
    found = []
    for report in reports:
        reason = skip_reason(report)
        if MISSING_DATA.search(reason) and "installed" not in reason:
            found.append((report.nodeid, reason))
    return found


def terminal_summary(terminalreporter: Any) -> None:
    """Write the section: the count of tests skipped for missing data, then each one."""
    skipped = data_skips(terminalreporter.stats.get("skipped", []))
    if not skipped:
        return
    terminalreporter.section("real data missing", sep="=", yellow=True, bold=True)
    terminalreporter.write_line(
        f"{len(skipped)} test(s) skipped because their real data is missing "
        "(../shared/data, see its README.md): the run did not check what they cover."
    )
    for nodeid, reason in skipped:
        terminalreporter.write_line(f"SKIPPED {nodeid}: {reason}")
