"""The stage sequence run the way a scheduler runs it: each stage on its own, its inputs
rebuilt from the JSON (XCom) form of the earlier stages' hand-offs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from audited_town import Audited
from pipeline.db import repo
from pipeline.db.models import Run
from pipeline.errors import ConfigError
from pipeline.run.handoffs import AuditRequest
from pipeline.run.lifecycle import record_failure
from pipeline.run.stages import AUDIT_STAGES, run_stage

pytestmark = pytest.mark.slow


def _first_run(audited: Audited) -> tuple[str, str, int]:
    with Session(audited.ctx.engine) as s:
        run = s.scalars(select(Run).order_by(Run.id)).first()
        return repo.get_aoi(s, run.aoi_id).name, run.step, run.id


def scheduled(ctx, request: AuditRequest, *, until: str | None = None) -> dict[str, Any]:
    """Every stage in declared order, each fed the JSON round trip of its inputs (as
    Airflow's XCom carries them); the JSON hand-offs by stage name."""
    xcom: dict[str, Any] = {}
    for stage in AUDIT_STAGES:
        inputs = {dep: xcom[dep] for dep in stage.inputs}
        if stage.per_shard:
            xcom[stage.name] = [
                _json(run_stage(ctx, stage.name, request, inputs, shard_id=sid).to_xcom())
                for sid in xcom["plan"]["shard_ids"]
            ]
        else:
            xcom[stage.name] = _json(run_stage(ctx, stage.name, request, inputs).to_xcom())
        if stage.name == until:
            break
    return xcom


def _json(data: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(data)
    assert len(text) < 10_000  # ids, hashes, counts: never arrays
    return json.loads(text)


def test_unchanged_inputs_reuse_the_earlier_run_through_every_stage(audited: Audited) -> None:
    ctx = audited.ctx
    aoi, step, first_id = _first_run(audited)
    xcom = scheduled(ctx, AuditRequest(aoi, step, trigger="airflow"))
    assert xcom["fetch_imagery"]["reused"] and xcom["fetch_opendata"]["reused"]
    assert xcom["plan"]["reused"] and xcom["plan"]["shard_ids"] == []
    assert xcom["validate"]["reused"] and xcom["changes"]["reused"]
    assert xcom["shard"] == []
    assert xcom["publish"]["run_id"] == xcom["plan"]["run_id"] and xcom["publish"]["reused"]


def test_a_scheduled_audit_equals_the_local_one(audited: Audited) -> None:
    ctx = audited.ctx
    aoi, step, first_id = _first_run(audited)
    request = AuditRequest(aoi, step, force=True, trigger="airflow", external_id="test-run-1")
    xcom = scheduled(ctx, request)
    plan = xcom["plan"]
    assert not plan["reused"] and plan["run_id"] != first_id and plan["shard_ids"]
    assert all(s["cache_hit"] for s in xcom["shard"] if s["status"] == "done")
    with Session(ctx.engine) as s:
        run = repo.get_run(s, plan["run_id"])
        assert run.status == "succeeded" and run.external_id == "test-run-1"
        assert {"fetch", "validate", "rasterize", "predict", "score", "publish"} <= set(
            run.stage_seconds
        )
        before = repo.findings_frame(s, first_id)
        after = repo.findings_frame(s, plan["run_id"])
    assert xcom["publish"]["n_findings"] == len(after) == len(before)
    assert sorted(after["kind"]) == sorted(before["kind"])


def test_changes_are_stored_before_publish_and_a_rerun_replaces_them(audited: Audited) -> None:
    ctx = audited.ctx
    aoi, _, _ = _first_run(audited)
    last = audited.summary["runs"][-1]
    request = AuditRequest(aoi, last["step"], force=True)
    xcom = scheduled(ctx, request, until="changes")
    changed, run_id = xcom["changes"], xcom["plan"]["run_id"]
    assert not changed["reused"]
    with Session(ctx.engine) as s:  # stored by the changes stage, the run not finished yet
        assert repo.get_run(s, run_id).status == "running"
        assert len(repo.changes_frame(s, run_id)) == changed["n_changes"] > 0
    again = run_stage(ctx, "changes", request, {"plan": xcom["plan"]}).to_xcom()
    assert again["n_changes"] == changed["n_changes"]
    published = run_stage(ctx, "publish", request, {"plan": xcom["plan"]}).to_xcom()
    assert published["n_changes"] == changed["n_changes"]
    with Session(ctx.engine) as s:
        run = repo.get_run(s, run_id)
        assert run.status == "succeeded" and "changes" in run.stage_seconds
        ours = repo.changes_frame(s, run_id)
        theirs = repo.changes_frame(s, last["run_id"])
    assert sorted(ours["kind"]) == sorted(theirs["kind"])
    assert ours.geometry.area.sum() == pytest.approx(theirs.geometry.area.sum(), rel=1e-6)


def test_record_failure_marks_an_unfinished_run_and_leaves_finished_ones(
    audited: Audited,
) -> None:
    ctx = audited.ctx
    aoi, step, first_id = _first_run(audited)
    xcom = scheduled(ctx, AuditRequest(aoi, step, force=True), until="plan")
    run_id = xcom["plan"]["run_id"]
    record_failure(ctx, run_id, "shard 16-1-2 failed: boom")
    record_failure(ctx, first_id, "must not touch a succeeded run")
    with Session(ctx.engine) as s:
        failed = repo.get_run(s, run_id)
        assert failed.status == "failed" and "boom" in failed.error
        assert repo.get_run(s, first_id).status == "succeeded"


def test_plan_refuses_hand_offs_of_the_wrong_kind_or_shape(audited: Audited) -> None:
    ctx = audited.ctx
    aoi, step, _ = _first_run(audited)
    request = AuditRequest(aoi, step)
    xcom = scheduled(ctx, request, until="fetch_opendata")
    opendata = xcom["fetch_opendata"]
    with pytest.raises(ConfigError, match=r"snapshot \d+ is opendata, not imagery"):
        run_stage(ctx, "plan", request, {"fetch_imagery": opendata, "fetch_opendata": opendata})
    no_id = {k: v for k, v in opendata.items() if k != "snapshot_id"}
    with pytest.raises(ConfigError, match="fetched snapshot: field 'snapshot_id' is missing"):
        run_stage(ctx, "plan", request, {"fetch_imagery": no_id, "fetch_opendata": opendata})
    with pytest.raises(ConfigError, match="field 'snapshot_id' = 'x' is not int"):
        bad = {**opendata, "snapshot_id": "x"}
        run_stage(ctx, "plan", request, {"fetch_imagery": bad, "fetch_opendata": opendata})


def test_a_bbox_subset_audits_only_the_shards_it_touches(audited: Audited) -> None:
    from pipeline.aoi.registry import get_aoi_config
    from pipeline.tiles import lnglat_bounds

    ctx = audited.ctx
    aoi, _, _ = _first_run(audited)
    step = audited.summary["runs"][-1]["step"]  # step 2: changes are compared too
    with Session(ctx.engine) as s:
        full_shards = repo.get_run(s, audited.summary["runs"][-1]["run_id"]).shards_total
    config = get_aoi_config(ctx, aoi)
    shard, tiles = next(iter(config.shards().items()))
    w, s_, e, n = lnglat_bounds(tiles[0])
    inner = (w + (e - w) * 0.4, s_ + (n - s_) * 0.4, w + (e - w) * 0.6, s_ + (n - s_) * 0.6)
    xcom = scheduled(ctx, AuditRequest(aoi, step, bbox=inner))
    assert xcom["plan"]["shard_ids"] == [shard.id] and full_shards > 1
    with Session(ctx.engine) as s:
        run = repo.get_run(s, xcom["plan"]["run_id"])
        assert run.status == "succeeded" and run.params["bbox"] == list(inner)
        tiles_scored = repo.tile_scores_frame(s, run.id)
        findings = repo.findings_frame(s, run.id)
        changes = repo.changes_frame(s, run.id)
    area = tiles_scored.union_all().buffer(1e-6)
    assert set(tiles_scored["shard_id"]) == {shard.id}
    assert findings.geometry.representative_point().within(area).all()
    imagery_changes = changes[changes["kind"].isin(["appeared", "disappeared"])]
    assert imagery_changes.geometry.representative_point().within(area.buffer(1e-4)).all()
    # the same subset again is the same run
    again = scheduled(ctx, AuditRequest(aoi, step, bbox=inner), until="plan")
    assert again["plan"]["reused"] and again["plan"]["run_id"] == run.id


@pytest.mark.parametrize(
    "bbox,message",
    [
        ((1, 2, 3), "4 numbers"),
        ((10, 50, 9, 51), "west < east"),
        ((100.0, 10.0, 100.1, 10.1), "does not intersect AOI"),
    ],
)
def test_a_bad_bbox_is_refused_before_a_run_starts(audited: Audited, bbox, message) -> None:
    ctx = audited.ctx
    aoi, step, _ = _first_run(audited)
    with Session(ctx.engine) as s:
        before = len(s.scalars(select(Run)).all())
    with pytest.raises(ConfigError, match=message):
        scheduled(ctx, AuditRequest(aoi, step, bbox=bbox), until="plan")
    with Session(ctx.engine) as s:
        assert len(s.scalars(select(Run)).all()) == before
