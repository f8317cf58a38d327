"""STAC imagery: stac-fastapi-pgstac on loopback over a pgstac database in the test
PostgreSQL (migrated by pypgstac), with dated items pointing at COGs made from the real
Lalitpur tiles."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import shapely
from imagery_servers import NORTH_Z19, TILES, VENV_BIN, free_port, mosaic_of, uvicorn, write_cog
from rasterio.warp import transform_bounds

from pipeline.errors import ImageryError
from pipeline.sources import check_coverage, open_imagery
from pipeline.sources.base import latest_step
from pipeline.sources.specs import StacSpec, XyzSpec
from pipeline.tiles import Shard, Tile, lnglat_bounds

SHARD = Shard(Tile(96679, 55063, 17), 19)  # the four north tiles are blocks rows 0-1, cols 2-3
WEST, EAST = np.s_[0:512, 512:768], np.s_[0:512, 768:1024]  # tile columns 386718 / 386719
COLLECTION = "lalitpur-drone"
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _admin_dsn() -> str:
    url = os.environ.get("GEOAUDIT_TEST_PG_URL", PG_DEFAULT)
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _item(
    item_id: str, when: str, cog: Path, transform_bounds_3857: tuple, **props: object
) -> dict:
    west, south, east, north = transform_bounds("EPSG:3857", "EPSG:4326", *transform_bounds_3857)
    geometry = shapely.geometry.mapping(shapely.box(west, south, east, north))
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": COLLECTION,
        "geometry": geometry,
        "bbox": [west, south, east, north],
        "properties": {"datetime": when, **props},
        "assets": {"visual": {"href": str(cog), "type": "image/tiff; application=geotiff"}},
        "links": [],
    }


def _cogs(folder: Path) -> dict[str, tuple[Path, tuple]]:
    """old: the four tiles; new: the east column, colours inverted; cloudy: all red."""
    rgba, transform = mosaic_of(NORTH_Z19)
    full = (
        transform.c,
        transform.f - 512 * -transform.e,
        transform.c + 512 * transform.a,
        transform.f,
    )
    east = rgba[:, :, 256:].copy()
    east[:3] = 255 - east[:3]
    red = rgba.copy()
    red[:3] = np.array([200, 0, 0], np.uint8)[:, None, None]
    east_t = transform * transform.translation(256, 0)
    east_b = (east_t.c, full[1], full[2], full[3])
    return {
        "old": (write_cog(folder / "old.tif", rgba, transform), full),
        "new": (write_cog(folder / "new.tif", east, east_t), east_b),
        "cloudy": (write_cog(folder / "cloudy.tif", red, transform), full),
    }


class Stac:
    def __init__(self, url: str, dsn: str) -> None:
        self.url, self.dsn = url, dsn

    def upsert(self, item: dict) -> None:
        import psycopg
        from psycopg.types.json import Jsonb

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pgstac.upsert_item(%s)", (Jsonb(item),))


@pytest.fixture(scope="module")
def stac(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stac]:
    """stac-fastapi-pgstac over a fresh pgstac database holding three dated items."""
    import psycopg
    from psycopg.types.json import Jsonb

    admin = _admin_dsn()
    name = f"geoaudit_stac_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        reason = f"PostgreSQL at {admin.split('@')[-1]} is unusable: {exc}"
        if os.environ.get("GEOAUDIT_REQUIRE_PG") == "1":
            pytest.fail(f"GEOAUDIT_REQUIRE_PG=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    base, _, _db = admin.rpartition("/")
    dsn = f"{base}/{name}"
    try:
        done = subprocess.run(  # noqa: S603 (the venv's pypgstac)
            [str(VENV_BIN / "pypgstac"), "migrate", "--dsn", dsn],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"pypgstac migrate failed: {done.stderr[-2000:]}", pytrace=False)
        folder = tmp_path_factory.mktemp("stac")
        cogs = _cogs(folder)
        collection = {
            "type": "Collection",
            "stac_version": "1.0.0",
            "id": COLLECTION,
            "description": "OpenAerialMap drone tiles of Lalitpur, as COGs",
            "license": "CC-BY-4.0",
            "extent": {
                "spatial": {"bbox": [[-180, -90, 180, 90]]},
                "temporal": {"interval": [[None, None]]},
            },
            "links": [],
        }
        items = [
            _item("old", "2024-01-10T10:00:00Z", *cogs["old"], **{"eo:cloud_cover": 5}),
            _item("new", "2024-05-01T10:00:00Z", *cogs["new"], **{"eo:cloud_cover": 10}),
            _item("cloudy", "2024-06-01T10:00:00Z", *cogs["cloudy"], **{"eo:cloud_cover": 90}),
        ]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pgstac.create_collection(%s)", (Jsonb(collection),))
            for item in items:
                conn.execute("SELECT pgstac.create_item(%s)", (Jsonb(item),))
        host, port = "127.0.0.1", "5432"
        hostport = base.split("@")[-1].split("/")[0]
        if ":" in hostport:
            host, port = hostport.split(":")
        env = {
            "PGUSER": "postgres",
            "PGPASSWORD": "",
            "PGHOST": host,
            "PGPORT": port,
            "PGDATABASE": name,
            "DB_MIN_CONN_SIZE": "1",
            "DB_MAX_CONN_SIZE": "2",
        }
        with uvicorn("stac_fastapi.pgstac.app:app", env=env, cwd=folder, ready="/") as url:
            server = Stac(url, dsn)
            server.items = {i["id"]: i for i in items}  # type: ignore[attr-defined]
            yield server
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def local() -> np.ndarray:
    with open_imagery(XyzSpec(path=str(TILES))) as src:
        return src.read_shard(SHARD)


def _spec(stac: Stac, **extra: object) -> StacSpec:
    return StacSpec(url=stac.url, collections=[COLLECTION], **extra)


def test_newest_valid_pixel_wins(stac: Stac, local) -> None:  # noqa: ANN001
    spec = _spec(stac, max_cloud_cover=20)
    with open_imagery(spec, step="2024-05-15") as src:
        image = src.read_shard(SHARD)
    np.testing.assert_array_equal(image.valid, local.valid)
    # west column: only "old" has it -> the tile pixels; east: "new" (inverted) wins
    np.testing.assert_array_equal(
        image.data[(slice(None), *WEST)], local.data[(slice(None), *WEST)]
    )
    ok = local.valid[EAST]
    east = image.data[(slice(None), *EAST)][:, ok]
    np.testing.assert_array_equal(east, 255 - local.data[(slice(None), *EAST)][:, ok])


def test_cloud_cover_and_window(stac: Stac, local) -> None:  # noqa: ANN001
    with open_imagery(_spec(stac), step="2024-06-15") as src:  # no cloud limit: red wins
        image = src.read_shard(SHARD)
    assert (image.data[:, image.valid] == np.array([[200], [0], [0]])).all()
    with open_imagery(_spec(stac, window_days=30), step="2024-05-15") as src:
        only_new = src.read_shard(SHARD)  # "old" is outside (2024-04-16, 2024-05-15]
    assert not only_new.valid[WEST].any() and only_new.valid[EAST].any()
    with open_imagery(_spec(stac), step="2023-12-31") as src:
        assert not src.read_shard(SHARD).valid.any()
        assert src.footprint().is_empty


def test_latest_step_is_the_newest_item_on_or_before(stac: Stac) -> None:
    assert latest_step(_spec(stac), until="2024-05-15", imagery=True) == "2024-05-01"
    assert latest_step(_spec(stac), until="2024-12-31", imagery=True) == "2024-06-01"
    assert latest_step(_spec(stac, max_cloud_cover=20), until="2024-12-31", imagery=True) == (
        "2024-05-01"
    )
    assert latest_step(_spec(stac), until="2024-01-10", imagery=True) == "2024-01-10"
    assert latest_step(_spec(stac), until="2023-12-31", imagery=True) is None


def test_fingerprint_follows_the_items(stac: Stac) -> None:
    bounds = lnglat_bounds(SHARD.tile)
    spec = _spec(stac, bounds=bounds, max_cloud_cover=20)
    with open_imagery(spec, step="2024-05-15") as src:
        first = src.fingerprint()
        north = shapely.union_all(
            [shapely.box(*lnglat_bounds(Tile(x, y, 19))) for x, y in NORTH_Z19]
        )
        assert check_coverage(src, north.buffer(-1e-6)) == pytest.approx(1.0)
        assert src.describe()["band_count"] == 4
    with open_imagery(spec, step="2024-05-15") as src:
        assert src.fingerprint() == first
    with open_imagery(spec, step="2024-06-15") as src:  # same items (cloudy filtered out)
        assert src.fingerprint() == first
    with open_imagery(_spec(stac, bounds=bounds), step="2024-06-15") as src:
        assert src.fingerprint() != first  # cloudy counts without the limit
    updated = dict(stac.items["new"])  # type: ignore[attr-defined]
    updated["properties"] = {
        **updated["properties"],
        "updated": dt.datetime.now(dt.UTC).isoformat(),
    }
    stac.upsert(updated)
    with open_imagery(spec, step="2024-05-15") as src:
        assert src.fingerprint() != first


def test_errors_name_the_service(stac: Stac, tmp_path: Path) -> None:
    with pytest.raises(ImageryError, match=r"STAC http://127\.0\.0\.1:\d+: cannot open"):
        open_imagery(
            StacSpec(url=f"http://127.0.0.1:{free_port()}", collections=["x"]), step="2024-05-01"
        )
    with (
        open_imagery(_spec(stac, asset="analytic"), step="2024-05-15") as src,
        pytest.raises(ImageryError, match=r"item 'new' has no asset 'analytic'"),
    ):
        src.read_shard(SHARD)
    with (
        open_imagery(_spec(stac, max_items=1), step="2024-05-15") as src,
        pytest.raises(ImageryError, match=r"more than 1 items.*set 'bounds'"),
    ):
        src.footprint()
