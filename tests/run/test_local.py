"""The local runner end to end on the real AOI: a whole audit in this process with its
validation helper, reuse of unchanged inputs, forced and re-predicted audits, and a
failure inside a stage recorded on the run."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.db import repo
from pipeline.db.models import Run, ValidationResult
from pipeline.errors import ConfigError, StoreError
from pipeline.locks import audit_lock
from pipeline.run.handoffs import AuditRequest
from pipeline.run.local import AuditResult, LocalRunner, run_audit
from pipeline.run.summary import stored_run_summary
from pipeline.run.validation_helper import AuditGate

from ._helpers import SHARD_IDS, bbox_of, run_row, tiles_of_shard
from .conftest import STEP, RealAoi

INPUT_SUITES = {"opendata.features", "opendata.snapshot", "imagery.shards", "imagery.snapshot"}


@pytest.fixture(scope="module")
def first(real_aoi: RealAoi) -> AuditResult:
    return run_audit(real_aoi.ctx, real_aoi.config.name, STEP)


def _n_runs(real_aoi: RealAoi) -> int:
    with Session(real_aoi.ctx.engine) as s:
        return s.scalar(select(func.count()).select_from(Run))


def _cache_runs(real_aoi: RealAoi, result: AuditResult) -> dict[str, int | None]:
    """The run that made each shard's cached prediction."""
    with Session(real_aoi.ctx.engine) as s:
        run = repo.get_run(s, result.run_id)
        hashes = {
            sid: ref["hash"]
            for sid, ref in repo.get_snapshot(s, run.imagery_snapshot_id).meta["shards"].items()
        }
        return {
            sid: repo.cached_prediction(s, h, run.model_version_id, sid).run_id
            for sid, h in hashes.items()
        }


def test_a_whole_audit(real_aoi: RealAoi, first: AuditResult) -> None:
    ctx = real_aoi.ctx
    assert (first.aoi, first.step, first.reused) == (real_aoi.config.name, STEP, False)
    assert first.seconds > 0
    assert [s.shard_id for s in first.shards] == list(SHARD_IDS)
    assert all(s.status == "done" and s.tiles == 4 for s in first.shards)
    assert first.predicted_shards == 4 and first.cache_hits == 0
    run = run_row(ctx, first.run_id)
    assert run.status == "succeeded" and run.trigger == "cli" and run.error is None
    assert first.summary == stored_run_summary(ctx, first.run_id)
    assert {"fetch", "validate", "rasterize", "predict", "score", "changes", "publish"} <= set(
        run.stage_seconds
    )
    with Session(ctx.engine) as s:
        tiles = repo.tile_scores_frame(s, first.run_id)
        suites = set(
            s.scalars(select(ValidationResult.suite).where(ValidationResult.run_id == run.id))
        )
    assert len(tiles) == 16
    assert suites == INPUT_SUITES | {"outputs.tiles", "outputs.run"}
    assert _cache_runs(real_aoi, first) == dict.fromkeys(SHARD_IDS, first.run_id)


def test_unchanged_inputs_reuse_the_last_run_and_abandoned_runs_are_closed(
    real_aoi: RealAoi, first: AuditResult
) -> None:
    ctx, name = real_aoi.ctx, real_aoi.config.name
    with Session(ctx.engine) as s, s.begin():
        aoi_id = repo.get_aoi(s, name).id
        abandoned = repo.start_run(s, aoi_id, STEP, trigger="cli", shards_total=4).id
    latest = run_audit(ctx, name, STEP)  # reused, unless another test audited since
    run = run_row(ctx, abandoned)  # left running by a process that is gone
    assert run.status == "failed" and run.error.startswith("interrupted")
    n = _n_runs(real_aoi)
    again = run_audit(ctx, name, STEP)
    assert again.reused and again.summary.reused
    assert again.run_id == latest.run_id and again.shards == []
    assert again.predicted_shards == 0 and again.cache_hits == 0
    assert _n_runs(real_aoi) == n
    assert again.summary.aggregates == stored_run_summary(ctx, again.run_id).aggregates


def test_a_forced_bbox_audit_is_a_new_run_from_the_cache(
    real_aoi: RealAoi, first: AuditResult
) -> None:
    wanted = SHARD_IDS[2:]
    bbox = bbox_of([tiles_of_shard(sid)[0] for sid in wanted])
    forced = run_audit(real_aoi.ctx, real_aoi.config.name, STEP, bbox=bbox, force=True)
    assert not forced.reused and forced.run_id != first.run_id
    assert [s.shard_id for s in forced.shards] == list(wanted)
    assert forced.cache_hits == 2 and forced.predicted_shards == 0
    run = run_row(real_aoi.ctx, forced.run_id)
    assert run.status == "succeeded" and run.shards_total == 2
    assert run.params["bbox"] == bbox and run.params["force"] is True
    with Session(real_aoi.ctx.engine) as s:
        tiles = repo.tile_scores_frame(s, forced.run_id)
        earlier = repo.tile_scores_frame(s, first.run_id)
    assert set(tiles["shard_id"]) == set(wanted) and len(tiles) == 8
    mine = tiles.set_index(["x", "y"])["qod"].sort_index()
    theirs = earlier.set_index(["x", "y"])["qod"].loc[mine.index]
    assert mine.tolist() == pytest.approx(theirs.tolist())  # the same cached predictions


@pytest.mark.slow
def test_repredict_predicts_every_shard_again(real_aoi: RealAoi, first: AuditResult) -> None:
    redone = run_audit(real_aoi.ctx, real_aoi.config.name, STEP, repredict=True)
    assert not redone.reused and redone.run_id != first.run_id
    # shards predicted ahead while the inputs were validated count as predicted
    assert redone.predicted_shards == 4 and redone.cache_hits == 0
    assert _cache_runs(real_aoi, redone) == dict.fromkeys(SHARD_IDS, redone.run_id)
    run = run_row(real_aoi.ctx, redone.run_id)
    assert run.status == "succeeded" and run.params["repredict"] is True
    # the helper cannot answer the moment the inputs are submitted: at least one shard
    # was predicted ahead, outside the shard stage's own timings
    ahead = run.stage_seconds["predict"]["seconds"] - sum(s.predict_s for s in redone.shards)
    assert ahead > 0.05
    assert redone.summary.aggregates == first.summary.aggregates


class PatientGate(AuditGate):
    """The real gate, except that it never reports its answer ready before it is asked:
    the runner predicts every shard ahead, as it does while a slow validation runs."""

    def inputs_ready(self) -> bool:
        return False


def test_shards_predicted_ahead_count_as_predicted(real_aoi: RealAoi, first: AuditResult) -> None:
    ctx = real_aoi.ctx
    shard = SHARD_IDS[1]
    request = AuditRequest(
        real_aoi.config.name,
        STEP,
        repredict=True,
        bbox=tuple(bbox_of(tiles_of_shard(shard)[:1])),
    )
    with (
        audit_lock(ctx.engine, request.aoi, STEP, home=ctx.settings.home) as lock,
        PatientGate(ctx) as gate,
    ):
        done = LocalRunner(ctx.with_validator(gate), gate, lock).run(request)
    plan, (outcome,) = done["plan"], done["shard"]
    assert outcome.shard_id == shard and outcome.predicted and not outcome.cache_hit
    seconds = run_row(ctx, plan.run_id).stage_seconds
    # the predict stage's time is mostly the prediction made ahead, before any shard
    assert seconds["predict"]["seconds"] > outcome.predict_s
    assert done["validate"].run_id == plan.run_id and done["validate"].success
    assert done["publish"].run_id == plan.run_id
    with Session(ctx.engine) as s:
        suites = set(
            s.scalars(select(ValidationResult.suite).where(ValidationResult.run_id == plan.run_id))
        )
    assert suites >= INPUT_SUITES


def test_a_failure_inside_a_stage_fails_the_run_with_its_reason(
    real_aoi: RealAoi, first: AuditResult
) -> None:
    ctx = real_aoi.ctx
    runs = Path(ctx.store.path("runs"))
    aside = runs.with_name("runs-aside")
    runs.rename(aside)
    runs.write_text("a file where the runs' folder should be")
    try:
        with pytest.raises(StoreError, match="not writable") as raised:
            run_audit(ctx, real_aoi.config.name, STEP, force=True)
    finally:
        runs.unlink()
        aside.rename(runs)
    with Session(ctx.engine) as s:
        aoi_id = repo.get_aoi(s, real_aoi.config.name).id
        failed = repo.latest_run(s, aoi_id, step=STEP, status="failed")
        assert failed is not None and failed.id > first.run_id
        assert failed.error == str(raised.value)
        assert failed.finished_at is not None
        shard_rows = {r.shard_id: r.status for r in failed.shards}
    # the shard stage met it first: its shard is recorded as failed, no later stage ran
    assert shard_rows == {SHARD_IDS[0]: "failed"}
    assert stored_run_summary(ctx, first.run_id).run_id == first.run_id  # earlier runs intact


def test_a_bad_step_is_refused_before_anything_runs(real_aoi: RealAoi) -> None:
    n = _n_runs(real_aoi)
    with pytest.raises(ConfigError, match="time step"):
        run_audit(real_aoi.ctx, real_aoi.config.name, "June 2025")
    assert _n_runs(real_aoi) == n
