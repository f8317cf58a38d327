"""Column types: geometries, JSON and timestamps behave alike on SQLite and PostGIS."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import shapely
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

from pipeline.db import repo
from pipeline.db.errors import RowError
from pipeline.db.models import Aoi, Finding, Run
from pipeline.db.types import check_geometries, to_jsonable

POLYGON = shapely.Polygon(
    [(-9.14, 38.70), (-9.13, 38.70), (-9.13, 38.71), (-9.1375, 38.712), (-9.14, 38.71)],
    holes=[[(-9.138, 38.702), (-9.136, 38.702), (-9.136, 38.704), (-9.138, 38.702)]],
)


def test_polygon_round_trip(engine):
    with Session(engine) as s, s.begin():
        repo.upsert_aoi(s, "lisbon", {"zoom": 18}, POLYGON)
    with Session(engine) as s:
        geom = s.scalars(select(Aoi.geometry)).one()
    # an AOI outline is stored as a MultiPolygon (an AOI may have several parts)
    assert isinstance(geom, shapely.MultiPolygon)
    assert shapely.equals_exact(geom, shapely.MultiPolygon([POLYGON]), tolerance=0)
    assert shapely.get_srid(geom) == 0  # plain shapely out, whatever the dialect


@pytest.mark.postgres
def test_postgis_stores_srid_4326_and_type(pg_engine):
    with Session(pg_engine) as s, s.begin():
        repo.upsert_aoi(s, "lisbon", {}, POLYGON)
    with pg_engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT ST_SRID(geometry) AS srid, GeometryType(geometry) AS type, "
                "ST_AsText(geometry) AS wkt, ST_Area(geometry) AS area FROM aoi"
            )
        ).one()
    assert row.srid == 4326
    assert row.type == "MULTIPOLYGON"
    assert shapely.equals_exact(
        shapely.from_wkt(row.wkt), shapely.MultiPolygon([POLYGON]), tolerance=0
    )
    assert row.area == pytest.approx(POLYGON.area)


def test_finding_geometries_are_stored_as_multipolygons(engine, make_run):
    """The finding column is typed (QGIS needs one type per layer): polygons and
    polygonal collections are stored as MultiPolygons, a point is refused."""
    run_id = make_run()
    touching = shapely.GeometryCollection([POLYGON, shapely.LineString(POLYGON.exterior)])
    geoms = [POLYGON, shapely.MultiPolygon([POLYGON]), touching]
    with Session(engine) as s, s.begin():
        repo.replace_findings(s, run_id, [{"kind": "missing", "geometry": g} for g in geoms])
    with Session(engine) as s:
        out = s.scalars(select(Finding.geometry).order_by(Finding.id)).all()
    assert [g.geom_type for g in out] == ["MultiPolygon"] * 3
    assert all(shapely.equals(g, POLYGON) for g in out)
    point = {"kind": "missing", "geometry": shapely.Point(-9.135, 38.705)}
    with (
        Session(engine) as s,
        pytest.raises(RowError, match=r"geometry\[0\]: column holds MULTIPOLYGON geometries"),
    ):
        repo.replace_findings(s, run_id, [point])
    with Session(engine) as s:  # nothing stored was lost
        assert len(s.scalars(select(Finding.id).where(Finding.run_id == run_id)).all()) == 3


def test_z_coordinates_are_dropped(engine):
    with Session(engine) as s, s.begin():
        repo.upsert_aoi(s, "z", {}, shapely.force_3d(POLYGON, 12.0))
    with Session(engine) as s:
        geom = s.scalars(select(Aoi.geometry)).one()
    assert not geom.has_z and shapely.equals_exact(geom, shapely.MultiPolygon([POLYGON]), 0)


def test_wrong_geometry_type_is_refused(engine):
    with (
        Session(engine) as s,
        pytest.raises(RowError, match=r"holds MULTIPOLYGON geometries, got Point"),
    ):
        repo.upsert_aoi(s, "p", {}, shapely.Point(0, 0))


def test_web_mercator_coordinates_are_refused(engine):
    mercator = shapely.box(-1017529.7, 4676721.9, -1016306.7, 4677944.9)
    with Session(engine) as s, pytest.raises(RowError, match="EPSG:4326"):
        repo.upsert_aoi(s, "merc", {}, mercator)


def test_orm_path_checks_geometries_too(engine):
    """Models used directly (not through repo) still refuse bad geometries."""
    with Session(engine) as s:
        s.add(Aoi(name="x", config={}, geometry=shapely.Point(1, 1)))
        with pytest.raises(StatementError, match="holds MULTIPOLYGON geometries"):
            s.flush()


def test_check_geometries_names_the_row():
    with pytest.raises(RowError, match=r"rows geometry\[1\]: expected a shapely geometry"):
        check_geometries([POLYGON, "POLYGON((0 0,1 0,1 1,0 0))"], label="rows geometry")
    assert check_geometries([], "POLYGON").shape == (0,)


def test_json_cleans_numpy_and_nan(engine, make_run):
    run_id = make_run(params={"zoom": np.int64(18), "thr": np.float32(0.5), "bad": float("nan")})
    with Session(engine) as s:
        params = s.get(Run, run_id).params
        assert params == {"zoom": 18, "thr": 0.5, "bad": None}
        null = s.scalar(select(Run.id).where(Run.id == run_id, Run.stage_seconds.is_(None)))
    assert null == run_id  # Python None is SQL NULL, not JSON 'null'


def test_to_jsonable():
    value = {1: np.arange(3), "s": {2, 1}, "d": dt.date(2024, 6, 1), "inf": float("inf")}
    assert to_jsonable(value) == {"1": [0, 1, 2], "s": [1, 2], "d": "2024-06-01", "inf": None}


def test_timestamps_are_aware_utc(engine, make_run):
    run_id = make_run()
    with Session(engine) as s:
        started = s.get(Run, run_id).started_at
    assert started.tzinfo is not None and started.utcoffset() == dt.timedelta(0)
    assert abs(dt.datetime.now(dt.UTC) - started) < dt.timedelta(minutes=5)
