"""kind: postgis against the test PostgreSQL: a database of our own with PostGIS, loaded
with the real OSM buildings of Lalitpur (in EPSG:32645, to exercise the transforms)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import geopandas as gpd
import pytest
import shapely
import sqlalchemy as sa
from opendata_servers import osm_buildings
from sqlalchemy.engine import make_url

from pipeline.errors import VectorDataError
from pipeline.sources import open_vector
from pipeline.sources.specs import PostGisSpec

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BBOX = (85.535, 27.62, 85.54, 27.63)


@pytest.fixture(scope="module")
def pg() -> Iterator[tuple[str, gpd.GeoDataFrame]]:
    """``(url, buildings)``: a fresh ``geoaudit_src_<random>`` database with table
    ``osm.buildings`` (id, osm_id, building, geom in EPSG:32645), dropped afterwards."""
    admin_url = make_url(os.environ.get("GEOAUDIT_TEST_PG_URL", ADMIN_URL))
    name = f"geoaudit_src_{secrets.token_hex(4)}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        reason = f"PostgreSQL unavailable at {admin_url.render_as_string()}: {exc}"
        if os.environ.get("GEOAUDIT_REQUIRE_PG") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    url = admin_url.set(database=name)
    gdf = osm_buildings()
    gdf.insert(0, "id", [f"b{i}" for i in range(len(gdf))])
    gdf["building"] = "yes"
    eng = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with eng.begin() as conn:
            conn.execute(sa.text("CREATE EXTENSION postgis"))
            conn.execute(sa.text("CREATE SCHEMA osm"))
            conn.execute(sa.text("CREATE SEQUENCE osm.counter"))
        gdf.to_crs(32645).rename_geometry("geom").to_postgis(
            "buildings", eng, schema="osm", index=False
        )
        yield url.render_as_string(hide_password=False), gdf
    finally:
        eng.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def read(spec: PostGisSpec, bbox=None) -> gpd.GeoDataFrame:  # noqa: ANN001
    with open_vector(spec) as src:
        return src.read(bbox)


def test_table_reads_the_buildings_reprojected(pg) -> None:  # noqa: ANN001
    url, gdf = pg
    with open_vector(PostGisSpec(url=url, table="osm.buildings", id_column="id")) as src:
        got = src.read()
        assert src.read_info() == {
            "n_read": 80,
            "crs": "EPSG:32645",
            "dropped": {},
            "no_geometry": 0,
        }
    assert got.crs.to_epsg() == 4326 and len(got) == 80
    assert list(got.columns) == ["feature_id", "id", "osm_id", "geometry", "building"]
    assert sorted(got.feature_id) == sorted(gdf.id)
    got, want = got.set_index("feature_id"), gdf.set_index("id")
    distance = shapely.hausdorff_distance(got.geometry.loc[want.index].values, want.geometry.values)
    assert distance.max() < 1e-9  # the UTM round trip


def test_bbox_is_a_bound_parameter_filter(pg) -> None:  # noqa: ANN001
    url, gdf = pg
    got = read(PostGisSpec(url=url, table="osm.buildings", id_column="id"), BBOX)
    want = gdf[gdf.intersects(shapely.box(*BBOX))]
    assert 0 < len(got) < 80 and set(got.feature_id) == set(want.id)


def test_query_and_default_ids(pg) -> None:  # noqa: ANN001
    url, gdf = pg
    spec = PostGisSpec(
        url=url, query="SELECT osm_id, geom FROM osm.buildings WHERE osm_id IS NOT NULL;"
    )
    got = read(spec)
    assert len(got) == 57  # the buildings with an osm_id, which become the ids
    assert set(got.feature_id) == {str(int(v)) for v in gdf.osm_id.dropna()}


def test_fingerprint_is_computed_in_sql_and_follows_the_data(pg) -> None:  # noqa: ANN001
    url, _ = pg
    spec = PostGisSpec(url=url, table="osm.buildings", id_column="id")
    with open_vector(spec, bbox=BBOX) as src:
        first = src.fingerprint()
    with open_vector(spec, bbox=BBOX) as src:
        assert src.fingerprint() == first
    with open_vector(spec) as src:  # everything: another area, another fingerprint
        whole = src.fingerprint()
        assert whole != first
    eng = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with eng.begin() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT id FROM osm.buildings WHERE ST_Intersects(ST_Transform(geom, 4326), "
                    "ST_MakeEnvelope(:w, :s, :e, :n, 4326)) ORDER BY id LIMIT 1"
                ),
                dict(zip("wsen", BBOX, strict=True)),
            ).scalar_one()
            conn.execute(
                sa.text("UPDATE osm.buildings SET building = 'house' WHERE id = :id"), {"id": row}
            )
        with open_vector(spec, bbox=BBOX) as src:
            assert src.fingerprint() != first  # an attribute changed
    finally:
        with eng.begin() as conn:
            conn.execute(sa.text("UPDATE osm.buildings SET building = 'yes'"))
        eng.dispose()
    with open_vector(spec, bbox=BBOX) as src:
        assert src.fingerprint() == first


def test_identifiers_are_checked_and_quoted(pg) -> None:  # noqa: ANN001
    url, _ = pg
    with pytest.raises(VectorDataError, match=r"no table 'osm.roads'; tables: buildings"):
        read(PostGisSpec(url=url, table="osm.roads"))
    with pytest.raises(
        VectorDataError, match=r"geometry_column 'the_geom' not found; columns: id, osm_id"
    ):
        read(PostGisSpec(url=url, table="osm.buildings", geometry_column="the_geom"))
    with pytest.raises(ValueError, match="table must be 'name' or 'schema.name'"):
        PostGisSpec(url=url, table='buildings"; DROP TABLE x; --')
    with pytest.raises(ValueError, match="one statement"):
        PostGisSpec(url=url, query="SELECT 1; DROP TABLE osm.buildings")


def test_the_transaction_is_read_only(pg) -> None:  # noqa: ANN001
    url, _ = pg
    sneaky = "SELECT * FROM osm.buildings WHERE nextval('osm.counter') > 0"  # a write
    with pytest.raises(VectorDataError, match="read-only transaction"):
        read(PostGisSpec(url=url, query=sneaky))
    assert len(read(PostGisSpec(url=url, table="osm.buildings"))) == 80


def test_connection_errors_mask_the_password(pg) -> None:  # noqa: ANN001
    url = make_url(pg[0]).set(port=1, password="s3cret")
    spec = PostGisSpec(url=url.render_as_string(hide_password=False), table="osm.buildings")
    with pytest.raises(
        VectorDataError, match=r"PostGIS postgresql\+psycopg://postgres:\*\*\*@"
    ) as e:
        read(spec)
    assert "s3cret" not in str(e.value)
