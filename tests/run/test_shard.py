"""The shard stage on real data: tile rows only where there is imagery, the scores the
label and prediction mosaics give, a shard without imagery, and failing shards recorded
as failed while their error propagates.

The AOI here lacks the imagery of its last shard and of one tile of its first."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.aoi import AoiConfig
from pipeline.db import repo
from pipeline.db.errors import RunStateError
from pipeline.db.models import RunShard
from pipeline.errors import StoreError
from pipeline.run import layout
from pipeline.run.handoffs import AuditPlan, ShardOutcome
from pipeline.run.inputs import load_run_inputs, read_geoparquet, read_shard_image
from pipeline.run.labels import shard_labels
from pipeline.run.predict import predict_run_shard
from pipeline.run.shard import process_shard, tile_rows
from pipeline.score.metrics import tile_metrics
from pipeline.tiles import Shard, Tile, block_of, lnglat_bounds, parse_shard_id, xy_bounds

from ._helpers import SHARD_IDS, planned, register, tile_tree_without, tiles_of_shard
from .conftest import RealAoi

FIRST, EMPTY = SHARD_IDS[0], SHARD_IDS[3]
DROPPED = Tile(773394, 440526, 20)
QOD_FLAG = 35.0
Scored = tuple[AuditPlan, ShardOutcome]


@pytest.fixture(scope="module")
def partial(real_aoi: RealAoi, tmp_path_factory: pytest.TempPathFactory) -> AoiConfig:
    root = tile_tree_without(tmp_path_factory.mktemp("partial"), [*tiles_of_shard(EMPTY), DROPPED])
    return register(
        real_aoi.ctx,
        "partial",
        imagery={"kind": "xyz", "path": str(root), "zoom": 20},
        thresholds={"qod_flag": QOD_FLAG},
    )


@pytest.fixture(scope="module")
def scored(real_aoi: RealAoi, partial: AoiConfig) -> Scored:
    """A run with its first shard processed."""
    plan = planned(real_aoi.ctx, partial)
    return plan, process_shard(real_aoi.ctx, plan.run_id, FIRST)


def _shard_rows(real_aoi: RealAoi, run_id: int) -> dict[str, RunShard]:
    with Session(real_aoi.ctx.engine, expire_on_commit=False) as s:
        rows = s.scalars(select(RunShard).where(RunShard.run_id == run_id)).all()
        s.expunge_all()
        return {r.shard_id: r for r in rows}


def _tiles(real_aoi: RealAoi, run_id: int) -> gpd.GeoDataFrame:
    with Session(real_aoi.ctx.engine) as s:
        return repo.tile_scores_frame(s, run_id)


def test_tile_rows_only_for_tiles_with_imagery(real_aoi: RealAoi, scored: Scored) -> None:
    plan, outcome = scored
    assert outcome.shard_id == FIRST and outcome.status == "done"
    assert outcome.tiles == 3 and not outcome.cache_hit and outcome.predicted
    assert min(outcome.rasterize_s, outcome.predict_s, outcome.score_s) >= 0
    tiles = _tiles(real_aoi, plan.run_id)
    expected = {(t.x, t.y) for t in tiles_of_shard(FIRST)} - {(DROPPED.x, DROPPED.y)}
    assert set(zip(tiles["x"], tiles["y"], strict=True)) == expected
    assert (tiles["z"] == 20).all() and (tiles["shard_id"] == FIRST).all()
    assert (tiles["valid_px"] == 256 * 256).all()
    assert (tiles["n_findings"] == 0).all()
    for rec in tiles.itertuples():
        assert rec.geometry.equals_exact(
            shapely.box(*lnglat_bounds(Tile(rec.x, rec.y, 20))), tolerance=1e-9
        )
    row = _shard_rows(real_aoi, plan.run_id)[FIRST]
    assert row.status == "done" and row.stats == outcome.to_xcom()
    assert ShardOutcome.from_xcom(row.stats) == outcome


def test_tiles_are_flagged_by_qod_alone(real_aoi: RealAoi, scored: Scored) -> None:
    tiles = _tiles(real_aoi, scored[0].run_id)
    assert tiles["qod"].between(0, 100).all()
    assert (tiles["flagged"] == (tiles["qod"] < QOD_FLAG)).all()


def test_scores_are_those_of_the_label_and_prediction_mosaics(
    real_aoi: RealAoi, partial: AoiConfig, scored: Scored
) -> None:
    ctx = real_aoi.ctx
    plan, _ = scored
    inputs = load_run_inputs(ctx, plan.run_id)
    shard = parse_shard_id(FIRST, 20)
    labels = shard_labels(ctx, partial.name, inputs.opendata, shard)
    prediction = predict_run_shard(ctx, inputs, shard)
    assert prediction.source == "this_run"  # the shard stage predicted it for this run
    valid = read_shard_image(ctx, inputs.imagery.shards[FIRST]).valid
    metrics = tile_metrics(labels, prediction.prob >= 0.5, valid=valid)
    for rec in _tiles(real_aoi, plan.run_id).itertuples():
        r, c = block_of(Tile(rec.x, rec.y, 20), shard)
        assert rec.iou == pytest.approx(metrics.iou[r, c])
        assert rec.qod == pytest.approx(metrics.qod[r, c])
        assert rec.f1 == pytest.approx(metrics.f1[r, c])
        assert (rec.tp, rec.fp, rec.fn) == (metrics.tp[r, c], metrics.fp[r, c], metrics.fn[r, c])
    assert labels[valid].any()  # OSM buildings on this shard


def test_foreground_shares_are_stored(
    real_aoi: RealAoi, partial: AoiConfig, scored: Scored
) -> None:
    ctx = real_aoi.ctx
    plan, _ = scored
    inputs = load_run_inputs(ctx, plan.run_id)
    shard = parse_shard_id(FIRST, 20)
    labels = shard_labels(ctx, partial.name, inputs.opendata, shard)
    for rec in _tiles(real_aoi, plan.run_id).itertuples():
        r, c = block_of(Tile(rec.x, rec.y, 20), shard)
        block = labels[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256]
        assert rec.fg_label == pytest.approx(block.mean())
        assert 0.0 <= rec.fg_pred <= 1.0


def test_predicted_buildings_are_stored(real_aoi: RealAoi, scored: Scored) -> None:
    plan, outcome = scored
    key = layout.shard_buildings_key(plan.run_id, FIRST)
    buildings = read_geoparquet(real_aoi.ctx, key)
    assert len(buildings) == outcome.buildings > 0
    assert buildings.crs.to_epsg() == 3857
    assert buildings["confidence"].between(0.5, 1.0).all()
    shard_area = shapely.box(*xy_bounds(parse_shard_id(FIRST, 20).tile))
    assert buildings.geometry.within(shard_area.buffer(1.0)).all()


def test_a_shard_without_imagery_is_stored_as_no_imagery(real_aoi: RealAoi, scored: Scored) -> None:
    plan, _ = scored
    outcome = process_shard(real_aoi.ctx, plan.run_id, EMPTY)
    assert outcome == ShardOutcome(EMPTY, "no_imagery")
    assert not outcome.predicted
    row = _shard_rows(real_aoi, plan.run_id)[EMPTY]
    assert row.stats["status"] == "no_imagery" and row.status == "done"
    tiles = _tiles(real_aoi, plan.run_id)
    assert not (tiles["shard_id"] == EMPTY).any()
    assert not real_aoi.ctx.store.exists(layout.shard_buildings_key(plan.run_id, EMPTY))


def test_rerunning_a_shard_replaces_its_rows(real_aoi: RealAoi, scored: Scored) -> None:
    plan, first = scored
    before = _tiles(real_aoi, plan.run_id)
    again = process_shard(real_aoi.ctx, plan.run_id, FIRST)
    assert again.tiles == first.tiles and again.buildings == first.buildings
    assert not again.cache_hit  # this run's own prediction
    after = _tiles(real_aoi, plan.run_id)
    assert len(after) == len(before)
    assert sorted(after["qod"]) == pytest.approx(sorted(before["qod"]))


def test_another_run_scores_from_the_cache(
    real_aoi: RealAoi, partial: AoiConfig, scored: Scored
) -> None:
    plan = planned(real_aoi.ctx, partial, force=True)
    outcome = process_shard(real_aoi.ctx, plan.run_id, FIRST)
    assert outcome.cache_hit and not outcome.predicted
    assert outcome.tiles == scored[1].tiles
    mine, theirs = _tiles(real_aoi, plan.run_id), _tiles(real_aoi, scored[0].run_id)
    assert sorted(mine["qod"]) == pytest.approx(sorted(theirs["qod"]))


def test_a_shard_whose_model_is_missing_fails_and_is_recorded(
    real_aoi: RealAoi, partial: AoiConfig
) -> None:
    ctx = real_aoi.ctx
    with Session(ctx.engine) as s, s.begin():
        ghost = repo.register_model_version(
            s,
            "ghost",
            arch="unet",
            encoder="tu-mobilenetv3_small_100",
            weights_uri="models/ghost/0123456789abcdef.pt",
            weights_sha256="0123456789abcdef" * 4,
        ).id
    plan = planned(ctx, partial, model_version_id=ghost)
    with pytest.raises(StoreError, match=r"models/ghost/0123456789abcdef\.pt"):
        process_shard(ctx, plan.run_id, FIRST)
    row = _shard_rows(real_aoi, plan.run_id)[FIRST]
    assert row.status == "failed"
    assert row.stats["error"].startswith("StoreError: ")
    assert "models/ghost/0123456789abcdef.pt" in row.stats["error"]
    assert _tiles(real_aoi, plan.run_id).empty
    # the run cannot succeed with a failed shard
    with Session(ctx.engine) as s, s.begin(), pytest.raises(RunStateError, match=FIRST):
        repo.finish_run(s, plan.run_id, "succeeded")


def test_an_unwritable_store_fails_the_shard_then_a_rerun_is_clean(
    real_aoi: RealAoi, partial: AoiConfig, scored: Scored
) -> None:
    ctx = real_aoi.ctx
    plan = planned(ctx, partial, force=True)
    # a file where the run's buildings folder must go: no writing below it (even as root)
    blocker = Path(ctx.store.path(f"runs/{plan.run_id}/buildings"))
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way")
    with pytest.raises(StoreError, match="not writable"):
        process_shard(ctx, plan.run_id, FIRST)
    row = _shard_rows(real_aoi, plan.run_id)[FIRST]
    assert row.status == "failed" and "not writable" in row.stats["error"]
    assert _tiles(real_aoi, plan.run_id).empty  # nothing half-stored
    blocker.unlink()
    outcome = process_shard(ctx, plan.run_id, FIRST)
    assert outcome.status == "done" and outcome.tiles == 3
    assert _shard_rows(real_aoi, plan.run_id)[FIRST].status == "done"
    assert len(_tiles(real_aoi, plan.run_id)) == 3


# --- tile rows from hand-made metrics ---------------------------------------------------


def test_tile_rows_from_hand_made_mosaics() -> None:
    shard = Shard(Tile(5, 7, 4), 5)  # 2 x 2 tiles of 256 px
    tiles = [Tile(10, 14, 5), Tile(11, 14, 5), Tile(10, 15, 5), Tile(11, 15, 5)]
    labels = np.zeros((512, 512), np.uint8)
    pred = np.zeros((512, 512), bool)
    labels[:128, :128] = 1
    pred[:128, :128] = True  # (row 0, col 0): perfect
    labels[:128, 256:384] = 1
    pred[128:256, 256:384] = True  # (row 0, col 1): all wrong
    valid = np.ones((512, 512), bool)
    valid[256:, :256] = False  # (row 1, col 0): no imagery
    metrics = tile_metrics(labels, pred, valid=valid)
    # the AOI holds three of the four tiles
    rows = tile_rows(metrics, shard, [tiles[0], tiles[1], tiles[2]], qod_flag=50.0)
    by_tile = {(r["x"], r["y"]): r for r in rows}
    assert set(by_tile) == {(10, 14), (11, 14)}
    good, bad = by_tile[(10, 14)], by_tile[(11, 14)]
    assert good["iou"] == 1.0 and good["qod"] == pytest.approx(100.0) and not good["flagged"]
    assert bad["iou"] == 0.0 and bad["qod"] < 50.0 and bad["flagged"]
    assert (good["tp"], good["fp"], good["fn"]) == (128 * 128, 0, 0)
    assert (bad["tp"], bad["fp"], bad["fn"]) == (0, 128 * 128, 128 * 128)
    assert good["fg_label"] == pytest.approx(0.25) and bad["fg_pred"] == pytest.approx(0.25)
    for row in rows:
        assert row["z"] == 5 and row["valid_px"] == 65536 and row["n_findings"] == 0
        assert type(row["flagged"]) is bool
        assert row["geometry"].equals(shapely.box(*lnglat_bounds(Tile(row["x"], row["y"], 5))))
    # a threshold below both QoDs flags nothing
    assert not any(r["flagged"] for r in tile_rows(metrics, shard, tiles, qod_flag=0.0))
    # a partly valid tile counts its valid pixels
    valid[300:, 300:] = False
    partly = tile_rows(tile_metrics(labels, pred, valid=valid), shard, tiles, qod_flag=50.0)
    assert {(r["x"], r["y"]): r["valid_px"] for r in partly}[(11, 15)] == 65536 - 212 * 212
