"""AOIs, snapshots and reviews: upserts, uniqueness, lookups that name what is missing."""

from __future__ import annotations

import pytest
import shapely
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipeline.db import repo
from pipeline.db.errors import RowError
from pipeline.db.models import Aoi, Finding, Review, Snapshot, TileScore
from pipeline.errors import NotFoundError
from pipeline.tiles import Tile, lnglat_bounds

from ._db_helpers import SHARD_ID, aoi_polygon, shard_tiles, tile_rows


def test_upsert_aoi_updates_in_place(engine):
    with Session(engine) as s, s.begin():
        first_id = repo.upsert_aoi(s, "lisbon", {"zoom": 18}, aoi_polygon()).id
    bigger = aoi_polygon().buffer(0.01, join_style="mitre")
    with Session(engine) as s, s.begin():
        again = repo.upsert_aoi(s, "lisbon", {"zoom": 19}, bigger)
        assert again.id == first_id and again.config == {"zoom": 19}
        assert again.geometry.equals(bigger)
        repo.upsert_aoi(s, "porto", {}, aoi_polygon())
    with Session(engine) as s:
        assert [a.name for a in repo.list_aois(s)] == ["lisbon", "porto"]


def test_not_found_messages_name_the_aoi(engine):
    with (
        Session(engine) as s,
        pytest.raises(NotFoundError, match="AOI 'lisboa' does not exist; no AOI is registered yet"),
    ):
        repo.get_aoi(s, "lisboa")
    with Session(engine) as s, s.begin():
        repo.upsert_aoi(s, "lisbon", {}, aoi_polygon())
        with pytest.raises(NotFoundError, match="AOI 'lisboa' does not exist; known AOIs: lisbon"):
            repo.get_aoi(s, "lisboa")
        with pytest.raises(NotFoundError, match="AOI id 77 does not exist"):
            repo.start_run(s, 77, "2024-06", trigger="test", shards_total=1)


def test_aoi_names_are_unique(engine):
    with Session(engine) as s, s.begin():
        repo.upsert_aoi(s, "lisbon", {}, aoi_polygon())
    with pytest.raises(IntegrityError), Session(engine) as s, s.begin():
        s.add(Aoi(name="lisbon", config={}, geometry=shapely.MultiPolygon([aoi_polygon()])))


def test_add_snapshot_returns_the_existing_row_with_the_latest_description(engine):
    with Session(engine) as s, s.begin():
        aoi = repo.upsert_aoi(s, "lisbon", {}, aoi_polygon())
        a = repo.add_snapshot(
            s,
            aoi.id,
            "opendata",
            "2024-06",
            source="osm",
            content_hash="h1",
            feature_count=120,
            meta={"crs": "EPSG:4326"},
        )
        b = repo.add_snapshot(
            s,
            aoi.id,
            "opendata",
            "2024-06",
            source="osm-2",
            content_hash="h1",
            feature_count=120,
            meta={"crs": "EPSG:4326", "fingerprint": "new"},
        )
        c = repo.add_snapshot(s, aoi.id, "opendata", "2024-06", source="osm", content_hash="h2")
        d = repo.add_snapshot(s, aoi.id, "imagery", "2024-06", source="cog", content_hash="h1")
        assert a.id == b.id and b.feature_count == 120
        assert (b.source, b.meta["fingerprint"]) == ("osm-2", "new")  # the latest fetch
        assert len({a.id, c.id, d.id}) == 3
        assert repo.latest_snapshot(s, aoi.id, "opendata", "2024-06").id == c.id
        assert repo.latest_snapshot(s, aoi.id, "imagery").id == d.id
        assert repo.latest_snapshot(s, aoi.id, "imagery", "2023-01") is None
        aoi_id = aoi.id
        with pytest.raises(RowError, match="snapshot kind must be one of"):
            repo.add_snapshot(s, aoi.id, "vector", "2024-06", source="x", content_hash="h")
    with pytest.raises(IntegrityError), Session(engine) as s, s.begin():
        s.add(
            Snapshot(
                aoi_id=aoi_id, kind="opendata", step="2024-06", source="osm", content_hash="h1"
            )
        )


def test_check_constraints_hold(engine, make_run):
    run_id = make_run()
    with pytest.raises(IntegrityError), Session(engine) as s, s.begin():
        repo.get_run(s, run_id).status = "finished"
    with pytest.raises(IntegrityError), Session(engine) as s, s.begin():
        s.add(Review(aoi_id=1, target="tile", verdict="ok"))  # a tile review without a tile


def test_tile_scores_are_unique_per_run_and_tile(engine, make_run):
    run_id = make_run()
    t = shard_tiles()[0]
    with Session(engine) as s, s.begin():
        repo.replace_shard_results(s, run_id, SHARD_ID, tile_rows([t]), {})
    with pytest.raises(IntegrityError), Session(engine) as s, s.begin():
        s.add(
            TileScore(
                run_id=run_id,
                shard_id="other",
                z=t.z,
                x=t.x,
                y=t.y,
                geometry=shapely.box(*lnglat_bounds(t)),
            )
        )


def test_reviews_are_one_per_target_and_updatable(engine, make_run):
    make_run()
    t1, t2 = shard_tiles()[:2]
    with Session(engine) as s, s.begin():
        aoi_id = repo.get_aoi(s, "lisbon").id
        first_id = repo.upsert_review(s, aoi_id, "tile", "model_wrong", tile=t1, reviewer="ana").id
        repo.upsert_review(s, aoi_id, "tile", "ok", tile=t2)
    with Session(engine) as s, s.begin():
        again = repo.upsert_review(
            s, aoi_id, "tile", "label_wrong", tile=t1, comment="shed missing"
        )
        assert again.id == first_id
        assert (again.verdict, again.comment) == ("label_wrong", "shed missing")
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Review)) == 2
        assert repo.label_wrong_tiles(s, aoi_id) == {t1}
        assert repo.label_wrong_tiles(s, aoi_id) == {(t1.x, t1.y, t1.z)}  # plain tuples match
        assert [r.verdict for r in repo.list_reviews(s, aoi_id, verdict="ok")] == ["ok"]
    with pytest.raises(IntegrityError), Session(engine) as s, s.begin():
        s.add(
            Review(
                aoi_id=aoi_id, target="tile", tile_z=t1.z, tile_x=t1.x, tile_y=t1.y, verdict="ok"
            )
        )


def test_finding_reviews_carry_the_tile(engine, make_run):
    run_id = make_run()
    t = shard_tiles()[3]
    with Session(engine) as s, s.begin():
        repo.replace_findings(
            s,
            run_id,
            [
                {
                    "kind": "unsupported",
                    "geometry": shapely.box(*lnglat_bounds(t)),
                    "tile_z": t.z,
                    "tile_x": t.x,
                    "tile_y": t.y,
                }
            ],
        )
        finding_id = s.scalar(select(Finding.id))
        aoi_id = repo.get_aoi(s, "lisbon").id
        r1 = repo.upsert_review(s, aoi_id, "finding", "real_change", finding_id=finding_id)
        r2 = repo.upsert_review(s, aoi_id, "finding", "label_wrong", finding_id=finding_id)
        assert r1.id == r2.id and (r2.tile_z, r2.tile_x, r2.tile_y) == (t.z, t.x, t.y)
        assert repo.label_wrong_tiles(s, aoi_id) == {Tile(t.x, t.y, t.z)}
        with pytest.raises(NotFoundError, match="finding 999 does not exist"):
            repo.upsert_review(s, aoi_id, "finding", "ok", finding_id=999)
        with pytest.raises(RowError, match="review verdict must be one of"):
            repo.upsert_review(s, aoi_id, "tile", "wrong", tile=t)
        other = repo.upsert_aoi(s, "porto", {}, aoi_polygon())
        with pytest.raises(RowError, match=f"finding {finding_id} belongs to AOI id {aoi_id}"):
            repo.upsert_review(s, other.id, "finding", "ok", finding_id=finding_id)
