"""The landslide inventory copied into PostGIS, on the QGIS side.

The engine's GDAL (pip wheels) has no PostgreSQL driver, but QGIS always has its
``postgres`` provider: Map scenes into an inventory writes and merges the
GeoPackage inventory in the engine (the record of what was mapped), then copies
its polygon layer into PostGIS here, with the QGIS API only:

* the connection is one saved in QGIS (Browser > PostgreSQL), found by name
  through the provider's connections API, or a connection string for scripts;
* :func:`check_target` runs before any scene is mapped and refuses, with the
  fix, an unknown connection, a server that cannot be reached (or refuses the
  login), a database without the PostGIS extension, a missing schema, a schema
  the user may not create tables in, and an existing table the user does not own;
* :func:`replace_table` exports the layer with :class:`QgsVectorLayerExporter`
  into a staging table beside the target, indexes it, and swaps it in with one
  multi-statement query (``DROP TABLE`` + ``ALTER TABLE ... RENAME``), which
  PostgreSQL runs as one transaction: readers see the old table or the new one,
  never a half-written one, and a failure leaves the old table as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

from qgis.core import (
    Qgis,
    QgsAbstractDatabaseProviderConnection,
    QgsDataSourceUri,
    QgsFeedback,
    QgsProviderRegistry,
    QgsVectorLayer,
    QgsVectorLayerExporter,
)

from slidewise.processing_provider.algorithms.base import tr

#: QGIS data provider of the connections.
PROVIDER = "postgres"
#: Suffix of the staging table the new copy is written to before the swap.
STAGING_SUFFIX = "_slidewise_new"
#: Longest PostgreSQL identifier (bytes); longer names are cut by the server.
MAX_IDENTIFIER = 63
#: Geometry column and primary key of the copy (the GeoPackage's own names).
GEOMETRY_COLUMN = "geom"
KEY_COLUMN = "fid"
#: Columns by which an existing table is known as a landslide inventory (which may be replaced).
INVENTORY_MARKS = ("scene", "date_first", "model_sha256")


class PostgisError(Exception):
    """The inventory cannot be copied to PostGIS; the message names the problem and the fix."""


@dataclass(frozen=True)
class PostgisTarget:
    """Where the inventory is copied.

    Attributes:
        connection: Name of a PostgreSQL connection saved in QGIS, or a connection string.
        schema: Schema of the table.
        table: Table name.
    """

    connection: str
    schema: str
    table: str

    @property
    def name(self) -> str:
        """``schema.table`` as shown to the user."""
        return f"{self.schema}.{self.table}"

    @property
    def qualified(self) -> str:
        """``schema.table``, quoted for SQL."""
        return f"{identifier(self.schema)}.{identifier(self.table)}"

    @property
    def staging(self) -> str:
        """Name of the staging table (fits PostgreSQL's identifier length)."""
        room = MAX_IDENTIFIER - len(STAGING_SUFFIX.encode())
        stem = self.table.encode()[:room].decode(errors="ignore")
        return stem + STAGING_SUFFIX


def identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def shown_uri(connection: QgsAbstractDatabaseProviderConnection) -> str:
    """The connection's URI without its password (for messages)."""
    uri = QgsDataSourceUri(connection.uri())
    uri.setPassword("")
    return uri.connectionInfo(False)


def open_connection(given: str) -> QgsAbstractDatabaseProviderConnection:
    """The saved PostgreSQL connection named ``given``, or one from a connection string.

    Raises:
        PostgisError: no saved connection has that name and it is no connection string.
    """
    metadata = QgsProviderRegistry.instance().providerMetadata(PROVIDER)
    try:
        found = metadata.findConnection(given, False)
    except Exception:  # QgsProviderConnectionException: a stored connection that cannot load
        found = None
    if found is not None:
        return found
    text = given[3:] if given.upper().startswith("PG:") else given
    text = text.strip().strip('"').strip("'")
    if "=" in text:  # host=... dbname=... user=... or service=...
        return metadata.createConnection(text, {})
    saved = ", ".join(sorted(metadata.connections(False))) or tr("none")
    raise PostgisError(
        tr(
            "There is no PostgreSQL connection named '{name}' in this QGIS profile (saved "
            "connections: {saved}). Save it in the Browser (PostgreSQL > New Connection) of "
            "the profile QGIS or qgis_process runs with, or give a connection string "
            "(host=... port=... dbname=... user=...) for POSTGIS."
        ).format(name=given, saved=saved)
    )


def query(
    connection: QgsAbstractDatabaseProviderConnection, sql: str, what: str
) -> list[list[object]]:
    """Rows of ``sql``; a refusal becomes a :class:`PostgisError` saying what was being done.

    Raises:
        PostgisError: the server could not be reached, refused the login or the query.
    """
    try:
        return connection.executeSql(sql)
    except Exception as exc:  # QgsProviderConnectionException, or QgsException on 3.22
        reason = str(exc).strip() or type(exc).__name__
        if "connection failed" in reason.lower():
            raise PostgisError(
                tr(
                    "Could not connect to the PostgreSQL database {uri}: check that the server "
                    "is running and reachable, and the connection's host, port, database, user "
                    "and password (Browser > PostgreSQL > right-click the connection > Edit "
                    "Connection)."
                ).format(uri=shown_uri(connection))
            ) from None
        raise PostgisError(
            tr("PostgreSQL refused to {what} ({reason}).").format(
                what=what, reason=server_reason(reason)
            )
        ) from None


def server_reason(text: str) -> str:
    """The server's ERROR and DETAIL lines of a QGIS SQL error (without the SQL and HINT)."""
    lines = [line.strip().rstrip("]").strip() for line in text.splitlines()]
    start = next((i for i, line in enumerate(lines) if "ERROR:" in line), None)
    if start is None:
        return text
    kept = [lines[start][lines[start].index("ERROR:") + len("ERROR:") :].strip()]
    kept += [line for line in lines[start + 1 :] if line.startswith("DETAIL:")]
    return "; ".join(line for line in kept if line)


def check_target(target: PostgisTarget) -> QgsAbstractDatabaseProviderConnection:
    """The connection, once the target has been checked (before any scene is mapped).

    Raises:
        PostgisError: unknown connection, server down or login refused, no PostGIS
            extension, missing schema, no right to create tables in it, an existing
            table that is no landslide inventory or is owned by someone else, or a table
            name PostgreSQL would cut.
    """
    if not target.table or len(target.table.encode()) > MAX_IDENTIFIER:
        raise PostgisError(
            tr("POSTGIS_TABLE must be a name of 1 to {n} bytes, got '{name}'.").format(
                n=MAX_IDENTIFIER, name=target.table
            )
        )
    connection = open_connection(target.connection)
    schema, table = literal(target.schema), literal(target.table)
    marks = ", ".join(literal(name) for name in INVENTORY_MARKS)
    sql = (
        "SELECT current_user::text, current_database()::text, "
        "COALESCE((SELECT extversion FROM pg_extension WHERE extname = 'postgis'), ''), "
        "COALESCE((SELECT has_schema_privilege(n.oid, 'CREATE')::text FROM pg_namespace n "
        f"WHERE n.nspname = {schema}), ''), "
        "COALESCE((SELECT pg_has_role(c.relowner, 'USAGE')::text FROM pg_class c "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = {schema} "
        f"AND c.relname = {table}), ''), "
        "(SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = {schema} "
        f"AND c.relname = {table} AND a.attname IN ({marks}) AND NOT a.attisdropped)::text"
    )
    row = [str(v) for v in query(connection, sql, tr("check the target"))[0]]
    owns, inventory = row[4], row[5] == str(len(INVENTORY_MARKS))
    refusal = target_refusal(target, *row[:4], owns if inventory or not owns else "other")
    if refusal:
        raise PostgisError(refusal)
    return connection


def target_refusal(
    target: PostgisTarget, user: str, database: str, postgis: str, may_create: str, owns: str
) -> str:
    """Why the database cannot take the table ('' when it can), from :func:`check_target`'s row.

    ``owns`` is ``''`` (no such table), ``'true'``/``'false'`` (the user may or may not
    drop the inventory table there) or ``'other'`` (a table that is no inventory).
    """
    names = {"user": user, "db": database, "schema": target.schema, "table": target.table}
    if not postgis:
        return tr(
            "The database '{db}' has no PostGIS extension, so it cannot hold the inventory's "
            "polygons: ask its administrator to run CREATE EXTENSION postgis; in it, or choose "
            "a connection to a database that has it."
        ).format(**names)
    if not may_create:
        return tr(
            "The schema '{schema}' does not exist in the database '{db}': create it (Browser > "
            "PostgreSQL > right-click the connection > New Schema) or choose an existing "
            "schema for POSTGIS_SCHEMA."
        ).format(**names)
    if may_create != "true":
        return tr(
            "The user '{user}' may not create tables in the schema '{schema}' of the database "
            "'{db}': ask its administrator to run GRANT CREATE ON SCHEMA {schema} TO {user}; "
            "or choose a schema where you may (POSTGIS_SCHEMA) or another connection."
        ).format(**names)
    if owns == "other":
        return tr(
            "The table {schema}.{table} exists and is not a Slidewise landslide inventory (it "
            "has no scene, date_first and model_sha256 columns), so it is not replaced: choose "
            "another POSTGIS_TABLE, or drop that table yourself if it may go."
        ).format(**names)
    if owns == "false":
        return tr(
            "The table {schema}.{table} exists and belongs to another user, so '{user}' cannot "
            "replace it: choose another POSTGIS_TABLE, or ask the table's owner."
        ).format(**names)
    return ""


def replace_table(
    connection: QgsAbstractDatabaseProviderConnection,
    target: PostgisTarget,
    layer: QgsVectorLayer,
    feedback: QgsFeedback | None = None,
) -> int:
    """Copy ``layer`` into ``target``, replacing the table there in one transaction.

    Returns:
        The number of features in the PostGIS table afterwards.

    Raises:
        PostgisError: the export or the swap failed (the table is then unchanged).
    """
    uri = QgsDataSourceUri(connection.uri())
    uri.setDataSource(target.schema, target.staging, GEOMETRY_COLUMN, "", KEY_COLUMN)
    code, message = QgsVectorLayerExporter.exportLayer(
        layer, uri.uri(False), PROVIDER, layer.crs(), False, {"overwrite": True}, feedback
    )
    staging = f"{identifier(target.schema)}.{identifier(target.staging)}"
    if code != Qgis.VectorExportResult.Success:
        drop_quietly(connection, staging)
        raise PostgisError(
            tr(
                "The inventory could not be written to PostGIS ({reason}); the table {table} "
                "is unchanged."
            ).format(reason=message or code, table=target.name)
        )
    swap = (
        f"DROP TABLE IF EXISTS {target.qualified}; "
        f"ALTER TABLE {staging} RENAME TO {identifier(target.table)}"
    )  # one query string: PostgreSQL runs it as one transaction
    try:
        index_staging(connection, target)
        query(connection, swap, tr("replace the table {t}").format(t=target.name))
    except PostgisError as exc:
        drop_quietly(connection, staging)
        text = f"{exc} " + tr("The table {table} is unchanged.").format(table=target.name)
        if "depend" in str(exc):  # DROP TABLE refused: views (or other objects) use the table
            text += " " + tr(
                "Views or other objects use it, and replacing it would drop them: drop or "
                "change them, or choose another POSTGIS_TABLE."
            )
        raise PostgisError(text) from None
    rename_relations(connection, target)
    rows = query(connection, f"SELECT count(*) FROM {target.qualified}", tr("count the copy"))
    return int(rows[0][0])


def index_staging(connection: QgsAbstractDatabaseProviderConnection, target: PostgisTarget) -> None:
    """A spatial index on the staging table's geometry (unless the export made one).

    Raises:
        PostgisError: the server refused to create it.
    """
    try:
        if connection.spatialIndexExists(target.schema, target.staging, GEOMETRY_COLUMN):
            return
        options = QgsAbstractDatabaseProviderConnection.SpatialIndexOptions()
        options.geometryColumn = GEOMETRY_COLUMN
        connection.createSpatialIndex(target.schema, target.staging, options)
    except Exception as exc:  # QgsProviderConnectionException, or QgsException on 3.22
        raise PostgisError(
            tr("PostgreSQL refused to index the new copy ({reason}).").format(reason=exc)
        ) from None


def drop_quietly(connection: QgsAbstractDatabaseProviderConnection, qualified: str) -> None:
    """Drop a staging table left by a failed copy (nothing to say when that fails too)."""
    try:
        connection.executeSql(f"DROP TABLE IF EXISTS {qualified}")
    except Exception:  # the message of the failure that led here is the one to show
        return


def rename_relations(
    connection: QgsAbstractDatabaseProviderConnection, target: PostgisTarget
) -> None:
    """Give the indexes the staging table brought (key, geometry) the table's name.

    Their names hold the staging table's (``<staging>_pkey``,
    ``sidx_<staging>_geom``); a next copy would otherwise collide with them.

    Cosmetic: a name already taken keeps the staging one, and the copy stays valid.
    """
    schema, stem = literal(target.schema), literal(target.staging)
    sql = (
        "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        f"WHERE n.nspname = {schema} AND t.relname = {literal(target.table)} "
        f"AND position({stem} in c.relname) > 0"
    )
    try:
        names = [str(row[0]) for row in connection.executeSql(sql)]
        for name in names:
            new = name.replace(target.staging, target.table)
            connection.executeSql(
                f"ALTER INDEX {identifier(target.schema)}.{identifier(name)} "
                f"RENAME TO {identifier(new[:MAX_IDENTIFIER])}"
            )
    except Exception:  # a name in use: the index keeps its staging name
        return


def copy_inventory(
    path: str, layer_name: str, target: PostgisTarget, feedback: QgsFeedback | None = None
) -> int:
    """Copy the inventory GeoPackage's polygon layer to PostGIS (checked again first).

    Returns:
        The number of features in the PostGIS table.

    Raises:
        PostgisError: the layer cannot be read, or the copy was refused.
    """
    layer = QgsVectorLayer(f"{path}|layername={layer_name}", layer_name, "ogr")
    if not layer.isValid():
        raise PostgisError(
            tr("The inventory layer '{layer}' of {path} could not be read.").format(
                layer=layer_name, path=path
            )
        )
    connection = check_target(target)
    return replace_table(connection, target, layer, feedback)
