"""Migrations: upgrade an empty database on both dialects; ORM and schema agree."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from pipeline.db.__main__ import main
from pipeline.db.engine import make_engine
from pipeline.db.migrate import current_revision, head_revision, schema_diff, upgrade
from pipeline.db.models import Base

GEOMETRY_COLUMNS = {
    "aoi": "MULTIPOLYGON",
    "tile_score": "POLYGON",
    "finding": "GEOMETRY",
    "change": "GEOMETRY",
    "hotspot": "POLYGON",
}


def test_upgrade_creates_every_table_and_is_idempotent(empty_engine):
    assert current_revision(empty_engine) is None
    upgrade(empty_engine)
    assert current_revision(empty_engine) == head_revision() == "0005"
    tables = set(inspect(empty_engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    upgrade(empty_engine)  # already at head: nothing to do, no error
    assert current_revision(empty_engine) == "0005"


def test_migrated_schema_matches_models(empty_engine):
    upgrade(empty_engine)
    assert schema_diff(empty_engine) == []


def test_constraint_names_match_models(empty_engine):
    """Autogenerate does not compare CHECK constraints; names must still agree."""
    upgrade(empty_engine)
    insp = inspect(empty_engine)
    for name, table in Base.metadata.tables.items():
        expected = {c.name for c in table.constraints if c.__class__.__name__ == "CheckConstraint"}
        found = {c["name"] for c in insp.get_check_constraints(name)}
        assert found == expected, name


def test_schema_diff_reports_drift(empty_engine):
    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_run_external_id"))
    diff = schema_diff(empty_engine)
    assert any(d[0] == "add_index" and d[1].name == "ix_run_external_id" for d in diff)


@pytest.mark.postgres
def test_postgis_columns_are_typed_for_qgis(pg_engine):
    """QGIS reads geometry_columns: every geometry column has its type and SRID 4326."""
    with pg_engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT f_table_name, type, srid, coord_dimension FROM geometry_columns "
                "WHERE f_table_schema = current_schema()"
            )
        ).all()
        gist = set(
            conn.scalars(
                text(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                    "AND indexdef LIKE '%USING gist (geometry)%'"
                )
            )
        )
    assert {r.f_table_name: r.type for r in rows} == GEOMETRY_COLUMNS
    assert {r.srid for r in rows} == {4326}
    assert {r.coord_dimension for r in rows} == {2}
    assert gist == {f"ix_{t}_geometry" for t in GEOMETRY_COLUMNS}


def test_sqlite_has_no_spatial_indexes(sqlite_url):
    """The GiST indexes are PostgreSQL-only; SQLite gets plain tables with WKB blobs."""
    engine = make_engine(sqlite_url)
    upgrade(engine)
    insp = inspect(engine)
    names = {i["name"] for t in GEOMETRY_COLUMNS for i in insp.get_indexes(t)}
    assert names and not any(n.endswith("_geometry") for n in names)
    assert {c["name"]: str(c["type"]) for c in insp.get_columns("aoi")}["geometry"] == "BLOB"
    engine.dispose()


def test_command_line_upgrade_and_check(sqlite_url, capsys):
    assert main(["current", sqlite_url]) == 0
    assert main(["upgrade", sqlite_url]) == 0
    assert main(["check", sqlite_url]) == 0
    assert capsys.readouterr().out.split() == ["(not", "migrated)", "0005"]
