"""The publish stage after a whole audit of the real AOI (stages run one by one): stored
tile flags, findings and the AOI score agree with the rules of
:mod:`pipeline.score.aggregate`, and a run is published once, whole or not at all."""

from __future__ import annotations

import math
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.aoi import AoiConfig
from pipeline.db import repo
from pipeline.db.errors import RunStateError
from pipeline.db.models import AoiScore, Finding, Hotspot
from pipeline.errors import GeoAuditError
from pipeline.run import layout
from pipeline.run.changes import store_run_changes
from pipeline.run.handoffs import AuditPlan, RunSummary
from pipeline.run.publish import finding_rows, publish_run, records
from pipeline.run.shard import process_shard
from pipeline.run.summary import stored_run_summary
from pipeline.score.aggregate import flag_tiles
from pipeline.score.match import FINDING_KINDS
from pipeline.tiles import Tile, shard_of, xy_bounds

from ._helpers import planned, register, run_row
from .conftest import STEP, RealAoi, register_untrained_model

Published = tuple[AoiConfig, AuditPlan, RunSummary]


def _audit(real_aoi: RealAoi, config: AoiConfig, **request: Any) -> tuple[AuditPlan, RunSummary]:
    """Every stage after fetch, one at a time, as a scheduler runs them."""
    ctx = real_aoi.ctx
    plan = planned(ctx, config, **request)
    for sid in plan.shard_ids:
        process_shard(ctx, plan.run_id, sid)
    store_run_changes(ctx, plan)
    return plan, publish_run(ctx, plan)


@pytest.fixture(scope="module")
def strict(real_aoi: RealAoi) -> Published:
    """The real area audited by a blind model (it sees no building: every mapped
    footprint on the imagery is unsupported; QoD flag at 95, every tile is below it)."""
    register_untrained_model(real_aoi.ctx, "blind", blind=True)
    config = register(
        real_aoi.ctx, "strict", thresholds={"qod_flag": 95.0}, model={"name": "blind"}
    )
    return (config, *_audit(real_aoi, config))


@pytest.fixture(scope="module")
def lenient(real_aoi: RealAoi, strict: Published) -> Published:
    """The same area and model with no QoD flag: findings alone flag tiles (predictions
    come from the cache the first audit filled)."""
    config = register(
        real_aoi.ctx, "lenient", thresholds={"qod_flag": 0.0}, model={"name": "blind"}
    )
    return (config, *_audit(real_aoi, config))


@pytest.fixture(params=["strict", "lenient"])
def published(request: pytest.FixtureRequest, real_aoi: RealAoi) -> Published:
    """Each of the two audits in turn."""
    return request.getfixturevalue(request.param)


def _stored(real_aoi: RealAoi, run_id: int) -> tuple[pd.DataFrame, gpd.GeoDataFrame, Any]:
    with Session(real_aoi.ctx.engine, expire_on_commit=False) as s:
        tiles = repo.tile_scores_frame(s, run_id)
        findings = repo.findings_frame(s, run_id)
        score = s.scalars(select(AoiScore).where(AoiScore.run_id == run_id)).one()
        s.expunge(score)
    return tiles, findings, score


def _count(real_aoi: RealAoi, model: type, run_id: int) -> int:
    with Session(real_aoi.ctx.engine) as s:
        return s.scalar(select(func.count()).select_from(model).where(model.run_id == run_id))


def test_the_run_is_published_and_succeeded(real_aoi: RealAoi, published: Published) -> None:
    config, plan, summary = published
    run = run_row(real_aoi.ctx, plan.run_id)
    assert run.status == "succeeded" and run.finished_at is not None and run.error is None
    assert (summary.run_id, summary.aoi, summary.step) == (plan.run_id, config.name, STEP)
    assert not summary.reused
    assert summary == stored_run_summary(real_aoi.ctx, plan.run_id)
    assert summary.n_findings == _count(real_aoi, Finding, plan.run_id) > 0
    assert summary.n_hotspots == _count(real_aoi, Hotspot, plan.run_id)
    assert summary.n_changes == 0  # the first step
    assert summary.buildings_uri == real_aoi.ctx.store.uri(layout.run_buildings_key(plan.run_id))
    assert RunSummary.from_xcom(summary.to_xcom()) == summary


def test_each_tile_counts_the_findings_on_it(real_aoi: RealAoi, published: Published) -> None:
    _, plan, _ = published
    tiles, findings, _ = _stored(real_aoi, plan.run_id)
    counts = findings.groupby(["tile_x", "tile_y"]).size()
    expected = [int(counts.get((x, y), 0)) for x, y in zip(tiles["x"], tiles["y"], strict=True)]
    assert tiles["n_findings"].tolist() == expected
    assert tiles["n_findings"].sum() > 0


def test_stored_flags_follow_the_flagged_tile_rule(real_aoi: RealAoi, published: Published) -> None:
    config, plan, _ = published
    tiles, _, _ = _stored(real_aoi, plan.run_id)
    rule = flag_tiles(
        tiles["qod"].to_numpy(),
        tiles["n_findings"].to_numpy(),
        tiles["valid_px"].to_numpy() > 0,
        config.thresholds.qod_flag,
    )
    assert tiles["flagged"].tolist() == rule.tolist()


def test_the_flagged_share_is_the_share_of_flagged_tiles(
    real_aoi: RealAoi, published: Published
) -> None:
    _, plan, summary = published
    tiles, findings, score = _stored(real_aoi, plan.run_id)
    valid = tiles["valid_px"] > 0
    share = float(tiles.loc[valid, "flagged"].mean())
    assert score.flagged_tile_share == pytest.approx(share)
    assert summary.aggregates["flagged_tile_share"] == pytest.approx(share)
    assert score.extra["n_flagged_tiles"] == int(tiles["flagged"].sum())
    assert score.n_tiles == len(tiles) == 16
    assert score.mean_qod == pytest.approx(tiles.loc[valid, "qod"].mean())
    assert score.mean_iou == pytest.approx(tiles.loc[valid, "iou"].mean())
    assert sum(score.findings_by_kind.values()) == len(findings)
    assert set(score.findings_by_kind) == set(FINDING_KINDS)
    with Session(real_aoi.ctx.engine) as s:
        assert score.model_version_id == repo.production_model(s, "blind").id


def test_the_strict_aoi_flags_every_tile_by_qod(real_aoi: RealAoi, strict: Published) -> None:
    tiles, _, score = _stored(real_aoi, strict[1].run_id)
    assert (tiles["qod"] < 95).all() and tiles["flagged"].all()
    assert score.flagged_tile_share == 1.0


def test_the_lenient_aoi_flags_the_tiles_with_findings(
    real_aoi: RealAoi, lenient: Published
) -> None:
    tiles, _, score = _stored(real_aoi, lenient[1].run_id)
    assert tiles["flagged"].tolist() == (tiles["n_findings"] > 0).tolist()
    # premise: some tile of this area has no mapped building on it
    assert 0 < tiles["flagged"].sum() < len(tiles)
    assert 0 < score.flagged_tile_share < 1


def test_findings_belong_to_the_tile_of_their_point_on_surface(
    real_aoi: RealAoi, published: Published
) -> None:
    config, plan, _ = published
    _, findings, _ = _stored(real_aoi, plan.run_id)
    assert (findings["tile_z"] == config.work_zoom).all()
    points = shapely.point_on_surface(findings.to_crs(3857).geometry.to_numpy())
    for point, rec in zip(points, findings.itertuples(), strict=True):
        tile = Tile(int(rec.tile_x), int(rec.tile_y), config.work_zoom)
        left, bottom, right, top = xy_bounds(tile)
        eps = 1e-3  # metres: the stored geometry went through EPSG:4326 and back
        assert left - eps <= point.x <= right + eps and bottom - eps <= point.y <= top + eps
        assert rec.shard_id == shard_of(tile, config.shard_zoom).id


def test_findings_are_stored_with_their_measures(real_aoi: RealAoi, strict: Published) -> None:
    _, plan, _ = strict
    _, findings, _ = _stored(real_aoi, plan.run_id)
    assert set(findings["kind"]) <= set(FINDING_KINDS)
    assert findings.crs.to_epsg() == 4326
    assert (findings["area_m2"] > 0).all()
    unsupported = findings[findings["kind"] == "unsupported_by_imagery"]
    assert unsupported["feature_id"].notna().all()
    missing = findings[findings["kind"] == "missing_in_opendata"]
    assert missing["feature_id"].isna().all() and missing["confidence"].between(0, 1).all()


def test_stage_timings_and_rates_are_stored(real_aoi: RealAoi, strict: Published) -> None:
    _, plan, summary = strict
    seconds = run_row(real_aoi.ctx, plan.run_id).stage_seconds
    assert {"fetch", "rasterize", "predict", "score", "changes", "publish"} <= set(seconds)
    for stage, entry in seconds.items():
        secs, rate = entry["seconds"], entry["tiles_per_s"]
        assert secs >= 0, stage
        # seconds are stored to the millisecond, the rate from the unrounded seconds
        if secs > 0.001:
            assert 16 / (secs + 0.0005) - 0.01 <= rate <= 16 / (secs - 0.0005) + 0.01, stage
    assert summary.stage_seconds == seconds


def test_a_reused_run_is_not_published_again(real_aoi: RealAoi, strict: Published) -> None:
    _, plan, summary = strict
    before = _count(real_aoi, Finding, plan.run_id)
    reused = publish_run(real_aoi.ctx, AuditPlan(plan.aoi, plan.step, plan.run_id, reused=True))
    assert reused.reused and reused.run_id == plan.run_id
    assert reused.aggregates == summary.aggregates and reused.n_findings == summary.n_findings
    assert _count(real_aoi, Finding, plan.run_id) == before


def _with_a_failed_shard(real_aoi: RealAoi, config: AoiConfig) -> AuditPlan:
    """A run whose last shard was scored, then failed on a retry (its rows stay)."""
    ctx = real_aoi.ctx
    plan = planned(ctx, config, force=True)
    for sid in plan.shard_ids:
        process_shard(ctx, plan.run_id, sid)
    store_run_changes(ctx, plan)
    with Session(ctx.engine) as s, s.begin():
        repo.fail_shard(s, plan.run_id, plan.shard_ids[-1], "RuntimeError: worker lost")
    return plan


def test_a_run_with_a_failed_shard_publishes_nothing(real_aoi: RealAoi, lenient: Published) -> None:
    ctx = real_aoi.ctx
    plan = _with_a_failed_shard(real_aoi, lenient[0])
    with pytest.raises(GeoAuditError):
        publish_run(ctx, plan)
    assert run_row(ctx, plan.run_id).status == "running"
    assert _count(real_aoi, Finding, plan.run_id) == 0
    assert _count(real_aoi, AoiScore, plan.run_id) == 0
    assert _count(real_aoi, Hotspot, plan.run_id) == 0
    with Session(ctx.engine) as s:
        tiles = repo.tile_scores_frame(s, plan.run_id)
    assert len(tiles) == 16 and not tiles["flagged"].any()  # the shard stage's QoD flags
    with pytest.raises(RunStateError, match="has no published results"):
        stored_run_summary(ctx, plan.run_id)


def test_a_run_with_a_failed_shard_is_refused_naming_the_shard(
    real_aoi: RealAoi, lenient: Published
) -> None:
    plan = _with_a_failed_shard(real_aoi, lenient[0])
    with pytest.raises(RunStateError, match=rf"3 of 4 .*failed shards: {plan.shard_ids[-1]}"):
        publish_run(real_aoi.ctx, plan)


def test_a_run_missing_a_shard_is_refused_before_anything_is_published(
    real_aoi: RealAoi, lenient: Published
) -> None:
    ctx = real_aoi.ctx
    plan = planned(ctx, lenient[0], force=True)
    for sid in plan.shard_ids[:-1]:
        process_shard(ctx, plan.run_id, sid)
    store_run_changes(ctx, plan)
    with pytest.raises(RunStateError, match="only 3 of 4 planned shards are done"):
        publish_run(ctx, plan)
    assert _count(real_aoi, Finding, plan.run_id) == 0
    assert run_row(ctx, plan.run_id).status == "running"


def test_records_and_finding_rows_are_plain() -> None:
    frame = gpd.GeoDataFrame(
        {
            "kind": ["misaligned", "missing_in_opendata"],
            "feature_id": ["w1", None],
            "iou": [np.float64(0.5), np.nan],
            "offset_m": [2.5, np.nan],
            "shift_x_m": [np.float32(1.5), np.nan],
            "tile_x": np.array([3, 4], np.int64),
        },
        geometry=[shapely.box(0, 0, 1, 1), shapely.box(1, 1, 2, 2)],
        crs="EPSG:4326",
    )
    recs = records(frame)
    assert recs[1]["iou"] is None and recs[1]["feature_id"] is None
    assert type(recs[0]["tile_x"]) is int and type(recs[0]["iou"]) is float
    rows = finding_rows(frame)
    assert rows[0]["detail"] == {"shift_x_m": 1.5}
    assert rows[1]["detail"] == {}  # None values are left out
    assert rows[0]["offset_m"] == 2.5 and rows[1]["offset_m"] is None
    assert rows[0]["geometry"].equals(shapely.box(0, 0, 1, 1))
    assert records(frame.iloc[:0]) == []
    assert not any(isinstance(v, float) and math.isnan(v) for r in recs for v in r.values())
