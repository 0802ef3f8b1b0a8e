"""Values QGIS refuses before the engine runs get a message that names the problem and
the fix (issue 15): numbers out of range name the range, unit and default from the
contract; a raster file that exists but cannot be read is named unreadable, not "not
found". Checked through ``processing.run`` (the Toolbox and Python route) and once
through ``qgis_process``.

To add a case, add a row to :data:`FILE_CASES` (how to make the bad file, the fragment
expected in the message).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from plugin_helpers import real_dem, run_qgis_process

from slidewise.contract.spec import NUMERIC
from slidewise.contract.specs import RUNS_IN_QGIS, SPEC_MODULES, spec_of

UNREADABLE = "exists but cannot be read as a raster"
FIX = "export or download it again, or choose another file"


def _text_as_tif(path: Path) -> None:
    path.write_text("landslide inventory, not a raster\n")


def _zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def _header_cut(path: Path) -> None:
    path.write_bytes(real_dem().read_bytes()[:100])


def _data_cut(path: Path) -> None:
    path.write_bytes(real_dem().read_bytes()[:20000])


#: (case, how to make the file, fragments of the message)
FILE_CASES: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    ("text renamed .tif", _text_as_tif, (UNREADABLE, "in no format GDAL knows", FIX)),
    ("zero bytes", _zero_bytes, (UNREADABLE, "it is empty: 0 bytes", FIX)),
    ("header cut short", _header_cut, (UNREADABLE, FIX)),
    # QGIS opens it (the header is whole): the engine names it when reading the data.
    ("data cut short", _data_cut, ("could not be read", "damaged or truncated", "again")),
]


@pytest.mark.parametrize(
    ("make", "fragments"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_unreadable_raster_is_named_unreadable(
    qgis_app, tmp_path: Path, make: Callable[[Path], None], fragments: tuple[str, ...]
) -> None:
    from plugin_helpers import assert_fails

    bad = tmp_path / "dem.tif"
    make(bad)
    out = tmp_path / "out"
    out.mkdir()
    params = {"INPUT": str(bad), "OUTPUT": str(out / "factors.tif")}
    assert_fails("slidewise:terrainfactors", params, fragments[0], out)
    try:
        import processing

        processing.run("slidewise:terrainfactors", params)
    except Exception as exc:
        message = str(exc)
    for fragment in fragments:
        assert fragment in message, message
    assert "not found" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dem.tif", "out"]


def test_missing_raster_is_named_missing(qgis_app, tmp_path: Path) -> None:
    from plugin_helpers import assert_fails

    params = {"INPUT": str(tmp_path / "nowhere.tif"), "OUTPUT": str(tmp_path / "f.tif")}
    assert_fails(
        "slidewise:terrainfactors", params, "nowhere.tif' given for INPUT does not exist", tmp_path
    )


#: Engine jobs without a Processing algorithm (the test suite's job).
ENGINE_ONLY = {"sleep"}


def _bounded_numbers() -> list:
    cases = []
    for name in sorted(set(SPEC_MODULES) - RUNS_IN_QGIS - ENGINE_ONLY):
        for param in spec_of(name).params:
            if param.kind in NUMERIC and param.maximum is not None:
                cases.append(pytest.param(name, param, id=f"{name}:{param.name}"))
    return cases


@pytest.mark.parametrize(("algorithm", "param"), _bounded_numbers())
def test_every_out_of_range_number_names_range_and_unit(qgis_app, algorithm: str, param) -> None:
    """The dialog's definition refuses a number above the contract's maximum, and the
    message built for it names the range, the unit and the default."""
    from qgis.core import QgsApplication

    from slidewise.processing_provider.algorithms.base import out_of_range_message

    alg = QgsApplication.processingRegistry().createAlgorithmById(f"slidewise:{algorithm}")
    definition = alg.parameterDefinition(param.name)
    if definition is None:  # a hidden parameter (scripts and tests only)
        assert param.name in spec_of(algorithm).hidden
        return
    too_big = param.maximum * 2 + 1
    assert not definition.checkValueIsAcceptable(too_big)
    message = out_of_range_message(param, too_big)
    unit = f" {param.unit}" if param.unit else ""
    assert message.startswith(f"{param.name} must be {param.range_text()}{unit}, got "), message
    if param.default is not None:
        assert "Default: " in message
    assert out_of_range_message(param, param.maximum) == ""


def test_qgis_process_names_range_unit_and_unreadable_file(
    qgis_process_env, tmp_path: Path
) -> None:
    """The same messages on the qgis_process route (not 'Incorrect parameter value')."""
    bad = tmp_path / "dem.tif"
    _text_as_tif(bad)
    dem = Path(shutil.copy(real_dem(), tmp_path / "good.tif"))
    for params, fragment in (
        ([f"INPUT={bad}"], f"The file '{bad}' given for INPUT {UNREADABLE}"),
        ([f"INPUT={dem}", "ALTITUDE=95"], "ALTITUDE must be between 0 and 90 degrees, got 95."),
    ):
        out = tmp_path / "factors.tif"
        proc = run_qgis_process(
            qgis_process_env, "run", "slidewise:terrainfactors", "--", *params, f"OUTPUT={out}"
        )
        text = proc.stdout + proc.stderr
        assert fragment in text, text
        assert "Incorrect parameter value" not in text and "not found" not in text
        assert not out.exists()


def test_output_on_the_file_of_a_layer_inside_a_geopackage_is_refused(
    qgis_app, tmp_path: Path
) -> None:
    """A layer of a multi-layer file reaches the engine as a temporary copy; writing the
    output over the user's file is refused before the engine runs."""
    import subprocess

    from plugin_helpers import TEST_DATA, assert_fails

    inventory = tmp_path / "inventory.gpkg"
    for name in ("north", "south"):
        subprocess.run(
            [
                "ogr2ogr", "-q", "-f", "GPKG", *(["-update"] if name == "south" else []),
                str(inventory), str(TEST_DATA / "ecuador" / "lsl.csv"), "-nln", name,
                "-oo", "X_POSSIBLE_NAMES=x", "-oo", "Y_POSSIBLE_NAMES=y",
                "-oo", "AUTODETECT_TYPE=YES", "-a_srs", "EPSG:32717",
            ],
            check=True,
        )  # fmt: skip
    before = inventory.read_bytes()
    params = {
        "INPUT": str(TEST_DATA / "ecuador" / "ta.tif"),
        "INVENTORY": f"{inventory}|layername=south",
        "LABEL_FIELD": "lslpts",
        "OUTPUT": str(tmp_path / "blocks.tif"),
        "OUTPUT_POLYGONS": str(inventory),
    }
    assert_fails(
        "slidewise:segmentblocks", params, "OUTPUT_POLYGONS is the file of the input INVENTORY",
        tmp_path,
    )  # fmt: skip
    assert inventory.read_bytes() == before
