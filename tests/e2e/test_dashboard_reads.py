"""The read side the dashboard stands on, against the audited town on both databases:
named SQL queries agree with the ORM, tile pixels agree with the exported composites,
downloads round-trip."""

from __future__ import annotations

import io

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audited_town import Audited
from pipeline.db import repo
from pipeline.db.models import Finding, TileScore
from pipeline.db.queries import read_query
from pipeline.errors import NotFoundError
from pipeline.results.export import csv_bytes, geojson_bytes, write_composites
from pipeline.results.tile_view import imagery_crop, shard_previews, tile_layers
from pipeline.tiles import Tile


def _latest(audited: Audited):
    with Session(audited.ctx.engine) as s:
        aoi = repo.list_aois(s)[0]
        return aoi.id, repo.latest_run(s, aoi.id).id


def test_overview_and_trend_agree_with_the_orm(audited: Audited):
    aoi_id, run_id = _latest(audited)
    engine = audited.ctx.engine
    with Session(engine) as s:
        scores = repo.aoi_scores(s, aoi_id)
        n_findings = s.scalar(select(func.count()).where(Finding.run_id == run_id))
    row = read_query(engine, "aoi_overview").iloc[0]
    assert row["latest_run_id"] == run_id == scores[-1].run_id
    assert row["qod"] == pytest.approx(scores[-1].mean_qod)
    assert row["qod_change"] == pytest.approx(scores[-1].mean_qod - scores[-2].mean_qod)
    assert row["open_findings"] == n_findings
    assert isinstance(row["last_started_at"], pd.Timestamp) and row["last_started_at"].tzinfo

    trend = read_query(engine, "aoi_trend", aoi_id=aoi_id)
    assert list(trend["run_id"]) == [sc.run_id for sc in scores]
    assert read_query(engine, "aoi_trend", aoi_id=None).shape == trend.shape
    assert read_query(engine, "aoi_trend", aoi_id=aoi_id + 999).empty

    by_kind = read_query(engine, "findings_by_kind", aoi_id=aoi_id)
    latest = by_kind[by_kind["step"] == scores[-1].step]
    assert latest.set_index("kind")["n"].to_dict() == scores[-1].findings_by_kind


def test_tile_cells_aggregate_every_tile(audited: Audited):
    _, run_id = _latest(audited)
    engine = audited.ctx.engine
    with Session(engine) as s:
        tiles = repo.tile_scores_frame(s, run_id)
    ones = read_query(engine, "tile_cells", run_id=run_id, factor=1)
    assert len(ones) == len(tiles)
    assert ones["qod"].sum() == pytest.approx(tiles["qod"].sum())
    fours = read_query(engine, "tile_cells", run_id=run_id, factor=4)
    assert fours["n_tiles"].sum() == len(tiles) and len(fours) < len(tiles)
    assert fours["n_findings"].sum() == tiles["n_findings"].sum()
    assert fours["n_flagged"].sum() == int(tiles["flagged"].sum())
    extent = read_query(engine, "tile_extent", run_id=run_id).iloc[0]
    assert (extent["n_tiles"], extent["min_x"], extent["max_y"]) == (
        len(tiles),
        tiles["x"].min(),
        tiles["y"].max(),
    )


def test_review_queue_is_worst_first_and_shows_verdicts(audited: Audited):
    aoi_id, run_id = _latest(audited)
    engine = audited.ctx.engine
    queue = read_query(engine, "review_tiles", run_id=run_id, limit=1000)
    with Session(engine) as s:
        n_flagged = s.scalar(
            select(func.count()).where(TileScore.run_id == run_id, TileScore.flagged.is_(True))
        )
    assert len(queue) == n_flagged and queue["qod"].is_monotonic_increasing
    assert queue["verdict"].isna().all()
    first = queue.iloc[0]
    tile = Tile(int(first["x"]), int(first["y"]), int(first["z"]))
    with Session(engine) as s, s.begin():
        repo.upsert_review(s, aoi_id, "tile", "label_wrong", tile=tile, reviewer="ada")
    try:
        again = read_query(engine, "review_tiles", run_id=run_id, limit=1000).iloc[0]
        assert (again["verdict"], again["reviewer"]) == ("label_wrong", "ada")
        assert again["reviewed_at"].tzinfo is not None
    finally:
        with Session(engine) as s, s.begin():
            for review in repo.list_reviews(s, aoi_id):
                s.delete(review)
    findings = read_query(engine, "review_findings", run_id=run_id, limit=1000)
    assert findings["severity"].is_monotonic_decreasing
    assert all(g.geom_type in ("Polygon", "MultiPolygon") for g in findings["geometry"])


def test_change_queries_follow_the_steps(audited: Audited):
    aoi_id, run_id = _latest(audited)
    engine = audited.ctx.engine
    pairs = read_query(engine, "change_pairs", aoi_id=aoi_id)
    (pair,) = pairs.itertuples()
    assert pair.run_id == run_id
    changes = read_query(
        engine, "changes_between", aoi_id=aoi_id, step_from=pair.step_from, step_to=pair.step_to
    )
    assert len(changes) == pair.n_changes > 0
    assert read_query(
        engine, "changes_between", aoi_id=aoi_id, step_from=pair.step_to, step_to=pair.step_from
    ).empty


def test_an_unknown_query_is_named(audited: Audited):
    with pytest.raises(NotFoundError, match="no query 'nope'"):
        read_query(audited.ctx.engine, "nope")
    with pytest.raises(NotFoundError, match="not a lowercase identifier"):
        read_query(audited.ctx.engine, "../migrations/env")


def test_tile_layers_are_the_exported_composite(audited: Audited, tmp_path):
    _, run_id = _latest(audited)
    ctx = audited.ctx
    with Session(ctx.engine) as s:
        flagged = repo.tile_scores_frame(s, run_id, flagged=True).iloc[0]
    tile = Tile(int(flagged.x), int(flagged.y), int(flagged.z))
    layers = tile_layers(ctx, run_id, tile)
    assert layers.rgb.shape == (256, 256, 3) and layers.label.shape == layers.pred.shape
    # the tile's scores come from the same pixels
    tp = int((layers.label & layers.pred).sum())
    assert tp == flagged.tp
    (png,) = write_composites(ctx, run_id, [tile], tmp_path)
    assert np.array_equal(np.asarray(Image.open(png)), layers.composite)
    with pytest.raises(NotFoundError, match="work zoom"):
        tile_layers(ctx, run_id, Tile(tile.x // 2, tile.y // 2, tile.z - 1))


def test_imagery_crop_and_shard_previews(audited: Audited):
    _, run_id = _latest(audited)
    ctx = audited.ctx
    with Session(ctx.engine) as s:
        finding = repo.findings_frame(s, run_id).iloc[0]
        n_shards = repo.get_run(s, run_id).shards_total
    crop = imagery_crop(ctx, run_id, finding.geometry, max_px=200)
    assert crop.dtype == np.uint8 and crop.shape[2] == 3 and max(crop.shape[:2]) <= 200
    assert crop.mean() > 10  # imagery, not the black of "no data"
    outline = imagery_crop(ctx, run_id, finding.geometry, max_px=200, outline=(255, 255, 0))
    plain = imagery_crop(ctx, run_id, finding.geometry, max_px=200, outline=None)
    assert not np.array_equal(outline, plain)
    previews = shard_previews(ctx, run_id, size=64)
    assert len(previews) == n_shards
    bounds, png = previews[0]
    assert bounds[0] < bounds[2] and bounds[1] < bounds[3]
    assert Image.open(io.BytesIO(png)).size == (64, 64)
    from shapely.geometry import box

    with pytest.raises(NotFoundError, match="no imagery around"):
        imagery_crop(ctx, run_id, box(0, 0, 0.001, 0.001))


def test_downloads_round_trip(audited: Audited, tmp_path):
    _, run_id = _latest(audited)
    with Session(audited.ctx.engine) as s:
        findings = repo.findings_frame(s, run_id)
    path = tmp_path / "f.geojson"
    path.write_bytes(geojson_bytes(findings))
    back = gpd.read_file(path)
    assert len(back) == len(findings) and back.crs.to_epsg() == 4326
    assert sorted(back["id"]) == sorted(findings["id"])
    table = pd.read_csv(io.BytesIO(csv_bytes(findings)))
    assert len(table) == len(findings)
    assert table["geometry"].str.startswith(("POLYGON", "MULTIPOLYGON")).all()
