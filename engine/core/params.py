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

from slidewise.contract.spec import AlgorithmSpec, ParameterError
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
