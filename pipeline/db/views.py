"""Views of each AOI's latest results, for GIS clients (QGIS, ogrinfo) and SQL users.

"Latest" is the newest succeeded run of the AOI's latest audited step (the step
the dashboard's overview shows). Every view has the AOI's name and the step, so
a QGIS user filters by AOI without joining ``run``:

* ``latest_tile_score``: tile scores (Polygon);
* ``latest_finding``: findings with their evidence (the review queue's order) and
  the reviewer's verdict, if any (MultiPolygon);
* ``latest_change``: changes into the latest step (MultiPolygon);
* ``latest_hotspot``: significant hotspot cells, clipped to the AOI (MultiPolygon).

The views are derived schema: :func:`pipeline.db.migrate.upgrade` drops them
before migrating and creates them after, so a migration may alter the tables they
read. A change to a view's SQL therefore comes with a new migration revision.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from pipeline.db.geopackage import Layer
from pipeline.db.identifiers import quote_name
from pipeline.db.types import SRID


@dataclass(frozen=True)
class View:
    """A view: its name, its SQL (``{evidence}`` is the dialect's JSON read) and layer."""

    name: str
    geometry_type: str
    description: str
    select: str

    def create_statement(self, evidence: str) -> str:
        """``CREATE VIEW``, with the dialect's expression for a finding's evidence."""
        return f"CREATE VIEW {quote_name(self.name)} AS {self.select.format(evidence=evidence)}"

    @property
    def layer(self) -> Layer:
        return Layer(self.name, "geometry", self.geometry_type, SRID, self.description, view=True)


_LATEST_RUN = """
    WITH latest AS (
        SELECT r.id AS run_id, r.aoi_id, r.step,
               ROW_NUMBER() OVER (PARTITION BY r.aoi_id ORDER BY r.step DESC, r.id DESC) AS rn
        FROM run r
        WHERE r.status = 'succeeded'
    )"""

VIEWS: tuple[View, ...] = (
    View(
        "latest_tile_score",
        "POLYGON",
        "Tile scores of each AOI's latest audited step",
        _LATEST_RUN
        + """
    SELECT t.id, a.name AS aoi, l.step, t.run_id, t.z, t.x, t.y, t.iou, t.precision,
           t.recall, t.f1, t.qod, t.fg_label, t.fg_pred, t.n_findings, t.flagged, t.geometry
    FROM tile_score t
    JOIN latest l ON l.run_id = t.run_id AND l.rn = 1
    JOIN aoi a ON a.id = l.aoi_id""",
    ),
    View(
        "latest_finding",
        "MULTIPOLYGON",
        "Findings of each AOI's latest audited step, with evidence and review verdict",
        _LATEST_RUN
        + """
    SELECT f.id, a.name AS aoi, l.step, f.run_id, f.kind, f.feature_id, f.area_m2,
           f.confidence, {evidence} AS evidence, f.iou, f.offset_m,
           f.tile_z, f.tile_x, f.tile_y, rv.verdict, rv.reviewer, rv.comment,
           rv.updated_at AS reviewed_at, f.geometry
    FROM finding f
    JOIN latest l ON l.run_id = f.run_id AND l.rn = 1
    JOIN aoi a ON a.id = l.aoi_id
    LEFT JOIN review rv ON rv.finding_id = f.id""",
    ),
    View(
        "latest_change",
        "MULTIPOLYGON",
        "Changes into each AOI's latest audited step",
        _LATEST_RUN
        + """
    SELECT c.id, a.name AS aoi, c.step_from, c.step_to, c.run_id, c.kind, c.feature_id,
           c.area_m2, c.confidence, c.geometry
    FROM change c
    JOIN latest l ON l.run_id = c.run_id AND l.rn = 1
    JOIN aoi a ON a.id = l.aoi_id""",
    ),
    View(
        "latest_hotspot",
        "MULTIPOLYGON",
        "Significant hotspot cells of each AOI's latest audited step",
        _LATEST_RUN
        + """
    SELECT h.id, a.name AS aoi, l.step, h.run_id, h.rank, h.z, h.x, h.y, h.gi_star,
           h.n_findings, h.geometry
    FROM hotspot h
    JOIN latest l ON l.run_id = h.run_id AND l.rn = 1
    JOIN aoi a ON a.id = l.aoi_id""",
    ),
)

_EVIDENCE = {
    "postgresql": "(f.detail ->> 'evidence')::double precision",
    "sqlite": "CAST(json_extract(f.detail, '$.evidence') AS REAL)",
}


def create_views(conn: Connection) -> None:
    """Create (or replace) every view on ``conn``'s database."""
    evidence = _EVIDENCE[conn.dialect.name]
    for view in VIEWS:
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {quote_name(view.name)}")
        conn.exec_driver_sql(view.create_statement(evidence))


def drop_views(conn: Connection) -> None:
    """Drop every view (before a migration alters the tables they read)."""
    for view in VIEWS:
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {quote_name(view.name)}")
