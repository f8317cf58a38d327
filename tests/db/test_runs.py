"""Runs and their results: idempotent shard writes, atomicity, the success gate."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipeline.db import repo
from pipeline.db.errors import RowError, RunStateError
from pipeline.db.models import Finding, Review, Run, RunShard, TileScore
from pipeline.errors import NotFoundError
from pipeline.tiles import Tile, lnglat_bounds

from ._db_helpers import SHARD, SHARD_ID, shard_id, shard_tiles, tile_rows

OTHER_SHARD = Tile(SHARD.x + 1, SHARD.y, SHARD.z)


def _count(engine, model, **where) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(model).filter_by(**where))


def test_replace_shard_results_twice_leaves_one_row_per_tile(engine, make_run):
    run_id = make_run()
    tiles = shard_tiles()
    with Session(engine) as s, s.begin():
        assert (
            repo.replace_shard_results(s, run_id, SHARD_ID, tile_rows(tiles, 0.3), {"n": 1}) == 16
        )
    with Session(engine) as s, s.begin():
        repo.replace_shard_results(s, run_id, SHARD_ID, tile_rows(tiles, 0.8), {"n": 2})
    assert _count(engine, TileScore, run_id=run_id) == 16
    with Session(engine) as s:
        assert set(s.scalars(select(TileScore.iou))) == {0.8}
        shard = s.get(RunShard, (run_id, SHARD_ID))
        assert (shard.status, shard.stats) == ("done", {"n": 2})
        assert repo.done_shards(s, run_id) == {SHARD_ID}


def test_tile_geometry_defaults_to_tile_outline(engine, make_run):
    run_id = make_run()
    tile = shard_tiles()[5]
    with Session(engine) as s, s.begin():
        repo.replace_shard_results(s, run_id, SHARD_ID, tile_rows([tile]), {})
    with Session(engine) as s:
        geom = s.scalars(select(TileScore.geometry)).one()
    assert shapely.equals_exact(geom, shapely.box(*lnglat_bounds(tile)), 1e-12)


def test_numpy_values_and_nan_are_stored_plainly(engine, make_run):
    run_id = make_run()
    t = shard_tiles()[0]
    row = {
        "z": np.int64(t.z),
        "x": np.int64(t.x),
        "y": np.int32(t.y),
        "iou": np.float32(0.25),
        "precision": np.nan,
        "flagged": np.bool_(True),
        "tp": np.uint32(7),
    }
    with Session(engine) as s, s.begin():
        repo.replace_shard_results(s, run_id, SHARD_ID, [row], {"mean": np.float64(0.5)})
    with Session(engine) as s:
        ts = s.scalars(select(TileScore)).one()
    assert (ts.iou, ts.precision, ts.flagged, ts.tp) == (0.25, None, True, 7)


def test_failed_shard_write_rolls_back_and_keeps_earlier_results(engine, make_run):
    run_id = make_run()
    tiles = shard_tiles()
    with Session(engine) as s, s.begin():
        repo.replace_shard_results(s, run_id, SHARD_ID, tile_rows(tiles, 0.3), {"n": 1})
        repo.replace_findings(
            s,
            run_id,
            [{"kind": "missing", "geometry": shapely.box(*lnglat_bounds(tiles[0]))}],
            shard_id=SHARD_ID,
        )
    broken = tile_rows(tiles, 0.9)
    broken.append(dict(broken[0]))  # duplicate tile: the INSERT fails after the DELETE ran
    with pytest.raises(IntegrityError), Session(engine) as s, s.begin():
        repo.replace_findings(s, run_id, [], shard_id=SHARD_ID)
        repo.replace_shard_results(s, run_id, SHARD_ID, broken, {"n": 2})
    with Session(engine) as s:
        assert sorted(set(s.scalars(select(TileScore.iou)))) == [0.3]
        assert s.scalar(select(func.count()).select_from(TileScore)) == 16
        assert s.scalar(select(func.count()).select_from(Finding)) == 1
        assert s.get(RunShard, (run_id, SHARD_ID)).stats == {"n": 1}


def test_tiles_outside_the_shard_are_refused(engine, make_run):
    run_id = make_run()
    stray = shard_tiles(OTHER_SHARD)[:1]
    with Session(engine) as s, pytest.raises(RowError, match=r"is not inside shard 16/31104/25114"):
        repo.replace_shard_results(s, run_id, SHARD_ID, tile_rows(stray), {})


def test_unknown_and_missing_columns_are_named(engine, make_run):
    run_id = make_run()
    t = shard_tiles()[0]
    with Session(engine) as s:
        with pytest.raises(RowError, match=r"tile_scores\[0\]: unknown column\(s\) \['IoU'\]"):
            repo.replace_shard_results(
                s, run_id, SHARD_ID, [{"z": t.z, "x": t.x, "y": t.y, "IoU": 1}]
            )
        with pytest.raises(RowError, match=r"findings\[0\]: required column\(s\) \['geometry'\]"):
            repo.replace_findings(s, run_id, [{"kind": "missing"}])
        with pytest.raises(RowError, match=r"run_id=99 contradicts run_id="):
            repo.replace_findings(s, run_id, [{"kind": "x", "run_id": 99, "geometry": None}])


def test_finish_run_refuses_success_with_missing_shards(engine, make_run):
    run_id = make_run(shards_total=2)
    with Session(engine) as s, s.begin():
        repo.replace_shard_results(s, run_id, SHARD_ID, tile_rows(shard_tiles()), {})
        repo.fail_shard(s, run_id, shard_id(OTHER_SHARD), "imagery fetch timed out")
    with (
        Session(engine) as s,
        s.begin(),
        pytest.raises(
            RunStateError,
            match=rf"only 1 of 2 planned shards are done; failed shards: {shard_id(OTHER_SHARD)}",
        ),
    ):
        repo.finish_run(s, run_id, "succeeded")
    with Session(engine) as s, s.begin():
        assert s.get(Run, run_id).status == "running"
        repo.replace_shard_results(
            s, run_id, shard_id(OTHER_SHARD), tile_rows(shard_tiles(OTHER_SHARD)), {}
        )
        run = repo.finish_run(s, run_id, "succeeded", stage_seconds={"score": 1.5})
        assert run.status == "succeeded" and run.finished_at is not None
        assert run.stage_seconds == {"score": 1.5}


def test_finish_run_records_failure(engine, make_run):
    run_id = make_run(shards_total=3)
    with Session(engine) as s, s.begin():
        repo.finish_run(s, run_id, "failed", error="validation: 12% invalid geometries")
    with Session(engine) as s:
        run = repo.get_run(s, run_id)
        assert (run.status, run.error) == ("failed", "validation: 12% invalid geometries")
        with pytest.raises(RunStateError, match="'succeeded' or 'failed', not 'done'"):
            repo.finish_run(s, run_id, "done")


def test_run_lookups(engine, make_run):
    ids = {step: make_run(step=step, shards_total=0) for step in ("2024-04", "2024-05", "2024-06")}
    with Session(engine) as s, s.begin():
        for step in ("2024-04", "2024-05"):
            repo.finish_run(s, ids[step], "succeeded")
        aoi = repo.get_aoi(s, "lisbon")
        assert repo.latest_run(s, aoi.id).id == ids["2024-05"]
        assert repo.latest_run(s, aoi.id, status=None).id == ids["2024-06"]
        assert repo.latest_run(s, aoi.id, step="2024-04").id == ids["2024-04"]
        assert repo.previous_run(s, aoi.id, "2024-06").id == ids["2024-05"]
        assert repo.previous_run(s, aoi.id, "2024-05").id == ids["2024-04"]
        assert repo.previous_run(s, aoi.id, "2024-04") is None
        assert [r.id for r in repo.list_runs(s, aoi.id)][0] == ids["2024-06"]
        with pytest.raises(NotFoundError, match="run 999 does not exist"):
            repo.get_run(s, 999)


def test_external_id_and_stage_seconds_add_up(engine, make_run):
    run_id = make_run(status="queued", shards_total=0, external_id="manual__2024-06-01")
    with Session(engine) as s, s.begin():
        assert repo.run_by_external_id(s, "manual__2024-06-01").id == run_id
        repo.add_stage_seconds(s, run_id, {"fetch": 1.5, "predict": np.float64(2.0)})
        stored = repo.add_stage_seconds(s, run_id, {"predict": 0.5})
    assert stored == {"fetch": {"seconds": 1.5}, "predict": {"seconds": 2.5}}
    with Session(engine) as s:
        assert repo.get_run(s, run_id).stage_seconds == stored


def test_findings_changes_hotspots_and_score(engine, make_run):
    prev = make_run(step="2024-05", shards_total=0)
    run_id = make_run(step="2024-06", shards_total=0)
    tiles = shard_tiles()
    box = shapely.box(*lnglat_bounds(tiles[0]))
    with Session(engine) as s, s.begin():
        repo.replace_shard_results(s, run_id, SHARD_ID, tile_rows(tiles), {})
        n = repo.replace_findings(
            s,
            run_id,
            [
                {
                    "kind": "unsupported",
                    "feature_id": "w1",
                    "area_m2": 80.0,
                    "geometry": box,
                    "tile_z": tiles[0].z,
                    "tile_x": tiles[0].x,
                    "tile_y": tiles[0].y,
                    "detail": {"a": 1},
                },
                {
                    "kind": "missing",
                    "area_m2": 40.0,
                    "confidence": 0.9,
                    "geometry": box.centroid.buffer(1e-5),
                },
            ],
        )
        assert n == 2
        repo.replace_changes(
            s, run_id, [{"kind": "appeared", "geometry": box}], step_from="2024-05"
        )
        repo.replace_hotspots(
            s, run_id, [{"z": 16, "x": SHARD.x, "y": SHARD.y, "gi_star": 3.2, "n_findings": 2}]
        )
        score = repo.write_aoi_score(
            s, run_id, {"completeness": 0.8, "n_tiles": 16, "findings_by_kind": {"missing": 1}}
        )
        assert (score.aoi_id, score.step, score.completeness) == (score.run.aoi_id, "2024-06", 0.8)
        score = repo.write_aoi_score(s, run_id, {"completeness": 0.85})  # upsert: replaced
        assert score.completeness == 0.85
        assert (
            repo.update_tile_flags(
                s,
                run_id,
                [
                    {"z": t.z, "x": t.x, "y": t.y, "flagged": True, "n_findings": 1}
                    for t in tiles[:3]
                ],
            )
            == 3
        )
        repo.finish_run(s, prev, "succeeded")
        repo.finish_run(s, run_id, "succeeded")
    with Session(engine) as s:
        findings = repo.findings_frame(s, run_id)
        changes = repo.changes_frame(s, run_id)
        hotspots = repo.hotspots_frame(s, run_id)
        tiles_df = repo.tile_scores_frame(s, run_id)
        flagged = repo.tile_scores_frame(s, run_id, flagged=True)
        trend = repo.aoi_scores(s, s.get(Run, run_id).aoi_id)
    for frame in (findings, changes, hotspots, tiles_df):
        assert isinstance(frame, gpd.GeoDataFrame) and frame.crs.to_epsg() == 4326
    assert list(findings["kind"]) == ["unsupported", "missing"]
    assert findings.geometry.iloc[0].equals(box) and findings["detail"].iloc[0] == {"a": 1}
    assert (changes["step_from"].iloc[0], changes["step_to"].iloc[0]) == ("2024-05", "2024-06")
    assert hotspots["rank"].tolist() == [1]
    assert hotspots.geometry.iloc[0].equals(shapely.box(*lnglat_bounds(SHARD)))
    assert len(tiles_df) == 16 and len(flagged) == 3 and flagged["n_findings"].tolist() == [1, 1, 1]
    assert [sc.completeness for sc in trend] == [0.85]


def test_empty_frames_keep_columns_and_crs(engine, make_run):
    run_id = make_run()
    with Session(engine) as s:
        frame = repo.findings_frame(s, run_id)
    assert len(frame) == 0 and frame.crs.to_epsg() == 4326
    assert {"kind", "feature_id", "area_m2", "geometry"} <= set(frame.columns)


def test_replace_findings_per_shard_keeps_other_shards(engine, make_run):
    run_id = make_run(shards_total=2)
    box = shapely.box(-9.14, 38.70, -9.139, 38.701)
    with Session(engine) as s, s.begin():
        repo.replace_findings(s, run_id, [{"kind": "missing", "geometry": box}], shard_id=SHARD_ID)
        repo.replace_findings(
            s, run_id, [{"kind": "missing", "geometry": box}] * 2, shard_id=shard_id(OTHER_SHARD)
        )
        repo.replace_findings(s, run_id, [], shard_id=SHARD_ID)
    assert _count(engine, Finding, run_id=run_id) == 2


def test_deleting_a_run_cascades_to_its_results_but_keeps_reviews(engine, make_run):
    run_id = make_run()
    t = shard_tiles()[0]
    with Session(engine) as s, s.begin():
        repo.replace_shard_results(s, run_id, SHARD_ID, tile_rows([t]), {})
        repo.replace_findings(
            s,
            run_id,
            [
                {
                    "kind": "missing",
                    "geometry": shapely.box(*lnglat_bounds(t)),
                    "tile_z": t.z,
                    "tile_x": t.x,
                    "tile_y": t.y,
                }
            ],
        )
        repo.write_aoi_score(s, run_id, {"completeness": 1.0})
        finding_id = s.scalar(select(Finding.id))
        aoi_id = s.get(Run, run_id).aoi_id
        repo.upsert_review(s, aoi_id, "finding", "label_wrong", finding_id=finding_id)
    with Session(engine) as s, s.begin():
        s.delete(s.get(Run, run_id))
    for model in (TileScore, Finding, RunShard):
        assert _count(engine, model) == 0
    with Session(engine) as s:
        review = s.scalars(select(Review)).one()
        assert review.finding_id is None and (review.tile_x, review.tile_y) == (t.x, t.y)
        assert repo.label_wrong_tiles(s, aoi_id) == {t}


def test_a_big_shard_is_one_bulk_insert(engine, make_run):
    """A z13 shard over z18 work tiles: 1024 rows written and read back (not timed)."""
    run_id = make_run()
    big = Tile(SHARD.x >> 3, SHARD.y >> 3, 13)
    tiles = shard_tiles(big)
    with Session(engine) as s, s.begin():
        assert repo.replace_shard_results(s, run_id, shard_id(big), tile_rows(tiles), {}) == 1024
    with Session(engine) as s:
        assert len(repo.tile_scores_frame(s, run_id)) == 1024
