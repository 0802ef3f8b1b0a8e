"""Each parameter declared once: every specification is read by its job's JobParams dataclass.

The Processing side of the same rule is ``tests/plugin/test_specs.py``.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from types import ModuleType

import pytest

from slidewise.contract.spec import AlgorithmSpec, Param
from slidewise.contract.specs import RUNS_IN_QGIS, SPEC_MODULES, spec_of
from slidewise.contract.specs.groups import OUTPUT_OPTION_NAMES
from slidewise.engine.core.errors import InputError
from slidewise.engine.core.params import JobParams, field_name, read_params
from slidewise.engine.jobs import JOBS

#: Specifications of engine jobs (the algorithms that run in QGIS have none).
SPEC_NAMES = sorted(set(SPEC_MODULES) - RUNS_IN_QGIS)


def job_module(name: str) -> ModuleType:
    """The module of engine job ``name`` (from the catalogue)."""
    module_name, _ = JOBS[name].split(":")
    return importlib.import_module(module_name)


def params_classes(module: ModuleType, spec: AlgorithmSpec) -> list[type[JobParams]]:
    """The JobParams dataclasses of ``module`` whose SPEC is ``spec``."""
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, JobParams)
        and value is not JobParams
        and getattr(value, "SPEC", None) is spec
    ]


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_every_spec_has_a_job(name: str) -> None:
    spec = spec_of(name)
    assert spec.name == name
    assert name in JOBS, f"{name} has a specification but no engine job"


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_job_reads_its_spec_through_a_params_dataclass(name: str) -> None:
    spec = spec_of(name)
    module = job_module(name)
    found = params_classes(module, spec)
    assert found, f"{module.__name__} defines no JobParams subclass with SPEC = {name}'s SPEC"
    for cls in found:
        assert dataclasses.is_dataclass(cls)
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(
            p.name
            for p in spec.params
            if field_name(p.name) not in fields and p.name not in OUTPUT_OPTION_NAMES | spec.in_qgis
        )
        assert not missing, f"{cls.__name__} has no field for {', '.join(missing)}"


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_spec_defaults_are_accepted_by_their_own_reader(name: str) -> None:
    """A default passes its parameter's own range or choices; every count has an upper bound."""
    for param in spec_of(name).params:
        if param.default is not None and param.kind in ("int", "float", "bool", "choice"):
            assert param.read(param.default) == param.default, f"{name}.{param.name}"
        if param.kind == "int":
            assert param.maximum is not None, f"{name}.{param.name} needs an upper bound"


# --- read_params messages, on a synthetic specification ---------------------------------

SYNTHETIC = AlgorithmSpec(
    "synthetic",
    (
        Param(
            "TILE_SIZE",
            "Tile size",
            "int",
            "Tile side.",
            default=576,
            minimum=32,
            maximum=8192,
            unit="px",
        ),
        Param("RATE", "Rate", "float", "A rate.", default=0.5, minimum=0.0, maximum=1.0),
        Param("AUGMENT", "Augment", "bool", "Switch.", default=False),
        Param(
            "MODE",
            "Mode",
            "choice",
            "Mode.",
            default="fast",
            choices=("fast", "exact"),
            choice_labels=("Fast", "Exact (slower)"),
        ),
        Param("OUTPUT", "Output", "output_file", "Out.", required=True),
    ),
)


@dataclass(frozen=True)
class SyntheticParams(JobParams):
    """Parameters of the synthetic job."""

    SPEC = SYNTHETIC

    tile_size: int = 576
    rate: float = 0.5
    augment: bool = False
    mode: str = "fast"
    output: str = ""


def read(**values: object) -> dict[str, object]:
    return read_params(SYNTHETIC, {"OUTPUT": "out.txt", **values})


def refused(**values: object) -> str:
    with pytest.raises(InputError) as info:
        read(**values)
    return str(info.value)


def test_defaults_fill_unset_parameters() -> None:
    assert read() == {
        "TILE_SIZE": 576,
        "RATE": 0.5,
        "AUGMENT": False,
        "MODE": "fast",
        "OUTPUT": "out.txt",
    }
    assert read(TILE_SIZE="", RATE=None)["TILE_SIZE"] == 576


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"TILE_SIZE": 0}, "TILE_SIZE must be between 32 and 8192, got 0."),
        ({"TILE_SIZE": "9000"}, "TILE_SIZE must be between 32 and 8192, got 9000."),
        ({"TILE_SIZE": 64.5}, "TILE_SIZE must be a whole number, got 64.5."),
        ({"TILE_SIZE": "big"}, "TILE_SIZE must be a number, got 'big'."),
        ({"RATE": 1.5}, "RATE must be between 0 and 1, got 1.5."),
        ({"RATE": "nan"}, "RATE must be between 0 and 1, got nan."),
    ],
)
def test_numbers_out_of_range_name_parameter_and_range(
    values: dict[str, object], message: str
) -> None:
    assert refused(**values) == message


def test_numbers_as_text_are_read() -> None:
    assert read(TILE_SIZE="256")["TILE_SIZE"] == 256
    assert read(RATE="0.25")["RATE"] == 0.25


@pytest.mark.parametrize(("word", "value"), [("true", True), ("1", True), ("No", False)])
def test_switch_words_are_read(word: str, value: bool) -> None:
    assert read(AUGMENT=word)["AUGMENT"] is value


@pytest.mark.parametrize("word", ["maybe", "2", "tru"])
def test_unknown_switch_word_is_refused(word: str) -> None:
    assert refused(AUGMENT=word) == f"AUGMENT must be true or false, got '{word}'."


@pytest.mark.parametrize(
    ("given", "expected"),
    [(0, "fast"), (1, "exact"), ("1", "exact"), ("exact", "exact"), ("Exact (slower)", "exact")],
)
def test_choice_accepts_index_word_and_label(given: object, expected: str) -> None:
    assert read(MODE=given)["MODE"] == expected


@pytest.mark.parametrize("given", ["slow", 2, "-1"])
def test_unknown_choice_is_refused(given: object) -> None:
    assert refused(MODE=given) == f"Unknown value '{given}' for MODE: use one of fast, exact."


def test_unknown_parameters_are_refused() -> None:
    assert refused(FOO=1, BAR=2) == (
        "Unknown parameter(s) BAR, FOO: this job takes AUGMENT, MODE, OUTPUT, RATE, TILE_SIZE."
    )


def test_missing_required_parameter_is_refused() -> None:
    with pytest.raises(InputError, match=r"^Missing required parameter\(s\): OUTPUT\.$"):
        read_params(SYNTHETIC, {})


def test_from_params_builds_the_dataclass() -> None:
    options = SyntheticParams.from_params({"OUTPUT": "o.txt", "TILE_SIZE": "64", "MODE": 1})
    assert options == SyntheticParams(tile_size=64, mode="exact", output="o.txt")
    with pytest.raises(InputError, match=r"^TILE_SIZE must be between 32 and 8192, got 0\.$"):
        SyntheticParams.from_params({"OUTPUT": "o.txt", "TILE_SIZE": 0})
