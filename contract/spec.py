"""Parameter specifications: each algorithm's parameters declared once, read the same way.

A :class:`Param` holds everything about one parameter: name, kind, default,
range or choices, unit, help text and whether it is advanced. The Processing
algorithms build their ``QgsProcessingParameter*`` declarations and help from
it; the engine reads and validates job parameters with :func:`read_params`.
Both sides therefore refuse the same values with the same message, for
example ``TILE_SIZE must be between 32 and 8192, got 0.``

Standard library only: the plugin imports this without the engine's packages.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Kinds of parameter. Values a job receives:
#: ``int``/``float`` numbers, ``bool`` switches, ``text`` strings, ``choice`` one of
#: ``choices``, ``names`` a list of strings (comma-separated text), ``numbers`` a list of
#: floats; ``file``/``folder``/``raster``/``vector``/``points``/``polygons``/
#: ``points_or_polygons`` an input path;
#: ``rasters`` a list of paths; ``field`` a field name of the layer ``parent``;
#: ``output_*`` a path the job writes; ``connection`` the name of a database connection
#: saved in QGIS (of the data provider ``provider``) and ``schema`` a schema of the
#: connection ``parent``: both only for parameters the QGIS side uses itself
#: (:attr:`AlgorithmSpec.in_qgis`).
KINDS = (
    "int",
    "float",
    "bool",
    "text",
    "choice",
    "names",
    "numbers",
    "file",
    "folder",
    "raster",
    "rasters",
    "vector",
    "points",
    "polygons",
    "points_or_polygons",
    "field",
    "output_raster",
    "output_vector",
    "output_file",
    "output_folder",
    "connection",
    "schema",
)
NUMERIC = ("int", "float")
LISTS = ("names", "numbers", "rasters")
OUTPUTS = ("output_raster", "output_vector", "output_file", "output_folder")
#: Kinds only the QGIS side can read (never sent to the engine job).
QGIS_ONLY_KINDS = ("connection", "schema")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class ParameterError(ValueError):
    """A job parameter was refused; the message names it, the value and what is allowed."""


@dataclass(frozen=True)
class Param:
    """One parameter of an algorithm, the same in Processing and in the engine job.

    Attributes:
        name: Name in Processing, in ``qgis_process`` and in the engine job.
        label: Short label shown in the dialog.
        kind: One of :data:`KINDS`.
        help: Help text: what it does (the range, unit and default are added).
        default: Value when unset; ``None`` means "unset" (the job decides, and says so
            in ``help``).
        choices: Allowed values of a ``choice`` (what the job receives).
        choice_labels: Plain-language labels of the choices shown in the dialog; empty:
            the choices themselves.
        minimum: Smallest number allowed (numbers, and each item of ``numbers``).
        maximum: Largest number allowed.
        unit: Unit of a number (``m``, ``px``, ``degrees``...); shown in label and help.
        advanced: Shown under "Advanced parameters".
        required: The job cannot run without it.
        file_filter: File dialog filter of a file or output file.
        parent: For ``field``: the name of the layer parameter whose field it is.
        create_by_default: For an optional output: written when the user leaves it
            unset (a temporary file); ``False``: skipped unless asked for.
        provider: For ``connection``: the QGIS data provider of the connection
            (``postgres``).
        kept_on_stop: For an output: whole after every step of the job (a training
            checkpoint, a scene inventory), so a run that stops keeps it to go on from;
            every other output a stopped run wrote is removed.
    """

    name: str
    label: str
    kind: str
    help: str
    default: Any = None
    choices: tuple[str, ...] = ()
    choice_labels: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""
    advanced: bool = False
    required: bool = False
    file_filter: str = ""
    parent: str = ""
    create_by_default: bool = True
    provider: str = ""
    kept_on_stop: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"{self.name}: a choice needs choices")
        if self.choice_labels and len(self.choice_labels) != len(self.choices):
            raise ValueError(f"{self.name}: one label per choice")
        if self.kind == "connection" and not self.provider:
            raise ValueError(f"{self.name}: a connection needs its provider")

    @property
    def labels(self) -> tuple[str, ...]:
        """Dialog labels of a choice."""
        return self.choice_labels or self.choices

    def range_text(self) -> str:
        """``between 32 and 8192`` / ``at least 0`` / ``at most 1`` / ``""``."""
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            return f"between {lo:g} and {hi:g}"
        if lo is not None:
            return f"at least {lo:g}"
        if hi is not None:
            return f"at most {hi:g}"
        return ""

    def full_help(self) -> str:
        """Help text with unit, allowed range or choices, and default appended."""
        parts = [self.help.rstrip()]
        if self.unit:
            parts.append(f"Unit: {self.unit}.")
        if self.kind in NUMERIC or self.kind == "numbers":
            allowed = self.range_text()
            if allowed:
                parts.append(f"Allowed: {allowed}.")
        if self.kind == "choice":
            parts.append("Choices: " + ", ".join(self.choices) + ".")
        if self.default not in (None, "", ()) and self.kind not in OUTPUTS:
            parts.append(f"Default: {_show(self.default)}.")
        return " ".join(p for p in parts if p)

    def read(self, value: Any) -> Any:
        """Validate and convert one value (never ``None`` or ``""``: see :func:`read_params`).

        Raises:
            ParameterError: the value is of the wrong type or outside the range.
        """
        reader = _READERS.get(self.kind, _read_text)
        return reader(self, value)


@dataclass(frozen=True)
class AlgorithmSpec:
    """The parameters of one algorithm (its engine job has the same name).

    Attributes:
        name: Algorithm id (``slidewise:<name>``) and engine job name.
        params: Parameters in dialog order.
        hidden: Names of parameters the job accepts that the dialog does not show
            (set by scripts, tests and the demo).
        in_qgis: Names of parameters the Processing algorithm uses itself, in QGIS (a
            database connection QGIS writes to after the job): the dialog shows them,
            the engine job never receives them and refuses them.
    """

    name: str
    params: tuple[Param, ...]
    hidden: frozenset[str] = field(default_factory=frozenset)
    in_qgis: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"{self.name}: parameters declared twice: {', '.join(duplicated)}")
        if not self.in_qgis <= set(names) or self.in_qgis & self.hidden:
            raise ValueError(f"{self.name}: in_qgis names must be shown parameters of the spec")
        for param in self.params:
            if param.kind in QGIS_ONLY_KINDS and param.name not in self.in_qgis:
                raise ValueError(f"{self.name}: {param.kind} {param.name} must be in in_qgis")

    def __getitem__(self, name: str) -> Param:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(name)

    @property
    def names(self) -> frozenset[str]:
        """Every parameter name of the algorithm (the job's and those used in QGIS)."""
        return frozenset(p.name for p in self.params)

    @property
    def job_params(self) -> tuple[Param, ...]:
        """The parameters the engine job receives (all but :attr:`in_qgis`)."""
        return tuple(p for p in self.params if p.name not in self.in_qgis)


def params(*groups: Iterable[Param]) -> tuple[Param, ...]:
    """Concatenate parameter groups (shared groups plus an algorithm's own)."""
    return tuple(p for group in groups for p in group)


def replace_param(group: Sequence[Param], name: str, **changes: Any) -> tuple[Param, ...]:
    """A copy of ``group`` in which parameter ``name`` has ``changes`` (e.g. another default)."""
    from dataclasses import replace

    found = [p.name for p in group]
    if name not in found:
        raise KeyError(name)
    return tuple(replace(p, **changes) if p.name == name else p for p in group)


def is_unset(value: Any) -> bool:
    """True for a missing value: ``None``, ``""`` or an empty list."""
    return value is None or value == "" or (isinstance(value, list | tuple) and not value)


def read_params(spec: AlgorithmSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """Validate job parameters against ``spec``; unset ones get the default.

    Args:
        spec: The algorithm's specification.
        values: Parameters as the job received them (JSON values or strings).

    Returns:
        Parameter name -> validated value, for every parameter of ``spec``.

    Raises:
        ParameterError: an unknown or missing parameter, or a refused value.
    """
    accepted = {p.name for p in spec.job_params}
    in_qgis = sorted(set(values) & spec.in_qgis)
    if in_qgis:
        raise ParameterError(
            f"{', '.join(in_qgis)}: used by the Processing algorithm slidewise:{spec.name} "
            "in QGIS, not by its engine job: run the algorithm (QGIS, qgis_process or "
            "processing.run), or leave them out of the job file."
        )
    unknown = sorted(set(values) - accepted)
    if unknown:
        raise ParameterError(
            f"Unknown parameter(s) {', '.join(unknown)}: this job takes "
            f"{', '.join(sorted(accepted))}."
        )
    missing = [p.name for p in spec.job_params if p.required and is_unset(values.get(p.name))]
    if missing:
        raise ParameterError(f"Missing required parameter(s): {', '.join(missing)}.")
    out: dict[str, Any] = {}
    for param in spec.job_params:
        value = values.get(param.name)
        out[param.name] = param.default if is_unset(value) else param.read(value)
    return out


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(_show(v) for v in value)
    return str(value)


def _check_range(param: Param, number: float) -> None:
    lo, hi = param.minimum, param.maximum
    if math.isnan(number) or (lo is not None and number < lo) or (hi is not None and number > hi):
        allowed = param.range_text() or "a finite number"
        raise ParameterError(f"{param.name} must be {allowed}, got {_show(number)}.")


def _to_float(param: Param, value: Any) -> float:
    if isinstance(value, bool):
        raise ParameterError(f"{param.name} must be a number, got '{value}'.")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{param.name} must be a number, got '{value}'.") from None


def _read_float(param: Param, value: Any) -> float:
    number = _to_float(param, value)
    _check_range(param, number)
    return number


def _read_int(param: Param, value: Any) -> int:
    number = _to_float(param, value)
    if math.isfinite(number) and number != int(number):
        raise ParameterError(f"{param.name} must be a whole number, got {_show(number)}.")
    _check_range(param, number)
    return int(number)


def _read_bool(param: Param, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ParameterError(f"{param.name} must be true or false, got '{value}'.")


def _read_choice(param: Param, value: Any) -> str:
    text = str(value).strip()
    for choice, label in zip(param.choices, param.labels, strict=True):
        if text.lower() in (choice.lower(), label.lower()):
            return choice
    if text.isdigit() and int(text) < len(param.choices):
        return param.choices[int(text)]
    raise ParameterError(
        f"Unknown value '{value}' for {param.name}: use one of {', '.join(param.choices)}."
    )


def _items(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [str(value).strip()]


def _read_names(param: Param, value: Any) -> list[str]:
    return _items(value)


def _read_numbers(param: Param, value: Any) -> list[float]:
    out = []
    for item in _items(value):
        try:
            number = float(item)
        except ValueError:
            raise ParameterError(
                f"{param.name} must be numbers separated by commas, got '{value}'."
            ) from None
        _check_range(param, number)
        out.append(number)
    return out


def _read_paths(param: Param, value: Any) -> list[str]:
    if isinstance(value, str):
        return [v for v in (s.strip() for s in value.split(";")) if v]
    return [str(v) for v in value if str(v).strip()]


def _read_text(param: Param, value: Any) -> str:
    # A job file may give a JSON list or object: a flat list becomes "a;b;c" (what the
    # value readers split on), anything nested JSON text.
    if isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
        return ";".join(str(v).strip() for v in value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return str(value).strip()


_READERS = {
    "int": _read_int,
    "float": _read_float,
    "bool": _read_bool,
    "choice": _read_choice,
    "names": _read_names,
    "numbers": _read_numbers,
    "rasters": _read_paths,
}
