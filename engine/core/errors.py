"""Errors that the engine reports to users."""

from __future__ import annotations


class EngineError(Exception):
    """A problem the user can act on.

    The message names what is wrong and how to fix it. The worker reports it as
    a protocol ``error`` message without a traceback.
    """


class InputError(EngineError):
    """An input file or parameter value is unusable."""


class ModelFileError(EngineError):
    """A model file is missing, corrupted or made for another task."""
