"""slidewise:checkengine: what the engine environment can do."""

from __future__ import annotations

from slidewise.contract.spec import AlgorithmSpec, Param

SPEC = AlgorithmSpec(
    "checkengine",
    (
        Param(
            "OUTPUT",
            "Report (JSON)",
            "output_file",
            "Optional file to save the full report to, as JSON.",
            file_filter="JSON (*.json)",
            create_by_default=False,
        ),
    ),
)
