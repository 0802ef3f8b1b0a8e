"""Parameters used in QGIS only (``AlgorithmSpec.in_qgis``): shown in the dialog, never sent to
the engine job, which refuses them by name."""

from __future__ import annotations

import pytest

from slidewise.contract.spec import AlgorithmSpec, Param, ParameterError, read_params
from slidewise.contract.specs.mapscenes import POSTGIS_NAMES
from slidewise.contract.specs.mapscenes import SPEC as SCENES_SPEC

CONNECTION = Param("DB", "Database", "connection", "A saved connection.", provider="postgres")
SCHEMA = Param("DB_SCHEMA", "Schema", "schema", "Its schema.", default="public", parent="DB")
OUTPUT = Param("OUTPUT", "Output", "output_file", "Out.", required=True)


def test_the_job_reads_none_of_them_and_refuses_them_by_name() -> None:
    spec = AlgorithmSpec(
        "synthetic", (CONNECTION, SCHEMA, OUTPUT), in_qgis=frozenset({"DB", "DB_SCHEMA"})
    )
    assert read_params(spec, {"OUTPUT": "out.txt"}) == {"OUTPUT": "out.txt"}
    assert [p.name for p in spec.job_params] == ["OUTPUT"]
    with pytest.raises(
        ParameterError, match="DB: used by the Processing algorithm slidewise:synthetic"
    ):
        read_params(spec, {"OUTPUT": "out.txt", "DB": "slides"})


def test_a_connection_or_schema_must_be_in_qgis() -> None:
    with pytest.raises(ValueError, match="connection DB must be in in_qgis"):
        AlgorithmSpec("synthetic", (CONNECTION, OUTPUT))
    with pytest.raises(ValueError, match="a connection needs its provider"):
        Param("DB", "Database", "connection", "No provider.")


def test_mapscenes_keeps_postgis_on_the_qgis_side() -> None:
    assert SCENES_SPEC.in_qgis == frozenset(POSTGIS_NAMES)
    assert not {p.name for p in SCENES_SPEC.job_params} & set(POSTGIS_NAMES)
