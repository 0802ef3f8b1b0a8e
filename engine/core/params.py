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
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from slidewise.contract.spec import OUTPUTS, AlgorithmSpec, ParameterError
from slidewise.contract.spec import read_params as read_spec
from slidewise.contract.specs.groups import OUTPUT_OPTION_NAMES
from slidewise.engine.core.errors import InputError

P = TypeVar("P", bound="JobParams")


def read_params(spec: AlgorithmSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Validated parameters of ``spec`` (defaults filled in).

    Raises:
        InputError: an unknown, missing or refused parameter, with the contract's message.
    """
    try:
        values = read_spec(spec, params)
    except ParameterError as exc:
        raise InputError(str(exc)) from None
    check_outputs_spare_inputs(spec, values)
    return values


#: Parameter kinds that name files the job reads.
INPUT_KINDS = (
    "file",
    "raster",
    "rasters",
    "vector",
    "points",
    "polygons",
    "points_or_polygons",
)


def check_outputs_spare_inputs(spec: AlgorithmSpec, values: dict[str, Any]) -> None:
    """Refuse an output that is one of the run's input files (it would overwrite it).

    Args:
        spec: The algorithm's specification (which parameters are inputs and outputs).
        values: Validated parameter values.

    Raises:
        InputError: naming the output, the input and the fix.
    """
    inputs = [
        (param.name, path)
        for param in spec.params
        if param.kind in INPUT_KINDS
        for path in _paths(values.get(param.name))
    ]
    for param in spec.params:
        if param.kind not in OUTPUTS or param.kind == "output_folder":
            continue
        for output in _paths(values.get(param.name)):
            for name, path in inputs:
                if _same_file(output, path):
                    raise InputError(
                        f"{param.name} is the input {name} ('{path}'): a run never "
                        f"overwrites its own input. Choose another file name for {param.name}."
                    )


def _paths(value: Any) -> list[str]:
    """File paths in a parameter value (a path, a list of paths; a layer suffix dropped)."""
    items = value if isinstance(value, list | tuple) else [value]
    return [str(v).split("|")[0] for v in items if isinstance(v, str | os.PathLike) and str(v)]


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name the same file (links and relative paths resolved)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


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
        return cls(
            **{
                field_name(name): value
                for name, value in values.items()
                if name not in OUTPUT_OPTION_NAMES  # the worker applies them
            }
        )


def field_name(name: str) -> str:
    """Dataclass field of parameter ``name``: lower case, ``_`` after a Python keyword."""
    lower = name.lower()
    return f"{lower}_" if keyword.iskeyword(lower) else lower
