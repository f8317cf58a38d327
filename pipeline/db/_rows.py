"""Helpers shared by the data functions: row checking, upserts, tile outlines."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np
import shapely
from sqlalchemy import Insert, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pipeline.db.errors import RowError
from pipeline.db.models import Base
from pipeline.db.types import Geometry, check_geometries
from pipeline.tiles import Tile, lnglat_bounds


def plain(value: Any) -> Any:
    """A value a DB driver can bind: numpy scalar -> python, float NaN -> None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def tile_polygon(x: int, y: int, z: int) -> shapely.Polygon:
    """The lon/lat outline of tile ``z/x/y``."""
    return shapely.box(*lnglat_bounds(Tile(int(x), int(y), int(z))))


@cache
def _columns(table: Table) -> tuple[frozenset[str], frozenset[str], dict[str, str]]:
    """(writable columns, required columns, {geometry column: geometry type})."""
    writable: set[str] = set()
    required: set[str] = set()
    geometry_cols: dict[str, str] = {}
    for col in table.columns:
        if col.primary_key and col.autoincrement is not False and len(table.primary_key) == 1:
            continue  # surrogate id
        writable.add(col.name)
        if not col.nullable and col.server_default is None:
            required.add(col.name)
        if isinstance(col.type, Geometry):
            geometry_cols[col.name] = col.type.geometry_type
    return frozenset(writable), frozenset(required), geometry_cols


def check_rows(
    model: type[Base],
    rows: Iterable[Mapping[str, Any]],
    *,
    fixed: Mapping[str, Any],
    label: str,
    tile_keys: tuple[str, str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Plain dict rows for a bulk insert into ``model``'s table.

    ``fixed`` values are set on every row (a row may repeat them, not contradict
    them); ``defaults`` fill keys a row leaves out. A missing geometry is the
    outline of the row's tile when ``tile_keys`` names its (z, x, y) keys.
    Unknown keys, missing required keys and bad geometries raise :class:`RowError`
    naming ``label`` and the row index.
    """
    table: Table = model.__table__  # type: ignore[assignment]
    writable, required, geometry_cols = _columns(table)
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        unknown = row.keys() - writable
        if unknown:
            raise RowError(
                f"{label}[{i}]: unknown column(s) {sorted(unknown)}; "
                f"{table.name} has {sorted(writable)}"
            )
        clean = dict(defaults or {})
        for key, value in row.items():
            clean[key] = value if key in geometry_cols else plain(value)
        for key, value in fixed.items():
            if key in row and plain(row[key]) != value:
                raise RowError(f"{label}[{i}]: {key}={row[key]!r} contradicts {key}={value!r}")
            clean[key] = value
        if (
            tile_keys
            and clean.get("geometry") is None
            and all(clean.get(k) is not None for k in tile_keys)
        ):
            z, x, y = (clean[k] for k in tile_keys)
            clean["geometry"] = tile_polygon(x, y, z)
        missing = [k for k in required if clean.get(k) is None]
        if missing:
            raise RowError(f"{label}[{i}]: required column(s) {sorted(missing)} missing or None")
        out.append(clean)
    for col, geometry_type in geometry_cols.items():
        present = [r for r in out if r.get(col) is not None]
        if present:
            geoms = check_geometries(
                [r[col] for r in present], geometry_type, label=f"{label} {col}"
            )
            for r, g in zip(present, geoms, strict=True):
                r[col] = g
    return out


def dialect_insert(session: Session, model: type[Base]) -> Insert:
    """``INSERT`` for ``model`` that supports ``on_conflict_do_*`` on this session's dialect."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"upserts are implemented for PostgreSQL and SQLite, not {name}")


def upsert(
    session: Session,
    model: type[Base],
    values: Mapping[str, Any],
    keys: Sequence[str],
    *,
    also_set: Mapping[str, Any] | None = None,
    returning: Any = None,
) -> Any:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` the other ``values`` (+ ``also_set``)."""
    stmt = dialect_insert(session, model).values(dict(values))
    update = {k: stmt.excluded[k] for k in values if k not in keys}
    update.update(also_set or {})
    if update:
        stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=update)
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    if returning is not None:
        return session.execute(stmt.returning(returning)).scalar_one()
    session.execute(stmt)
    return None
