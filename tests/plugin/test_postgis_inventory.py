"""slidewise:mapscenes copies its inventory into a real PostGIS database through QGIS.

A private PostgreSQL cluster is started for the module (``initdb`` in a temporary
folder, unix socket only, trust authentication) with the PostGIS extension. The
first run goes through ``qgis_process`` with a connection saved by name in its
throw-away profile; the second, with one more scene, through ``processing.run``
with a connection string. Each time the PostGIS table, read back through QGIS,
holds the same polygons and attributes as the GeoPackage inventory. Targets the
database refuses are refused, with the fix, before any scene is mapped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from plugin_helpers import assert_fails, run_qgis_process, scene_footprints

#: Scene name -> (first column of its crop, date, region); each overlaps the next by half.
SCENES = {
    "west": (0, "2020-08-01", "bijie"),
    "middle": (128, "2021-07-15", "bijie"),
    "east": (256, "2022-06-30", "bijie"),
}
#: Attributes compared between the GeoPackage and the PostGIS table.
COMPARED = ("scene", "date_first", "date_last", "region", "decoder", "model", "model_sha256")
TABLE = "landslide_inventory"
INSTALL_HINT = (
    "PostgreSQL with PostGIS is not installed: apt-get install postgresql "
    "postgresql-NN-postgis-3 (NN: the installed PostgreSQL's major version), as "
    "'make install' does"
)
#: Saves a PostgreSQL connection in a QGIS profile the way qgis_process reads it.
SAVE_CONNECTION = """
import sys
from qgis.PyQt.QtCore import QCoreApplication, QSettings
QCoreApplication.setOrganizationName("QGIS")
QCoreApplication.setOrganizationDomain("qgis.org")
QCoreApplication.setApplicationName("QGIS3")
QSettings.setDefaultFormat(QSettings.IniFormat)
QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, sys.argv[1])
from qgis.core import QgsApplication, QgsProviderRegistry
app = QgsApplication([], False, sys.argv[1])
app.initQgis()
metadata = QgsProviderRegistry.instance().providerMetadata("postgres")
connection = metadata.createConnection(sys.argv[3], {"saveUsername": True})
metadata.saveConnection(connection, sys.argv[2])
"""


def postgres_bin() -> Path | None:
    """The ``bin`` folder of the newest PostgreSQL that has PostGIS (``None``: none)."""
    for initdb in sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True):
        version = initdb.parents[1].name
        if Path(f"/usr/share/postgresql/{version}/extension/postgis.control").is_file():
            return initdb.parent
    return None


@dataclass(frozen=True)
class Cluster:
    """A private PostgreSQL cluster reached through its unix socket.

    Attributes:
        folder: Its folder (data, log and socket).
        psql: The ``psql`` program.
    """

    folder: Path
    psql: Path
    port: int = 5432  # the socket is in the private folder: no clash with any server

    def uri(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """A libpq connection string to ``dbname`` as ``user``."""
        return f"host={self.folder} port={self.port} dbname={dbname} user={user}"

    def sql(self, text: str, dbname: str = "postgres") -> str:
        """Run ``text`` with psql; its output."""
        command = [str(self.psql), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"]
        command += ["-d", self.uri(dbname), "-c", text]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
        return done.stdout.strip()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """The cluster, with PostGIS in ``postgres``, a database without it and a plain role."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip(INSTALL_HINT)
    folder = Path(tempfile.mkdtemp(prefix="slidewise-pg-"))  # short: a socket path is short
    as_owner: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to 'postgres'
        shutil.chown(folder, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, run = folder / "data", {"capture_output": True, "timeout": 120, "check": True}
    subprocess.run([*as_owner, bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "postgres",
                    "-E", "UTF8", "--no-sync"], **run)  # fmt: skip
    options = f"-k {folder} -p {Cluster.port} -c listen_addresses='' -c fsync=off"
    subprocess.run([*as_owner, bin_dir / "pg_ctl", "-D", data, "-l", folder / "log", "-w",
                    "-o", options, "start"], **run)  # fmt: skip
    try:
        made = Cluster(folder, bin_dir / "psql")
        made.sql("CREATE EXTENSION postgis")
        made.sql("CREATE DATABASE plain")
        made.sql("CREATE ROLE reader LOGIN")
        made.sql("CREATE SCHEMA shared; GRANT USAGE, CREATE ON SCHEMA shared TO reader")
        made.sql(f"CREATE TABLE shared.{TABLE} (id int)")  # not an inventory
        made.sql(
            "CREATE SCHEMA owned; GRANT USAGE, CREATE ON SCHEMA owned TO reader; CREATE "
            f"TABLE owned.{TABLE} (scene text, date_first text, model_sha256 text)"
        )
        yield made
    finally:
        subprocess.run([*as_owner, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


def rows_of(layer) -> list[tuple]:
    """Each feature's compared attributes, area and vertex count, sorted."""
    assert layer.isValid()
    rows = [
        (*(str(f[name]) for name in COMPARED), round(f.geometry().area(), 3),
         f.geometry().constGet().nCoordinates())
        for f in layer.getFeatures()
    ]  # fmt: skip
    return sorted(rows)


def gpkg_rows(path: str) -> list[tuple]:
    from qgis.core import QgsVectorLayer

    return rows_of(QgsVectorLayer(f"{path}|layername={TABLE}", "gpkg", "ogr"))


def postgis_rows(cluster: Cluster) -> list[tuple]:
    """The table's rows, read back through QGIS's postgres provider."""
    from qgis.core import QgsDataSourceUri, QgsVectorLayer

    uri = QgsDataSourceUri(cluster.uri())
    uri.setDataSource("public", TABLE, "geom")
    return rows_of(QgsVectorLayer(uri.uri(False), "postgis", "postgres"))


def footprints_of(folder: Path, names: tuple[str, ...]) -> Path:
    """A footprint layer of some of the scenes ``scene_footprints`` wrote in ``folder``."""
    collection = json.loads((folder / "footprints.geojson").read_text())
    collection["features"] = [
        f for f in collection["features"] if Path(f["properties"]["path"]).stem in names
    ]
    path = folder / f"footprints_{len(names)}.geojson"
    path.write_text(json.dumps(collection))
    return path


@pytest.mark.slow
def test_inventory_goes_to_postgis_and_follows_new_scenes(
    qgis_app, qgis_process_env, cluster: Cluster, tmp_path: Path
) -> None:
    import processing
    from qgis.core import QgsVectorLayer

    scene_footprints(tmp_path, SCENES)
    profile = Path(qgis_process_env["QGIS_CUSTOM_CONFIG_PATH"]) / "profiles" / "default"
    subprocess.run(
        ["/usr/bin/python3", "-c", SAVE_CONNECTION, profile, "slidewise_pg", cluster.uri()],
        env=qgis_process_env, capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    inventory = str(tmp_path / "inventory.gpkg")
    common = {"TILE_SIZE": 256, "OUTPUT_FOLDER": str(tmp_path / "out"), "INVENTORY": inventory}
    proc = run_qgis_process(
        qgis_process_env, "--json", "run", "slidewise:mapscenes", "--",
        f"FOOTPRINTS={footprints_of(tmp_path, ('west', 'middle'))}", "POSTGIS=slidewise_pg",
        *(f"{k}={v}" for k, v in common.items()),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(proc.stdout[proc.stdout.index("{") :])["results"]
    assert results["POSTGIS_TABLE"] == f"public.{TABLE}"
    assert results["POSTGIS_FEATURES"] == results["INVENTORY_POLYGONS"] > 0
    first = gpkg_rows(inventory)
    assert postgis_rows(cluster) == first
    assert any(row[0] == "west;middle" for row in first)  # merged, not twice
    assert (results["SCENES_MAPPED"], results["INVENTORY_SCENES"]) == (2, 2)
    assert (tmp_path / "out" / "west_probability.tif").is_file()
    mapped = QgsVectorLayer(f"{inventory}|layername=mapped_scenes", "scenes", "ogr")
    assert [f["scene"] for f in mapped.getFeatures()] == ["west", "middle"]

    results = processing.run(
        "slidewise:mapscenes",
        {**common, "FOOTPRINTS": str(footprints_of(tmp_path, tuple(SCENES))),
         "POSTGIS": cluster.uri()},
    )  # fmt: skip
    assert (results["SCENES_MAPPED"], results["INVENTORY_SCENES"]) == (1, 3)  # 2 skipped
    second = gpkg_rows(inventory)
    assert second != first and any("east" in row[0] for row in second)
    assert postgis_rows(cluster) == second
    assert results["POSTGIS_FEATURES"] == len(second)
    tables = cluster.sql(
        "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace AND relname LIKE '%landslide%'"
    )
    assert tables.split(",") == [TABLE, f"{TABLE}_pkey", f"sidx_{TABLE}_geom"]  # no staging left


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ({"POSTGIS": "no_such_connection"}, "no PostgreSQL connection named 'no_such_connection'"),
        ({"POSTGIS": "port=5433"}, "Could not connect"),
        ({"POSTGIS": "dbname=plain"}, "has no PostGIS extension"),
        ({"POSTGIS_SCHEMA": "nowhere"}, "schema 'nowhere' does not exist"),
        ({"POSTGIS": "user=reader"}, "'reader' may not create tables in the schema 'public'"),
        ({"POSTGIS_SCHEMA": "shared"}, "exists and is not a Slidewise landslide inventory"),
        ({"POSTGIS": "user=reader", "POSTGIS_SCHEMA": "owned"}, "belongs to another user"),
    ],
)
def test_refused_targets_stop_before_any_scene(
    qgis_app, cluster: Cluster, tmp_path: Path, target: dict, needle: str
) -> None:
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    params = {
        "SCENE_FOLDER": str(scenes),
        "OUTPUT_FOLDER": str(tmp_path / "out"),
        "INVENTORY": str(tmp_path / "inventory.gpkg"),
        "POSTGIS": cluster.uri(),
    }
    changed = target.get("POSTGIS", "")
    if "=" in changed:  # one word of the connection string changed
        key, value = changed.split("=")
        words = dict(w.split("=") for w in cluster.uri().split())
        target = {
            **target,
            "POSTGIS": " ".join(f"{k}={v}" for k, v in {**words, key: value}.items()),
        }
    assert_fails("slidewise:mapscenes", {**params, **target}, needle, tmp_path)


def test_a_refused_swap_leaves_the_table_as_it_was(qgis_app, cluster: Cluster) -> None:
    """A view on the table makes DROP fail: one transaction, so nothing changed."""
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorLayer

    from slidewise.processing_provider.algorithms.postgis import (
        PostgisError,
        PostgisTarget,
        check_target,
        replace_table,
    )

    cluster.sql("CREATE TABLE kept (fid bigint PRIMARY KEY, scene text, date_first text, "
                "model_sha256 text); INSERT INTO kept (fid, scene) VALUES (1, 'old'); "
                "CREATE VIEW kept_view AS SELECT scene FROM kept")  # fmt: skip
    layer = QgsVectorLayer("MultiPolygon?crs=EPSG:32648&field=scene:string", "new", "memory")
    feature = QgsFeature(layer.fields())
    feature.setGeometry(QgsGeometry.fromWkt("MULTIPOLYGON(((0 0, 1 0, 1 1, 0 0)))"))
    feature.setAttributes(["new"])
    layer.dataProvider().addFeatures([feature])
    target = PostgisTarget(cluster.uri(), "public", "kept")
    with pytest.raises(PostgisError) as info:
        replace_table(check_target(target), target, layer)
    assert "The table public.kept is unchanged. Views or other objects use it" in str(info.value)
    assert cluster.sql("SELECT scene FROM kept_view") == "old"
    assert cluster.sql("SELECT count(*) FROM pg_class WHERE relname LIKE 'kept_slidewise%'") == "0"
