"""GeoPackage conventions for the embedded SQLite store, so GIS tools open it directly.

The SQLite database is a GeoPackage 1.2 (GDAL 3.6, what QGIS on Debian 12 uses,
reads 1.4 only with a warning): geometries are stored as GeoPackage binary
(a ``GP`` header with the SRID and the envelope, then ISO WKB), every geometry
column is registered in ``gpkg_contents`` and ``gpkg_geometry_columns`` with
EPSG:4326, and each has the spec's R*Tree spatial index, kept current by the
spec's triggers. The triggers call ``ST_IsEmpty``/``ST_MinX``/... which
:func:`register_functions` defines on every connection the project opens (as
GDAL does on its own).

Registration (:func:`register_layers`) is derived from the ORM models and the
views, and idempotent: :func:`pipeline.db.migrate.upgrade` runs it after every
migration, because SQLite migrations that copy a table drop its triggers.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Connection

from pipeline.db.identifiers import quote_name

APPLICATION_ID = 0x47504B47  # "GPKG"
USER_VERSION = 10200  # GeoPackage 1.2.0
# PRAGMAs cannot bind parameters; these are built from the integer constants above
_SET_APPLICATION_ID = f"PRAGMA application_id = {APPLICATION_ID:d}"
_SET_USER_VERSION = f"PRAGMA user_version = {USER_VERSION:d}"
RTREE_EXTENSION = "gpkg_rtree_index"

_MAGIC = b"GP"
_HEADER = struct.Struct("<2sBBi")  # magic, version, flags, srs_id (little-endian)
_ENVELOPE_SIZES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}

WGS84_WKT = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,'
    'AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,'
    'AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],'
    'AXIS["Latitude",NORTH],AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]]'
)


@dataclass(frozen=True)
class Layer:
    """A table or view with one geometry column, as GIS clients list it."""

    table: str
    column: str
    geometry_type: str  # OGC name, upper case: POLYGON, MULTIPOLYGON, GEOMETRY, ...
    srid: int
    description: str = ""
    view: bool = False


# -- geometry blobs --------------------------------------------------------------------


def to_blob(geom: BaseGeometry, srid: int) -> bytes:
    """GeoPackage binary of ``geom``: header (SRID, xy envelope) + ISO WKB, little-endian."""
    wkb = shapely.to_wkb(geom, byte_order=1, flavor="iso")
    if geom.is_empty:
        return _HEADER.pack(_MAGIC, 0, 0b0001_0001, srid) + wkb
    minx, miny, maxx, maxy = geom.bounds
    envelope = struct.pack("<4d", minx, maxx, miny, maxy)
    return _HEADER.pack(_MAGIC, 0, 0b0000_0011, srid) + envelope + wkb


def _wkb_offset(blob: bytes) -> int:
    flags = blob[3]
    indicator = (flags >> 1) & 0b111
    if indicator not in _ENVELOPE_SIZES:
        raise ValueError(f"GeoPackage geometry has an invalid envelope indicator {indicator}")
    return _HEADER.size + _ENVELOPE_SIZES[indicator]


def is_blob(value: bytes) -> bool:
    """Whether ``value`` is GeoPackage binary (else plain WKB, as stores before 0006 held)."""
    return value[:2] == _MAGIC


def from_blob(value: bytes) -> BaseGeometry:
    """The geometry of GeoPackage binary, or of plain WKB."""
    if is_blob(value):
        value = value[_wkb_offset(value) :]
    return shapely.from_wkb(value)


def _envelope(value: bytes | None) -> tuple[float, float, float, float] | None:
    """(minx, maxx, miny, maxy) of a blob; None for NULL or empty geometries."""
    if value is None:
        return None
    if not is_blob(value):
        geom = shapely.from_wkb(value)
        if geom.is_empty:
            return None
        minx, miny, maxx, maxy = geom.bounds
        return minx, maxx, miny, maxy
    flags = value[3]
    if flags & 0b1_0000:
        return None
    if (flags >> 1) & 0b111 == 0:
        geom = from_blob(value)
        if geom.is_empty:
            return None
        minx, miny, maxx, maxy = geom.bounds
        return minx, maxx, miny, maxy
    order = "<" if flags & 1 else ">"
    return struct.unpack_from(f"{order}4d", value, _HEADER.size)


def _is_empty(value: bytes | None) -> int | None:
    if value is None:
        return None
    return int(_envelope(value) is None)


def _coordinate(index: int) -> Any:
    def get(value: bytes | None) -> float | None:
        env = _envelope(value)
        return None if env is None else env[index]

    return get


def register_functions(dbapi_conn: Any) -> None:
    """Define the SQL functions the R*Tree triggers call on a sqlite3 connection."""
    dbapi_conn.create_function("ST_IsEmpty", 1, _is_empty, deterministic=True)
    for name, index in (("ST_MinX", 0), ("ST_MaxX", 1), ("ST_MinY", 2), ("ST_MaxY", 3)):
        dbapi_conn.create_function(name, 1, _coordinate(index), deterministic=True)


# -- registration ----------------------------------------------------------------------

_CORE_TABLES = (
    """CREATE TABLE IF NOT EXISTS gpkg_spatial_ref_sys (
        srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY, organization TEXT NOT NULL,
        organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL,
        description TEXT)""",
    """CREATE TABLE IF NOT EXISTS gpkg_contents (
        table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL,
        identifier TEXT UNIQUE, description TEXT DEFAULT '',
        last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
        min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER,
        CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id))""",
    """CREATE TABLE IF NOT EXISTS gpkg_geometry_columns (
        table_name TEXT NOT NULL, column_name TEXT NOT NULL,
        geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL,
        z TINYINT NOT NULL, m TINYINT NOT NULL,
        CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),
        CONSTRAINT uk_gc_table_name UNIQUE (table_name),
        CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
        CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id))""",
    """CREATE TABLE IF NOT EXISTS gpkg_extensions (
        table_name TEXT, column_name TEXT, extension_name TEXT NOT NULL,
        definition TEXT NOT NULL, scope TEXT NOT NULL,
        CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name))""",
)

_SPATIAL_REF_SYS = (
    ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", "undefined cartesian coordinate"),
    ("Undefined geographic SRS", 0, "NONE", 0, "undefined", "undefined geographic coordinate"),
    ("WGS 84 geodetic", 4326, "EPSG", 4326, WGS84_WKT, "longitude/latitude in degrees"),
)


_TRIGGERS = ("insert", "update2", "update4", "update5", "update6", "update7", "delete")


def _rtree_ddl(table: str, column: str, pk: str) -> list[str]:
    """The spec's R*Tree table and its triggers (GeoPackage 1.4, annex F.3: its update
    triggers UPDATE the index row, so an upsert of the table does not collide with it)."""
    rt = quote_name(f"rtree_{table}_{column}")
    t, c, i = quote_name(table), quote_name(column), quote_name(pk)
    box = f"ST_MinX(NEW.{c}), ST_MaxX(NEW.{c}), ST_MinY(NEW.{c}), ST_MaxY(NEW.{c})"
    has_new = f"(NEW.{c} NOT NULL AND NOT ST_IsEmpty(NEW.{c}))"
    has_old = f"(OLD.{c} NOT NULL AND NOT ST_IsEmpty(OLD.{c}))"
    no_new = f"(NEW.{c} IS NULL OR ST_IsEmpty(NEW.{c}))"
    name = f"rtree_{table}_{column}"

    def trigger(suffix: str) -> str:
        return quote_name(f"{name}_{suffix}")

    return [
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {rt} USING rtree(id, minx, maxx, miny, maxy)",
        f"CREATE TRIGGER IF NOT EXISTS {trigger('insert')} AFTER INSERT ON {t} WHEN {has_new} "
        f"BEGIN INSERT OR REPLACE INTO {rt} VALUES (NEW.{i}, {box}); END",
        f"CREATE TRIGGER IF NOT EXISTS {trigger('update6')} AFTER UPDATE OF {c} ON {t} "
        f"WHEN OLD.{i} = NEW.{i} AND {has_new} AND {has_old} BEGIN UPDATE {rt} SET "
        f"minx = ST_MinX(NEW.{c}), maxx = ST_MaxX(NEW.{c}), miny = ST_MinY(NEW.{c}), "
        f"maxy = ST_MaxY(NEW.{c}) WHERE id = NEW.{i}; END",
        f"CREATE TRIGGER IF NOT EXISTS {trigger('update7')} AFTER UPDATE OF {c} ON {t} "
        f"WHEN OLD.{i} = NEW.{i} AND {has_new} AND NOT {has_old} "
        f"BEGIN INSERT INTO {rt} VALUES (NEW.{i}, {box}); END",
        f"CREATE TRIGGER IF NOT EXISTS {trigger('update2')} AFTER UPDATE OF {c} ON {t} "
        f"WHEN OLD.{i} = NEW.{i} AND {no_new} BEGIN DELETE FROM {rt} WHERE id = OLD.{i}; END",
        f"CREATE TRIGGER IF NOT EXISTS {trigger('update5')} AFTER UPDATE ON {t} "
        f"WHEN OLD.{i} != NEW.{i} AND {has_new} BEGIN DELETE FROM {rt} WHERE id = OLD.{i}; "
        f"INSERT INTO {rt} VALUES (NEW.{i}, {box}); END",
        f"CREATE TRIGGER IF NOT EXISTS {trigger('update4')} AFTER UPDATE ON {t} "
        f"WHEN OLD.{i} != NEW.{i} AND {no_new} "
        f"BEGIN DELETE FROM {rt} WHERE id IN (OLD.{i}, NEW.{i}); END",
        f"CREATE TRIGGER IF NOT EXISTS {trigger('delete')} AFTER DELETE ON {t} "
        f"WHEN OLD.{c} NOT NULL BEGIN DELETE FROM {rt} WHERE id = OLD.{i}; END",
    ]


def register_layers(conn: Connection, layers: Iterable[Layer], *, pk: str = "id") -> None:
    """Make the SQLite database behind ``conn`` a GeoPackage listing ``layers``.

    Creates the GeoPackage tables when missing, registers each layer (replacing an
    earlier registration), and gives each table (not view) its R*Tree index,
    filled from the rows already stored. Idempotent.
    """
    raw = conn.connection.driver_connection
    register_functions(raw)
    conn.exec_driver_sql(_SET_APPLICATION_ID)
    conn.exec_driver_sql(_SET_USER_VERSION)
    for ddl in _CORE_TABLES:
        conn.exec_driver_sql(ddl)
    for row in _SPATIAL_REF_SYS:
        conn.exec_driver_sql(
            "INSERT OR IGNORE INTO gpkg_spatial_ref_sys (srs_name, srs_id, organization, "
            "organization_coordsys_id, definition, description) VALUES (?, ?, ?, ?, ?, ?)",
            row,
        )
    layers = list(layers)
    names = [layer.table for layer in layers]
    # layers no longer defined (a dropped view) leave the registry too
    registered = [
        r[0]
        for r in conn.exec_driver_sql("SELECT table_name FROM gpkg_geometry_columns").fetchall()
    ]
    for gone in set(registered) - set(names):
        _unregister(conn, gone)
    for layer in layers:
        conn.exec_driver_sql(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, srs_id) "
            "VALUES (?, 'features', ?, ?, ?) ON CONFLICT (table_name) DO UPDATE SET "
            "description = excluded.description, srs_id = excluded.srs_id",
            (layer.table, layer.table, layer.description, layer.srid),
        )
        conn.exec_driver_sql(
            "INSERT INTO gpkg_geometry_columns VALUES (?, ?, ?, ?, 0, 0) "
            "ON CONFLICT (table_name, column_name) DO UPDATE SET "
            "geometry_type_name = excluded.geometry_type_name, srs_id = excluded.srs_id",
            (layer.table, layer.column, layer.geometry_type, layer.srid),
        )
        if layer.view:
            continue
        for ddl in _rtree_ddl(layer.table, layer.column, pk):
            conn.exec_driver_sql(ddl)
        conn.exec_driver_sql(
            "INSERT OR IGNORE INTO gpkg_extensions VALUES (?, ?, ?, ?, 'write-only')",
            (
                layer.table,
                layer.column,
                RTREE_EXTENSION,
                "http://www.geopackage.org/spec120/#extension_rtree",
            ),
        )
        rt = quote_name(f"rtree_{layer.table}_{layer.column}")
        key, geometry = quote_name(pk), quote_name(layer.column)
        conn.exec_driver_sql(f"DELETE FROM {rt}")
        conn.exec_driver_sql(
            f"INSERT INTO {rt} SELECT {key}, ST_MinX(g), ST_MaxX(g), ST_MinY(g), ST_MaxY(g) "
            f"FROM (SELECT {key}, {geometry} AS g FROM {quote_name(layer.table)}) "
            "WHERE g IS NOT NULL AND NOT ST_IsEmpty(g)"
        )


def _unregister(conn: Connection, table: str) -> None:
    conn.exec_driver_sql("DELETE FROM gpkg_geometry_columns WHERE table_name = ?", (table,))
    conn.exec_driver_sql("DELETE FROM gpkg_extensions WHERE table_name = ?", (table,))
    conn.exec_driver_sql("DELETE FROM gpkg_contents WHERE table_name = ?", (table,))


def drop_spatial_indexes(conn: Connection, tables: Iterable[str], column: str = "geometry") -> None:
    """Drop the R*Tree index and triggers of ``tables`` (before a migration copies them)."""
    for table in tables:
        rt = f"rtree_{table}_{column}"
        for suffix in _TRIGGERS:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {quote_name(f'{rt}_{suffix}')}")
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote_name(rt)}")
