"""The JSON-lines protocol between the plugin and an engine worker.

Every line the worker writes on its protocol stream is one JSON object with a
``type`` field:

* ``{"type": "progress", "value": 0..100}``
* ``{"type": "log", "message": str, "level": "info" | "warning"}``
* ``{"type": "result", "outputs": {name: path}, "figures": {name: value}, ...}``
* ``{"type": "error", "message": str, "kind": "input" | "model" | "internal"}``

Both sides parse them with :func:`slidewise.contract.protocol.parse_line`.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from typing import IO, Any


def json_safe(value: Any) -> Any:
    """Make ``value`` JSON-safe (NaN and infinities become ``None``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return json_safe(value.item())
        except (TypeError, ValueError):
            pass
    if hasattr(value, "__fspath__"):
        return str(value)
    return value


@dataclass
class Reporter:
    """Writes protocol messages to a stream, one JSON object per line.

    Args:
        stream: Text stream opened for writing (the worker's protocol stream).
    """

    stream: IO[str]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _last_progress: float = field(default=-1.0, repr=False)

    def send(self, message: dict[str, Any]) -> None:
        """Write one message and flush."""
        line = json.dumps(json_safe(message), allow_nan=False)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def progress(self, value: float) -> None:
        """Report progress in percent; repeated equal values are skipped."""
        value = float(min(100.0, max(0.0, value)))
        if abs(value - self._last_progress) < 0.1:
            return
        self._last_progress = value
        self.send({"type": "progress", "value": round(value, 2)})

    def log(self, message: str, level: str = "info") -> None:
        """Send a log line."""
        self.send({"type": "log", "message": str(message), "level": level})

    def result(self, payload: dict[str, Any]) -> None:
        """Send the final result."""
        self.send({"type": "result", **payload})

    def error(self, message: str, kind: str = "input") -> None:
        """Send an error a user can act on."""
        self.send({"type": "error", "message": str(message), "kind": kind})
