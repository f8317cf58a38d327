"""Building footprints from a PostGIS table or SQL query (SQLAlchemy + geopandas).

Rules:
- ``table`` (``name`` or ``schema.name``) must exist and ``geometry_column`` /
  ``id_column`` must be among its columns (checked with SQLAlchemy's inspector, then
  quoted by SQLAlchemy's identifier preparer); ``query`` is the operator's own SQL,
  one SELECT/WITH statement, used as a sub-query whose columns are checked the same
  way. Every statement is composed with SQLAlchemy Core (no SQL text is built) and runs
  in a READ ONLY transaction.
- The bbox is bound parameters, never text: ``ST_Intersects(geom, ST_Transform(
  ST_Segmentize(ST_MakeEnvelope(w, s, e, n, 4326), seg), srid))`` with the
  column's SRID (``:seg`` densifies the edges before they are projected), so the
  spatial index is used.
- Geometries are read in their SRID (the declared ``crs`` of ``read_info``) and
  reprojected to EPSG:4326; a column without SRID (0) is an error.
- Ids: ``id_column``, else as ``vector`` (``feature_id``, ``id``, ``osm_id``...), else
  geometry ids.
- Fingerprint: computed in SQL over the rows in the fingerprint area,
  ``md5(string_agg(md5(row::text), '' ORDER BY id))`` with the row count, so nothing
  is transferred; any change of any column of a row changes it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import geopandas as gpd
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.pool import NullPool

from pipeline.errors import ConfigError, VectorDataError
from pipeline.sources.base import register_vector
from pipeline.sources.frames import Bbox, feature_ids
from pipeline.sources.service import ServiceSource
from pipeline.sources.specs import PostGisSpec
from pipeline.sources.urls import scrub

log = logging.getLogger(__name__)


@register_vector("postgis")
class PostGisSource(ServiceSource):
    """A PostGIS table or query (module docstring for the rules)."""

    def __init__(
        self, spec: PostGisSpec, *, step: str | None = None, base_dir: Path | None = None
    ) -> None:
        super().__init__(spec, step=step, base_dir=base_dir)
        self.spec: PostGisSpec = spec
        self.what = f"PostGIS {self.path}"
        try:
            self.engine = sa.create_engine(spec.url, poolclass=NullPool)
        except (sa.exc.ArgumentError, ImportError, ValueError) as exc:
            raise ConfigError(
                f"{self.what}: url is not a usable SQLAlchemy URL ({scrub(str(exc), spec.url)})"
            ) from exc
        self._relation: tuple[sa.FromClause, list[str], int] | None = None

    def close(self) -> None:
        self.engine.dispose()

    # -- SQL ---------------------------------------------------------------------------

    @contextmanager
    def _connection(self, action: str) -> Iterator[sa.Connection]:
        """A read-only transaction; database errors become :class:`VectorDataError`."""
        try:
            with self.engine.connect() as conn, conn.begin():
                conn.execute(sa.text("SET TRANSACTION READ ONLY"))
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise VectorDataError(
                f"{self.what}: {action} failed ({scrub(reason, self.spec.url)})"
            ) from exc

    def relation(self, conn: sa.Connection) -> tuple[sa.FromClause, list[str], int]:
        """``(the table or query as a FROM clause aliased src, its column names, the SRID
        of the geometry column)``; identifiers checked against the database."""
        if self._relation is not None:
            return self._relation
        spec = self.spec
        if spec.table is not None:
            schema, _, name = spec.table.rpartition(".")
            inspector = sa.inspect(conn)
            views = inspector.get_view_names(schema=schema or None)
            views += inspector.get_materialized_view_names(schema=schema or None)
            if not inspector.has_table(name, schema=schema or None) and name not in views:
                tables = ", ".join(sorted(inspector.get_table_names(schema=schema or None)))
                raise VectorDataError(
                    f"{self.what}: no table {spec.table!r}; tables: {tables or 'none'}"
                )
            columns = [c["name"] for c in inspector.get_columns(name, schema=schema or None)]
            src: sa.FromClause = sa.table(
                name, *(sa.column(c) for c in columns), schema=schema or None
            ).alias("src")
        else:
            probe = sa.text(spec.query).columns().subquery("src")  # the operator's SELECT
            columns = list(
                conn.execute(sa.select(sa.literal_column("*")).select_from(probe).limit(0)).keys()
            )
            src = sa.text(spec.query).columns(*(sa.column(c) for c in columns)).subquery("src")
        for role, column in (
            ("geometry_column", spec.geometry_column),
            ("id_column", spec.id_column),
        ):
            if column is not None and column not in columns:
                raise VectorDataError(
                    f"{self.what}: {role} {column!r} not found; columns: {', '.join(columns)}"
                )
        geom = src.c[spec.geometry_column]
        srid = conn.execute(
            sa.select(sa.func.ST_SRID(geom)).where(geom.is_not(None)).limit(1)
        ).scalar()
        if srid == 0:
            raise VectorDataError(
                f"{self.what}: geometry column {spec.geometry_column!r} has no SRID; set one "
                "(UpdateGeometrySRID / ST_SetSRID)"
            )
        self._relation = (src, columns, int(srid or 4326))
        return self._relation

    def _within(self, src: sa.FromClause, bbox: Bbox | None, srid: int) -> sa.ColumnElement[bool]:
        """The rows over ``bbox``: bound parameters, the column's spatial index used."""
        if bbox is None:
            return sa.true()
        w, s, e, n = (float(v) for v in bbox)
        seg = max(e - w, n - s, 1e-9) / 16
        f = sa.func
        envelope = f.ST_Transform(f.ST_Segmentize(f.ST_MakeEnvelope(w, s, e, n, 4326), seg), srid)
        return f.ST_Intersects(src.c[self.spec.geometry_column], envelope)

    # -- reading -------------------------------------------------------------------------

    def _fetch(self, bbox: Bbox | None) -> gpd.GeoDataFrame:
        with self._connection("query") as conn:
            src, _, srid = self.relation(conn)
            query = sa.select(src).where(self._within(src, bbox, srid))
            frame = gpd.read_postgis(query, conn, geom_col=self.spec.geometry_column)
        if frame.crs is None:
            frame = frame.set_crs(srid)
        return frame

    def _ids(self, gdf: gpd.GeoDataFrame) -> pd.Series:
        return feature_ids(gdf, self.spec.id_column, self.what)

    def fingerprint(self) -> str:
        """sha256 of the row count and ``md5(string_agg(md5(row::text) ORDER BY id))``
        over the rows in :meth:`fingerprint_area`, computed by the database."""
        area = self.fingerprint_area()
        with self._connection("fingerprint") as conn:
            src, _, srid = self.relation(conn)
            row_md5 = sa.func.md5(sa.cast(sa.literal_column("src"), sa.Text))
            order = [row_md5]
            if self.spec.id_column:
                order.insert(0, sa.cast(src.c[self.spec.id_column], sa.Text))
            digest = sa.func.md5(
                sa.func.string_agg(row_md5, aggregate_order_by(sa.literal(""), *order))
            )
            query = sa.select(sa.func.count(), digest).select_from(src)
            count, value = conn.execute(query.where(self._within(src, area, srid))).one()
        return hashlib.sha256(f"postgis|{count}|{value or ''}".encode()).hexdigest()


__all__ = ["PostGisSource"]
