"""The audit as separate steps (what Airflow tasks call) agrees with the one-call audit."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from audited_town import Audited
from pipeline.db import repo
from pipeline.db.models import Run
from pipeline.errors import ConfigError
from pipeline.orchestrate import (
    changes_step,
    fetch_imagery_step,
    fetch_opendata_step,
    plan_step,
    publish_step,
    record_failure,
    shard_step,
)

pytestmark = pytest.mark.slow


def _first_run(audited: Audited) -> tuple[str, str, int]:
    with Session(audited.ctx.engine) as s:
        run = s.scalars(select(Run).order_by(Run.id)).first()
        return repo.get_aoi(s, run.aoi_id).name, run.step, run.id


def test_step_by_step_audit_matches_the_one_call_audit(audited: Audited) -> None:
    ctx = audited.ctx
    aoi, step, first_id = _first_run(audited)
    imagery = fetch_imagery_step(ctx, aoi, step)
    opendata = fetch_opendata_step(ctx, aoi, step)
    assert imagery["reused"] and opendata["reused"]  # fetched by the demo already
    meta = {"imagery": imagery, "opendata": opendata}
    assert json.loads(json.dumps(meta)) == meta  # small and JSON-able (XCom)

    # unchanged inputs: the earlier run, nothing to map over
    same = plan_step(ctx, aoi, step, imagery, opendata)
    assert same["reused"] and same["shard_ids"] == []
    assert publish_step(ctx, same)["run_id"] == same["run_id"]

    plan = plan_step(ctx, aoi, step, imagery, opendata, force=True, external_id="test-run-1")
    assert not plan["reused"] and plan["run_id"] != first_id and plan["shard_ids"]
    stats = [shard_step(ctx, plan["run_id"], shard_id) for shard_id in plan["shard_ids"]]
    assert all(st["cache_hit"] for st in stats if st.get("status") == "done")
    out = publish_step(ctx, plan)
    with Session(ctx.engine) as s:
        run = repo.get_run(s, plan["run_id"])
        assert run.status == "succeeded" and run.external_id == "test-run-1"
        before = repo.findings_frame(s, first_id)
        after = repo.findings_frame(s, plan["run_id"])
    assert out["n_findings"] == len(after) == len(before)
    assert sorted(after["kind"]) == sorted(before["kind"])


def test_changes_as_their_own_step_match_the_one_call_audit(audited: Audited) -> None:
    """Airflow's `changes` task, then `publish`: the same changes as the in-process audit."""
    ctx = audited.ctx
    aoi, _, _ = _first_run(audited)
    last = audited.summary["runs"][-1]
    imagery = fetch_imagery_step(ctx, aoi, last["step"])
    opendata = fetch_opendata_step(ctx, aoi, last["step"])
    plan = plan_step(ctx, aoi, last["step"], imagery, opendata, force=True)
    for shard_id in plan["shard_ids"]:
        shard_step(ctx, plan["run_id"], shard_id)
    changed = changes_step(ctx, plan)
    assert json.loads(json.dumps(changed)) == changed and not changed["reused"]
    with Session(ctx.engine) as s:  # stored by the changes step, the run not finished yet
        assert repo.get_run(s, plan["run_id"]).status == "running"
        assert len(repo.changes_frame(s, plan["run_id"])) == changed["n_changes"] > 0
    out = publish_step(ctx, plan, changed)
    assert out["n_changes"] == changed["n_changes"]
    with Session(ctx.engine) as s:
        run = repo.get_run(s, plan["run_id"])
        assert run.status == "succeeded" and "changes" in run.stage_seconds
        ours = repo.changes_frame(s, plan["run_id"])
        theirs = repo.changes_frame(s, last["run_id"])
    assert sorted(ours["kind"]) == sorted(theirs["kind"])
    assert ours.geometry.area.sum() == pytest.approx(theirs.geometry.area.sum(), rel=1e-6)
    # a re-run of the changes step replaces, never duplicates
    assert changes_step(ctx, plan)["n_changes"] == changed["n_changes"]
    with Session(ctx.engine) as s:
        assert len(repo.changes_frame(s, plan["run_id"])) == changed["n_changes"]


def test_record_failure_marks_an_unfinished_run_and_leaves_finished_ones(
    audited: Audited,
) -> None:
    ctx = audited.ctx
    aoi, step, first_id = _first_run(audited)
    imagery = fetch_imagery_step(ctx, aoi, step)
    opendata = fetch_opendata_step(ctx, aoi, step)
    plan = plan_step(ctx, aoi, step, imagery, opendata, force=True)
    record_failure(ctx, plan["run_id"], "shard 16-1-2 failed: boom")
    record_failure(ctx, first_id, "must not touch a succeeded run")
    with Session(ctx.engine) as s:
        failed = repo.get_run(s, plan["run_id"])
        assert failed.status == "failed" and "boom" in failed.error
        assert repo.get_run(s, first_id).status == "succeeded"


def test_plan_refuses_snapshot_metadata_of_the_wrong_kind(audited: Audited) -> None:
    ctx = audited.ctx
    aoi, step, _ = _first_run(audited)
    imagery = fetch_imagery_step(ctx, aoi, step)
    opendata = fetch_opendata_step(ctx, aoi, step)
    with pytest.raises(ConfigError, match=r"snapshot \d+ is opendata, not imagery"):
        plan_step(ctx, aoi, step, opendata, opendata)
    with pytest.raises(ConfigError, match="no valid 'snapshot_id'"):
        plan_step(ctx, aoi, step, {"id": 1}, opendata)
    assert imagery["snapshot_id"] != opendata["snapshot_id"]


def test_a_bbox_subset_audits_only_the_shards_it_touches(audited: Audited) -> None:
    ctx = audited.ctx
    aoi, _, _ = _first_run(audited)
    step = audited.summary["runs"][-1]["step"]  # step 2: changes are compared too
    with Session(ctx.engine) as s:
        full = repo.get_run(s, audited.summary["runs"][-1]["run_id"])
        full_shards = full.shards_total
    from pipeline.aois import get_aoi_config
    from pipeline.tiles import lnglat_bounds

    config = get_aoi_config(ctx, aoi)
    shard, tiles = next(iter(config.shards().items()))
    w, s_, e, n = lnglat_bounds(tiles[0])
    inner = [w + (e - w) * 0.4, s_ + (n - s_) * 0.4, w + (e - w) * 0.6, s_ + (n - s_) * 0.6]
    imagery = fetch_imagery_step(ctx, aoi, step)
    opendata = fetch_opendata_step(ctx, aoi, step)
    plan = plan_step(ctx, aoi, step, imagery, opendata, bbox=inner)
    assert plan["shard_ids"] == [shard.id] and full_shards > 1
    for shard_id in plan["shard_ids"]:
        shard_step(ctx, plan["run_id"], shard_id)
    publish_step(ctx, plan, changes_step(ctx, plan))
    with Session(ctx.engine) as s:
        run = repo.get_run(s, plan["run_id"])
        assert run.status == "succeeded" and run.params["bbox"] == inner
        tiles_scored = repo.tile_scores_frame(s, run.id)
        findings = repo.findings_frame(s, run.id)
        changes = repo.changes_frame(s, run.id)
    area = tiles_scored.union_all().buffer(1e-6)
    assert set(tiles_scored["shard_id"]) == {shard.id}
    assert findings.geometry.representative_point().within(area).all()
    imagery_changes = changes[changes["kind"].isin(["appeared", "disappeared"])]
    assert imagery_changes.geometry.representative_point().within(area.buffer(1e-4)).all()
    # the same subset again is the same run; another subset is a new one
    again = plan_step(ctx, aoi, step, imagery, opendata, bbox=inner)
    assert again["reused"] and again["run_id"] == plan["run_id"]


@pytest.mark.parametrize(
    "bbox,message",
    [
        ([1, 2, 3], "4 numbers"),
        ([10, 50, 9, 51], "west < east"),
        ([100.0, 10.0, 100.1, 10.1], "does not intersect AOI"),
    ],
)
def test_a_bad_bbox_is_refused_before_a_run_starts(audited: Audited, bbox, message) -> None:
    ctx = audited.ctx
    aoi, step, _ = _first_run(audited)
    imagery = fetch_imagery_step(ctx, aoi, step)
    opendata = fetch_opendata_step(ctx, aoi, step)
    with Session(ctx.engine) as s:
        before = len(s.scalars(select(Run)).all())
    with pytest.raises(ConfigError, match=message):
        plan_step(ctx, aoi, step, imagery, opendata, bbox=bbox)
    with Session(ctx.engine) as s:
        assert len(s.scalars(select(Run)).all()) == before
