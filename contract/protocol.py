"""The JSON-lines protocol between the plugin and an engine worker: the parser.

Every line the worker writes on its protocol stream is one JSON object with a
``type`` field:

* ``{"type": "progress", "value": 0..100}``
* ``{"type": "log", "message": str, "level": "info" | "warning"}``
* ``{"type": "result", "outputs": {name: path}, "figures": {name: value}, ...}``
* ``{"type": "error", "message": str, "kind": "input" | "model" | "internal"}``

The engine writes them (``slidewise.engine.core.protocol.Reporter``); the plugin
and the engine's own tests read them with :func:`parse_line`.
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1


def parse_line(line: str) -> dict[str, Any] | None:
    """Parse one protocol line; ``None`` if it is not a protocol message."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        message = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(message, dict) or "type" not in message:
        return None
    return message
