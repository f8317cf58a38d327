"""Migrations: upgrade an empty database on both dialects; ORM and schema agree."""

from __future__ import annotations

import datetime as dt
import re
import subprocess

import pytest
import shapely
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipeline.db import geopackage
from pipeline.db.__main__ import main
from pipeline.db.engine import make_engine
from pipeline.db.migrate import current_revision, head_revision, schema_diff, upgrade
from pipeline.db.models import Aoi, Base, Finding, Run
from pipeline.db.revision import SCHEMA_HEAD, at_schema_head

GEOMETRY_COLUMNS = {
    "aoi": "MULTIPOLYGON",
    "tile_score": "POLYGON",
    "finding": "MULTIPOLYGON",
    "change": "MULTIPOLYGON",
    "hotspot": "MULTIPOLYGON",
}
VIEWS = {
    "latest_tile_score": "POLYGON",
    "latest_finding": "MULTIPOLYGON",
    "latest_change": "MULTIPOLYGON",
    "latest_hotspot": "MULTIPOLYGON",
}


def test_upgrade_creates_every_table_and_is_idempotent(empty_engine):
    assert current_revision(empty_engine) is None
    upgrade(empty_engine)
    assert current_revision(empty_engine) == head_revision() == "0007"
    tables = set(inspect(empty_engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    upgrade(empty_engine)  # already at head: nothing to do, no error
    assert current_revision(empty_engine) == "0007"


def test_schema_head_is_alembics_head_and_tells_a_migrated_database(empty_engine):
    """Opening a context skips Alembic when the database is at SCHEMA_HEAD: the
    constant must be the migrations' own head, and must tell migrated from not."""
    assert head_revision() == SCHEMA_HEAD
    assert not at_schema_head(empty_engine)  # never migrated: no alembic_version table
    upgrade(empty_engine, "0006")
    assert not at_schema_head(empty_engine)  # an older revision
    upgrade(empty_engine)
    assert at_schema_head(empty_engine)


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
    assert {r.f_table_name: r.type for r in rows} == GEOMETRY_COLUMNS | VIEWS
    assert {r.srid for r in rows} == {4326}
    assert {r.coord_dimension for r in rows} == {2}
    assert gist == {f"ix_{t}_geometry" for t in GEOMETRY_COLUMNS}


def test_sqlite_is_a_geopackage_with_spatial_indexes(sqlite_url):
    """SQLite: GeoPackage registration of every geometry table and view, EPSG:4326, an
    R*Tree per table (the GiST indexes are PostgreSQL-only)."""
    engine = make_engine(sqlite_url)
    upgrade(engine)
    with engine.connect() as conn:
        app_id = conn.exec_driver_sql("PRAGMA application_id").scalar()
        columns = conn.exec_driver_sql(
            "SELECT table_name, geometry_type_name, srs_id FROM gpkg_geometry_columns"
        ).all()
        rtrees = conn.exec_driver_sql(
            "SELECT table_name FROM gpkg_extensions WHERE extension_name = 'gpkg_rtree_index'"
        ).scalars()
        rtrees = set(rtrees)
    assert app_id == 0x47504B47
    assert {t: g for t, g, _ in columns} == GEOMETRY_COLUMNS | VIEWS
    assert {srs for *_, srs in columns} == {4326}
    assert rtrees == set(GEOMETRY_COLUMNS)
    insp = inspect(engine)
    names = {i["name"] for t in GEOMETRY_COLUMNS for i in insp.get_indexes(t)}
    assert names and not any(n.endswith("_geometry") for n in names)
    engine.dispose()


def _sqlite_schema(engine) -> dict[str, object]:
    """Our tables' declared column types and nullability, and our indexes' SQL, as SQLite
    keeps them (GeoPackage's own tables left out; column order may differ)."""
    with engine.connect() as conn:
        tables = (
            conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'gpkg%' AND name NOT LIKE 'rtree%' AND name NOT LIKE 'sqlite%'"
            )
            .scalars()
            .all()
        )
        schema: dict[str, object] = {
            t: sorted((r[1], r[2], r[3]) for r in conn.exec_driver_sql(f'PRAGMA table_info("{t}")'))
            for t in tables
        }
        indexes = conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ).all()
    schema["indexes"] = sorted((n, " ".join(sql.replace('"', "").split())) for n, sql in indexes)
    return schema


def test_a_0005_store_migrates_to_the_geopackage_store(sqlite_url, tmp_path):
    """An embedded store from before 0006 (WKB blobs, VARCHAR and JSON columns) ends with
    the same schema as a new one, its geometries typed, indexed and readable."""
    engine = make_engine(sqlite_url)
    upgrade(engine, "0005")
    square = shapely.box(8.54, 47.36, 8.55, 47.37)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO aoi (id, name, config, geometry) VALUES (1, 'old', '{}', ?)",
            (shapely.to_wkb(shapely.MultiPolygon([square])),),
        )
        conn.exec_driver_sql(
            "INSERT INTO run (id, aoi_id, step, status, trigger) "
            "VALUES (1, 1, '2024-01', 'succeeded', 'cli')"
        )
        conn.exec_driver_sql(
            "INSERT INTO finding (id, run_id, kind, detail, geometry) "
            "VALUES (1, 1, 'missing_in_opendata', '{\"evidence\": 3.5}', ?)",
            (shapely.to_wkb(square),),
        )
        conn.exec_driver_sql(
            "INSERT INTO model_version (id, name, version, stage, arch, encoder, weights_uri, "
            "weights_sha256) VALUES (1, 'm', 1, 'candidate', 'unet', 'r18', 'u', 'h'), "
            "(2, 'm', 2, 'candidate', 'unet', 'r18', 'u', 'h')"
        )
    upgrade(engine)
    fresh = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    upgrade(fresh)
    assert _sqlite_schema(engine) == _sqlite_schema(fresh)
    assert schema_diff(engine) == []
    with Session(engine) as s:
        finding = s.get(Finding, 1)
        assert finding.geometry.geom_type == "MultiPolygon"
        assert shapely.equals(finding.geometry, square)
        assert s.get(Aoi, 1).geometry.equals(shapely.MultiPolygon([square]))
    with engine.connect() as conn:
        blob = conn.exec_driver_sql("SELECT geometry FROM finding").scalar()
        indexed = conn.exec_driver_sql("SELECT COUNT(*) FROM rtree_finding_geometry").scalar()
        evidence = conn.exec_driver_sql("SELECT evidence FROM latest_finding").scalar()
    assert blob[:2] == b"GP" and indexed == 1 and evidence == 3.5
    # a second production version of one name is still refused: the partial unique
    # index kept its WHERE when the table was copied
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE model_version SET stage = 'production' WHERE id = 1")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql("UPDATE model_version SET stage = 'production' WHERE id = 2")
    engine.dispose()
    fresh.dispose()


def test_command_line_upgrade_and_check(sqlite_url, capsys):
    assert main(["current", sqlite_url]) == 0
    assert main(["upgrade", sqlite_url]) == 0
    assert main(["check", sqlite_url]) == 0
    assert capsys.readouterr().out.split() == ["(not", "migrated)", "0007"]


GPKG_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_timestamps_are_geopackage_datetimes_before_and_after_0007(tmp_path):
    """Timestamps stored before 0007 (SQLAlchemy's and SQLite's forms) and rows written
    after it read back alike, in the form GDAL reads without a warning."""
    path = tmp_path / "geoaudit.gpkg"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine, "0006")
    square = shapely.MultiPolygon([shapely.box(8.54, 47.36, 8.55, 47.37)])
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO aoi (id, name, config, geometry, created_at, updated_at) "
            "VALUES (1, 'old', '{}', ?, '2026-12-03 20:47:04.123456', CURRENT_TIMESTAMP)",
            (geopackage.to_blob(square, 4326),),
        )
    upgrade(engine)
    with Session(engine) as s:
        s.add(Run(aoi_id=1, step="2026-01", status="running", trigger="cli"))
        s.commit()
        aoi = s.get(Aoi, 1)
        assert aoi.created_at == dt.datetime(2026, 12, 3, 20, 47, 4, 123000, tzinfo=dt.UTC)
        assert aoi.updated_at.tzinfo == dt.UTC
        started = s.scalars(select(Run.started_at)).one()
        assert abs(dt.datetime.now(dt.UTC) - started) < dt.timedelta(minutes=5)
    with engine.connect() as conn:
        stored = conn.exec_driver_sql(
            "SELECT created_at, updated_at FROM aoi UNION ALL SELECT started_at, NULL FROM run"
        ).all()
    for value in (v for row in stored for v in row if v is not None):
        assert GPKG_DATETIME.fullmatch(value), value
    engine.dispose()
    read = subprocess.run(
        ["ogrinfo", "-ro", "-al", "-q", str(path), "aoi"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Warning" not in read.stderr + read.stdout and "old" in read.stdout
