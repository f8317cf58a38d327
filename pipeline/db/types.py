"""Column types that behave the same on PostgreSQL/PostGIS and on SQLite.

* :class:`Geometry` — shapely geometries in EPSG:4326 on the Python side;
  PostGIS ``geometry(<type>, 4326)`` on PostgreSQL, GeoPackage binary on SQLite
  (see :mod:`pipeline.db.geopackage`): GIS clients open either store directly.
* :class:`JSONType` — ``JSONB`` on PostgreSQL, ``JSON`` on SQLite; numpy
  scalars/arrays become plain numbers/lists and non-finite floats become ``null``.
* :class:`UtcDateTime` — ``timestamptz`` / SQLite ``DATETIME`` text in GeoPackage's
  form (``2026-12-03T20:47:04.123Z``); always returns aware UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import numpy as np
import shapely
import sqlalchemy as sa
from shapely.geometry.base import BaseGeometry
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.types import TypeDecorator, TypeEngine

from pipeline.db import geopackage
from pipeline.db.errors import RowError
from pipeline.geometries import as_multipolygon

SRID = 4326


# SQLite columns are declared with GeoPackage's data types, which GIS clients read
# without a warning: VARCHAR(n) is TEXT(n) and JSON is TEXT there.
@compiles(sa.String, "sqlite")
@compiles(sa.VARCHAR, "sqlite")
def _sqlite_text(type_: sa.String, compiler: Any, **kw: Any) -> str:
    return f"TEXT({type_.length})" if type_.length else "TEXT"


@compiles(sa.JSON, "sqlite")
@compiles(sqlite.JSON, "sqlite")
def _sqlite_json(type_: sa.JSON, compiler: Any, **kw: Any) -> str:
    return "TEXT"


#: GeoPackage's DATETIME text (spec 1.2, table 1): ISO 8601, UTC, milliseconds
GPKG_DATETIME_SQL = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


# now() on SQLite as GeoPackage writes it; SQLite's CURRENT_TIMESTAMP
# ("2026-12-03 20:47:04") makes GDAL warn "Non-conformant content" on every read
@compiles(sa.sql.functions.now, "sqlite")
def _sqlite_now(element: Any, compiler: Any, **kw: Any) -> str:
    return GPKG_DATETIME_SQL


class GpkgDateTime(sqlite.DATETIME):
    """SQLite ``DATETIME`` bound as GeoPackage keeps it: ``2026-12-03T20:47:04.123Z``
    (UTC, milliseconds). Reads accept it and SQLAlchemy's older
    ``2026-12-03 20:47:04.123456`` alike."""

    def bind_processor(self, dialect: Dialect) -> Any:
        def process(value: dt.datetime | None) -> str | None:
            if value is None:
                return None
            return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"

        return process


# OGC type name (as PostGIS spells it) -> shapely type id
_TYPE_IDS = {
    "POINT": 0,
    "LINESTRING": 1,
    "POLYGON": 3,
    "MULTIPOINT": 4,
    "MULTILINESTRING": 5,
    "MULTIPOLYGON": 6,
    "GEOMETRYCOLLECTION": 7,
}


def check_geometries(
    geoms: Sequence[Any], geometry_type: str = "GEOMETRY", *, label: str = "geometry"
) -> np.ndarray:
    """Check shapely geometries for a column and return them 2-D as an object array.

    Rules: every value is a shapely geometry (no ``None``), of ``geometry_type``
    unless that is ``GEOMETRY`` (a ``MULTIPOLYGON`` column takes polygons too, see
    :func:`as_multipolygon`), with lon in [-180, 180] and lat in [-90, 90] (i.e.
    EPSG:4326, not web-mercator metres). ``label`` names the input in errors.
    """
    arr = np.empty(len(geoms), dtype=object)
    arr[:] = list(geoms)
    ok = np.fromiter((isinstance(g, BaseGeometry) for g in arr), bool, len(arr))
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise RowError(
            f"{label}[{i}]: expected a shapely geometry in EPSG:4326, got {type(arr[i]).__name__}"
        )
    if not len(arr):
        return arr
    geometry_type = geometry_type.upper()
    if geometry_type == "MULTIPOLYGON":
        arr[:] = [as_multipolygon(g) for g in arr]
    if geometry_type != "GEOMETRY":
        bad = shapely.get_type_id(arr) != _TYPE_IDS[geometry_type]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise RowError(
                f"{label}[{i}]: column holds {geometry_type} geometries, got {arr[i].geom_type}"
            )
    bounds = shapely.bounds(arr)
    with np.errstate(invalid="ignore"):
        out = (
            (bounds[:, 0] < -180)
            | (bounds[:, 2] > 180)
            | (bounds[:, 1] < -90)
            | (bounds[:, 3] > 90)
        )
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise RowError(
            f"{label}[{i}]: bounds {tuple(round(float(b), 3) for b in bounds[i])} are not "
            "lon/lat degrees; geometries must be in EPSG:4326 (reproject with to_crs(4326))"
        )
    return shapely.force_2d(arr)


def check_geometry(geom: Any, geometry_type: str = "GEOMETRY") -> BaseGeometry:
    """:func:`check_geometries` for one value (the per-row path used when binding)."""
    if not isinstance(geom, BaseGeometry):
        raise RowError(f"expected a shapely geometry in EPSG:4326, got {type(geom).__name__}")
    if geometry_type == "MULTIPOLYGON":
        geom = as_multipolygon(geom)
    if geometry_type != "GEOMETRY" and geom.geom_type.upper() != geometry_type:
        raise RowError(f"column holds {geometry_type} geometries, got {geom.geom_type}")
    if not geom.is_empty:
        minx, miny, maxx, maxy = geom.bounds
        if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
            raise RowError(
                f"bounds {tuple(round(b, 3) for b in geom.bounds)} are not lon/lat degrees; "
                "geometries must be in EPSG:4326 (reproject with to_crs(4326))"
            )
    return shapely.force_2d(geom) if geom.has_z else geom


class Geometry(TypeDecorator):
    """Shapely geometry column in EPSG:4326: PostGIS ``geometry(type, 4326)``, or on
    SQLite a BLOB of GeoPackage binary (plain WKB, as stores before migration 0006
    held, is still read).

    The PostGIS column gets its GiST index from the model's ``__table_args__``
    (see :func:`pipeline.db.models.gist_index`), not from this type.
    """

    impl = sa.LargeBinary
    cache_ok = True

    def __init__(self, geometry_type: str = "GEOMETRY", srid: int = SRID) -> None:
        super().__init__()
        if geometry_type.upper() not in {"GEOMETRY", *_TYPE_IDS}:
            raise ValueError(f"geometry_type {geometry_type!r} is not an OGC geometry type")
        self.geometry_type = geometry_type.upper()
        self.srid = srid
        # read by geoalchemy2's DDL hooks: our GiST indexes are declared explicitly
        self.spatial_index = False

    def __repr__(self) -> str:
        srid = "" if self.srid == SRID else f", srid={self.srid}"
        return f"Geometry({self.geometry_type!r}{srid})"

    def load_dialect_impl(self, dialect: Dialect | None) -> TypeEngine[Any]:
        # geoalchemy2's DDL hooks call this with dialect=None
        if dialect is not None and dialect.name == "postgresql":
            import geoalchemy2  # only PostGIS needs it: SQLite stores stay without it

            return dialect.type_descriptor(
                geoalchemy2.Geometry(
                    geometry_type=self.geometry_type, srid=self.srid, spatial_index=False
                )
            )
        return sa.LargeBinary() if dialect is None else dialect.type_descriptor(sa.LargeBinary())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        geom = check_geometry(value, self.geometry_type)
        if dialect.name == "postgresql":
            # hex EWKB is PostGIS's own text input format for geometry values
            return shapely.to_wkb(shapely.set_srid(geom, self.srid), hex=True, include_srid=True)
        return geopackage.to_blob(geom, self.srid)

    def process_result_value(self, value: Any, dialect: Dialect) -> BaseGeometry | None:
        if value is None:
            return None
        if dialect.name == "postgresql":
            from geoalchemy2.elements import _SpatialElement

            if isinstance(value, _SpatialElement):
                value = value.data
        if isinstance(value, memoryview):
            value = bytes(value)
        if isinstance(value, bytes):
            return shapely.set_srid(geopackage.from_blob(value), 0)
        return shapely.set_srid(shapely.from_wkb(value), 0)  # PostGIS hex EWKB text


def to_jsonable(value: Any) -> Any:
    """Plain JSON value: numpy -> python, NaN/inf -> None, dates -> ISO text, paths -> str."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float | Decimal):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [to_jsonable(v) for v in items]
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    return value


class JSONType(TypeDecorator):
    """JSON document column: ``JSONB`` on PostgreSQL, ``JSON`` on SQLite; ``None`` is SQL NULL."""

    impl = sa.JSON(none_as_null=True)
    cache_ok = True

    def __repr__(self) -> str:
        return "JSONType()"

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(sa.JSON(none_as_null=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return to_jsonable(value)


class UtcDateTime(TypeDecorator):
    """Timezone-aware timestamp; naive inputs are taken as UTC, results are aware UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def __repr__(self) -> str:
        return "UtcDateTime()"

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(GpkgDateTime())
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)
