"""Job parameters read against the algorithm's specification in :mod:`slidewise.contract`.

Each job declares a dataclass ``<Job>Params(JobParams)`` whose fields are the
lower-case names of its specification's parameters; ``from_params`` validates
the raw job parameters (JSON values or the strings ``qgis_process`` passes)
with the contract's readers, so the engine and the Processing dialog refuse
the same values with the same message.
"""

from __future__ import annotations

import dataclasses
import keyword
from typing import Any, ClassVar, TypeVar

from slidewise.contract.spec import AlgorithmSpec, Param, ParameterError, is_unset
from slidewise.contract.spec import read_params as read_spec
from slidewise.engine.core.errors import InputError

P = TypeVar("P", bound="JobParams")


def read_params(spec: AlgorithmSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Validated parameters of ``spec`` (defaults filled in).

    Raises:
        InputError: an unknown, missing or refused parameter, with the contract's message.
    """
    try:
        return read_spec(spec, params)
    except ParameterError as exc:
        raise InputError(str(exc)) from None


@dataclasses.dataclass(frozen=True)
class JobParams:
    """Base of every job's parameter dataclass.

    Subclasses set ``SPEC`` and declare one field per parameter of it, named in
    lower case (``TILE_SIZE`` -> ``tile_size``; a Python keyword gets a trailing
    underscore: ``LAMBDA`` -> ``lambda_``).
    """

    SPEC: ClassVar[AlgorithmSpec]

    @classmethod
    def from_params(cls: type[P], params: dict[str, Any]) -> P:
        """Validate raw job parameters and build the dataclass.

        Raises:
            InputError: a parameter is unknown, missing or refused.
        """
        values = read_params(cls.SPEC, params)
        return cls(**{field_name(name): value for name, value in values.items()})


def field_name(name: str) -> str:
    """Dataclass field of parameter ``name``: lower case, ``_`` after a Python keyword."""
    lower = name.lower()
    return f"{lower}_" if keyword.iskeyword(lower) else lower


def is_set(params: dict[str, Any], name: str) -> bool:
    """True when parameter ``name`` has a value (not missing, ``None``, ``""`` or ``[]``)."""
    return not is_unset(params.get(name))


def to_bool(value: Any, name: str) -> bool:
    """Read a switch: a bool, or 1/0, true/false, yes/no, on/off (empty = false).

    Raises:
        InputError: any other value, naming the parameter.
    """
    if is_unset(value):
        return False
    return _read(Param(name, name, "bool", ""), value)


def number_param(params: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    """Read a number in ``[lo, hi]``; ``default`` when unset.

    Raises:
        InputError: not a number, NaN or out of range, naming the parameter and range.
    """
    value = params.get(name)
    if is_unset(value):
        return default
    return _read(Param(name, name, "float", "", minimum=lo, maximum=hi), value)


def integer_param(params: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    """Read a whole number in ``[lo, hi]``; ``default`` when unset.

    Raises:
        InputError: not a whole number or out of range.
    """
    value = params.get(name)
    if is_unset(value):
        return default
    return _read(Param(name, name, "int", "", minimum=lo, maximum=hi), value)


def _read(param: Param, value: Any) -> Any:
    try:
        return param.read(value)
    except ParameterError as exc:
        raise InputError(str(exc)) from None
