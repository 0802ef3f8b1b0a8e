"""Readers of job parameters: numbers, whole numbers and switches, with clear messages.

Job parameters arrive as JSON values or as the strings Processing and
``qgis_process`` pass; an empty value means "the default". Each reader names
the parameter and the allowed range when a value is refused.
"""

from __future__ import annotations

import math
from typing import Any

from slidewise.engine.errors import InputError


def is_set(params: dict[str, Any], name: str) -> bool:
    """True when parameter ``name`` has a value (not missing, ``None`` or ``""``)."""
    return params.get(name) not in (None, "")


def to_bool(value: Any, name: str) -> bool:
    """Read a switch: a bool, or 1/0, true/false, yes/no, on/off (empty = false).

    Raises:
        InputError: any other value, naming the parameter.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise InputError(f"{name} must be true or false, got '{value}'.")


def number_param(params: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    """Read a number in ``[lo, hi]``; ``default`` when unset.

    Raises:
        InputError: not a number, NaN or out of range, naming the parameter and range.
    """
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got '{value}'.") from None
    if math.isnan(out) or not lo <= out <= hi:
        raise InputError(f"{name} must be between {lo:g} and {hi:g}, got {out:g}.")
    return out


def integer_param(params: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    """Read a whole number in ``[lo, hi]``; ``default`` when unset.

    Raises:
        InputError: not a whole number or out of range.
    """
    value = number_param(params, name, default, lo, hi)
    if value != int(value):
        raise InputError(f"{name} must be a whole number, got {value:g}.")
    return int(value)
