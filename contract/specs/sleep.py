"""sleep: an internal engine job that writes a file slowly (tests of cancellation).

It has no Processing algorithm: every parameter is hidden, set by tests and scripts.
"""

from __future__ import annotations

from slidewise.contract.spec import AlgorithmSpec, Param

SPEC = AlgorithmSpec(
    "sleep",
    (
        Param(
            "OUTPUT",
            "Output",
            "output_file",
            "Text file written line by line while the job runs.",
            required=True,
        ),
        Param(
            "SECONDS",
            "Duration",
            "float",
            "How long the job takes.",
            default=5.0,
            minimum=0.0,
            maximum=3600.0,
            unit="s",
        ),
    ),
    hidden=frozenset({"OUTPUT", "SECONDS"}),
)
