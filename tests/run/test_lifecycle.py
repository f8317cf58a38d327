"""The run lifecycle: a run started from fetched snapshots (or an identical one reused),
snapshots that do not belong refused, failures recorded once, abandoned runs closed."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest
from sqlalchemy.orm import Session

from pipeline.aoi import AoiConfig
from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.errors import RunStateError
from pipeline.errors import ConfigError, NotFoundError
from pipeline.locks import AuditBusyError
from pipeline.run.handoffs import AuditPlan, AuditRequest, FetchedSnapshot
from pipeline.run.lifecycle import (
    audit_inputs_key,
    check_run_alive,
    check_snapshots_belong,
    close_abandoned_runs,
    fail_run,
    record_failure,
    record_failure_of,
    resolve_model_version,
    start_run,
)
from pipeline.run.snapshots import imagery_meta
from pipeline.tiles import Tile

from ._helpers import SHARD_IDS, bbox_of, fetched, finish_unscored, register, run_row
from .conftest import STEP, RealAoi

OTHER_STEP = "2025-07-01"


@pytest.fixture
def aoi(real_aoi: RealAoi) -> AoiConfig:
    """A new AOI of its own, so that each test sees only its own runs."""
    return register(real_aoi.ctx, "life")


def _start(
    real_aoi: RealAoi,
    config: AoiConfig,
    snaps: tuple[FetchedSnapshot, FetchedSnapshot] | None = None,
    **request: Any,
) -> AuditPlan:
    imagery, opendata = snaps or fetched(real_aoi.ctx, config)
    return start_run(
        real_aoi.ctx, config, AuditRequest(config.name, STEP, **request), imagery, opendata
    )


def test_start_run_records_the_run_and_its_shards(real_aoi: RealAoi, aoi: AoiConfig) -> None:
    imagery, opendata = fetched(real_aoi.ctx, aoi)
    request = AuditRequest(aoi.name, STEP, trigger="test", params={"who": "me"})
    plan = start_run(real_aoi.ctx, aoi, request, imagery, opendata)
    assert (plan.aoi, plan.step, plan.reused) == (aoi.name, STEP, False)
    assert plan.shard_ids == SHARD_IDS
    run = run_row(real_aoi.ctx, plan.run_id)
    assert (run.status, run.trigger, run.step, run.shards_total) == ("running", "test", STEP, 4)
    assert run.imagery_snapshot_id == imagery.snapshot_id
    assert run.opendata_snapshot_id == opendata.snapshot_id
    assert run.model_version_id == real_aoi.model_version_id
    assert run.params["who"] == "me" and run.params["force"] is False
    assert run.params["bbox"] is None
    assert run.params["inputs_key"] == audit_inputs_key(
        aoi, imagery, opendata, real_aoi.model_version_id, None
    )
    # the fetch stages' seconds are the run's first timing
    seconds = run.stage_seconds["fetch"]["seconds"]
    assert seconds == pytest.approx(imagery.seconds + opendata.seconds, abs=1e-3)
    assert seconds > 0


def test_identical_inputs_reuse_the_succeeded_run(real_aoi: RealAoi, aoi: AoiConfig) -> None:
    snaps = fetched(real_aoi.ctx, aoi)
    first = _start(real_aoi, aoi, snaps)
    # a running run is not reused: its results are not there yet
    second = _start(real_aoi, aoi, snaps)
    assert not second.reused and second.run_id != first.run_id
    finish_unscored(real_aoi.ctx, first)
    again = _start(real_aoi, aoi, snaps)
    assert again.reused and again.run_id == first.run_id and again.shard_ids == ()
    # fetched again (unchanged sources: the same snapshots) still reuses it
    assert _start(real_aoi, aoi).run_id == first.run_id


@pytest.mark.parametrize("option", ["force", "repredict"])
def test_force_and_repredict_start_a_new_run(
    real_aoi: RealAoi, aoi: AoiConfig, option: str
) -> None:
    snaps = fetched(real_aoi.ctx, aoi)
    first = _start(real_aoi, aoi, snaps)
    finish_unscored(real_aoi.ctx, first)
    plan = _start(real_aoi, aoi, snaps, **{option: True})
    assert not plan.reused and plan.run_id != first.run_id and plan.shard_ids == SHARD_IDS
    assert run_row(real_aoi.ctx, plan.run_id).params[option] is True


def test_what_changes_results_starts_a_new_run(real_aoi: RealAoi, aoi: AoiConfig) -> None:
    ctx = real_aoi.ctx
    snaps = fetched(ctx, aoi)
    first = _start(real_aoi, aoi, snaps)
    finish_unscored(ctx, first)
    # a bbox subset has other results
    bbox = tuple(bbox_of([Tile(773394, 440526, 20)]))
    subset = _start(real_aoi, aoi, snaps, bbox=bbox)
    assert not subset.reused and subset.shard_ids == (SHARD_IDS[0],)
    assert run_row(ctx, subset.run_id).params["bbox"] == list(bbox)
    # other thresholds have other results; the description does not
    described = register_same(ctx, aoi, description="same AOI, new words")
    assert _start(real_aoi, described, snaps).run_id == first.run_id
    stricter = register_same(ctx, aoi, thresholds={"qod_flag": 50.0})
    plan = _start(real_aoi, stricter, snaps)
    assert not plan.reused and plan.run_id != first.run_id


def register_same(ctx: Context, config: AoiConfig, **changes: Any) -> AoiConfig:
    """The AOI registered again with ``changes`` (same name, same sources)."""
    from pipeline.aoi.registry import register_aoi

    return register_aoi(ctx, config.model_validate({**config.model_dump(), **changes}))


def test_inputs_key_covers_what_results_depend_on(real_aoi: RealAoi, aoi: AoiConfig) -> None:
    imagery = FetchedSnapshot("imagery", 1, "a" * 64, STEP)
    opendata = FetchedSnapshot("opendata", 2, "b" * 64, STEP)
    key = audit_inputs_key(aoi, imagery, opendata, 1, None)
    assert len(key) == 64 and key == audit_inputs_key(aoi, imagery, opendata, 1, None)
    other_hash = FetchedSnapshot("imagery", 1, "c" * 64, STEP)
    variants = [
        audit_inputs_key(aoi, other_hash, opendata, 1, None),
        audit_inputs_key(aoi, imagery, FetchedSnapshot("opendata", 2, "d" * 64, STEP), 1, None),
        audit_inputs_key(aoi, imagery, opendata, 2, None),
        audit_inputs_key(aoi, imagery, opendata, 1, 7),
        audit_inputs_key(aoi, imagery, opendata, 1, None, (85.0, 27.0, 85.1, 27.1)),
        audit_inputs_key(
            aoi.model_copy(update={"work_zoom": 19, "shard_zoom": 18}), imagery, opendata, 1, None
        ),
    ]
    assert key not in variants and len(set(variants)) == len(variants)
    # settings that do not change results
    for update in ({"description": "x"}, {"schedule": None}, {"owner": "y"}, {"tags": ["t"]}):
        assert audit_inputs_key(aoi.model_copy(update=update), imagery, opendata, 1, None) == key
    # the snapshot ids themselves are not in the key, their content is
    same_content = FetchedSnapshot("imagery", 99, "a" * 64, STEP, reused=True, seconds=3.0)
    assert audit_inputs_key(aoi, same_content, opendata, 1, None) == key
    json.dumps(key)


def test_resolve_model_version(real_aoi: RealAoi, aoi: AoiConfig) -> None:
    ctx = real_aoi.ctx
    assert resolve_model_version(ctx, aoi, None) == real_aoi.model_version_id
    assert resolve_model_version(ctx, aoi, real_aoi.model_version_id) == real_aoi.model_version_id
    with pytest.raises(NotFoundError):
        resolve_model_version(ctx, aoi, 9999)
    unnamed = aoi.model_copy(update={"model": aoi.model.model_copy(update={"name": "roofs"})})
    with pytest.raises(NotFoundError, match=r"no production model named 'roofs'.*geoaudit train"):
        resolve_model_version(ctx, unnamed, None)


def test_a_bbox_outside_the_aoi_starts_nothing(real_aoi: RealAoi, aoi: AoiConfig) -> None:
    with pytest.raises(ConfigError, match="does not intersect AOI"):
        _start(real_aoi, aoi, bbox=(10.0, 10.0, 10.1, 10.1))
    with pytest.raises(ConfigError, match="bbox must be"):
        _start(real_aoi, aoi, bbox=(85.1, 27.1, 85.0, 27.0))
    with Session(real_aoi.ctx.engine) as s:
        assert repo.list_runs(s, repo.get_aoi(s, aoi.name).id) == []


# --- snapshots that do not belong -------------------------------------------------------


def test_another_aois_snapshots_are_refused(real_aoi: RealAoi, aoi: AoiConfig) -> None:
    other = register(real_aoi.ctx, "other")
    mine, theirs = fetched(real_aoi.ctx, aoi), fetched(real_aoi.ctx, other)
    for imagery, opendata in ((theirs[0], mine[1]), (mine[0], theirs[1])):
        bad = imagery if imagery is theirs[0] else opendata
        with pytest.raises(ConfigError, match=rf"snapshot {bad.snapshot_id} is of AOI id \d+"):
            check_snapshots_belong(real_aoi.ctx, aoi.name, STEP, imagery, opendata)
        with pytest.raises(ConfigError, match=f"not of '{aoi.name}'"):
            _start(real_aoi, aoi, (imagery, opendata))
    check_snapshots_belong(real_aoi.ctx, aoi.name, STEP, *mine)


def test_another_steps_snapshots_are_refused(real_aoi: RealAoi, aoi: AoiConfig) -> None:
    imagery, opendata = fetched(real_aoi.ctx, aoi)
    later_imagery, _ = fetched(real_aoi.ctx, aoi, OTHER_STEP)
    with pytest.raises(
        ConfigError, match=rf"step '{OTHER_STEP}', not of '{aoi.name}' step '{STEP}'"
    ):
        _start(real_aoi, aoi, (later_imagery, opendata))
    with Session(real_aoi.ctx.engine) as s:
        assert repo.list_runs(s, repo.get_aoi(s, aoi.name).id) == []


def test_snapshots_of_the_wrong_kind_are_refused(real_aoi: RealAoi, aoi: AoiConfig) -> None:
    imagery, opendata = fetched(real_aoi.ctx, aoi)
    with pytest.raises(
        ConfigError, match=rf"snapshot {opendata.snapshot_id} is opendata, not imagery"
    ):
        check_snapshots_belong(real_aoi.ctx, aoi.name, STEP, opendata, opendata)
    with pytest.raises(
        ConfigError, match=rf"snapshot {imagery.snapshot_id} is imagery, not opendata"
    ):
        check_snapshots_belong(real_aoi.ctx, aoi.name, STEP, imagery, imagery)


def test_imagery_covering_no_shard_is_refused(real_aoi: RealAoi, aoi: AoiConfig) -> None:
    _, opendata = fetched(real_aoi.ctx, aoi)
    with Session(real_aoi.ctx.engine) as s, s.begin():
        row = repo.add_snapshot(
            s,
            repo.get_aoi(s, aoi.name).id,
            "imagery",
            STEP,
            source="empty",
            content_hash="e" * 64,
            meta=imagery_meta("f" * 64, 0.0, {}, {}),
        )
        empty = FetchedSnapshot("imagery", row.id, row.content_hash, STEP)
    with pytest.raises(
        ConfigError, match=rf"imagery snapshot {empty.snapshot_id} .* covers no shard"
    ):
        _start(real_aoi, aoi, (empty, opendata))


def test_unknown_snapshots_are_not_found(real_aoi: RealAoi, aoi: AoiConfig) -> None:
    imagery, opendata = fetched(real_aoi.ctx, aoi)
    ghost = FetchedSnapshot("imagery", 987654, "0" * 64, STEP)
    with pytest.raises(NotFoundError, match="snapshot 987654 does not exist"):
        check_snapshots_belong(real_aoi.ctx, aoi.name, STEP, ghost, opendata)


# --- failures and abandoned runs ----------------------------------------------------------


def test_record_failure_marks_a_running_run_failed_once(real_aoi: RealAoi, aoi: AoiConfig) -> None:
    plan = _start(real_aoi, aoi)
    record_failure(real_aoi.ctx, plan.run_id, "the first reason")
    run = run_row(real_aoi.ctx, plan.run_id)
    assert run.status == "failed" and run.error == "the first reason"
    assert run.finished_at is not None
    record_failure(real_aoi.ctx, plan.run_id, "a later reason")
    assert run_row(real_aoi.ctx, plan.run_id).error == "the first reason"


def test_record_failure_leaves_a_succeeded_run_alone(real_aoi: RealAoi, aoi: AoiConfig) -> None:
    plan = _start(real_aoi, aoi)
    finish_unscored(real_aoi.ctx, plan)
    record_failure(real_aoi.ctx, plan.run_id, "too late")
    run = run_row(real_aoi.ctx, plan.run_id)
    assert run.status == "succeeded" and run.error is None


def test_fail_run_redacts_and_cuts_the_reason(real_aoi: RealAoi, aoi: AoiConfig) -> None:
    plan = _start(real_aoi, aoi)
    secret = "postgresql://geoaudit:hunter2@db:5432/geoaudit"
    fail_run(real_aoi.ctx, plan.run_id, RuntimeError(f"cannot connect to {secret} " + "x" * 5000))
    error = run_row(real_aoi.ctx, plan.run_id).error
    assert "hunter2" not in error and "cannot connect to" in error
    assert len(error) <= 4000


def test_record_failure_of_an_external_run(real_aoi: RealAoi, aoi: AoiConfig) -> None:
    plan = _start(real_aoi, aoi, trigger="airflow", external_id=f"manual__{aoi.name}")
    assert record_failure_of(real_aoi.ctx, f"manual__{aoi.name}", "task failed") == plan.run_id
    run = run_row(real_aoi.ctx, plan.run_id)
    assert run.status == "failed" and run.error == "task failed"
    assert record_failure_of(real_aoi.ctx, "manual__no-such-run", "task failed") is None


def test_close_abandoned_runs(real_aoi: RealAoi, aoi: AoiConfig) -> None:
    ctx = real_aoi.ctx
    snaps = fetched(ctx, aoi)
    local = _start(real_aoi, aoi, snaps)
    scheduled = _start(real_aoi, aoi, snaps, trigger="airflow", external_id=f"sched-{aoi.name}")
    done = _start(real_aoi, aoi, snaps)
    finish_unscored(ctx, done)
    later_snaps = fetched(ctx, aoi, OTHER_STEP)
    later = start_run(ctx, aoi, AuditRequest(aoi.name, OTHER_STEP), *later_snaps)

    # a scheduler's run whose task was seen a moment ago is alive: a new run is refused
    # (its own planning task, retried, is not)
    with pytest.raises(AuditBusyError, match=rf"by airflow run 'sched-{aoi.name}'.*seen \d+ s ago"):
        close_abandoned_runs(ctx, aoi.name, STEP)
    assert close_abandoned_runs(ctx, aoi.name, STEP, own_external_id=f"sched-{aoi.name}") == [
        local.run_id
    ]
    run = run_row(ctx, local.run_id)
    assert run.status == "failed" and run.error.startswith("interrupted")
    # a finished run and another step's stay as they are
    assert run_row(ctx, scheduled.run_id).status == "running"
    assert run_row(ctx, done.run_id).status == "succeeded"
    assert run_row(ctx, later.run_id).status == "running"
    # no task of the scheduler's run seen for longer than abandoned_run_s: closed
    check_run_alive(ctx, scheduled.run_id)
    assert run_row(ctx, scheduled.run_id).heartbeat_at is not None
    quick = dataclasses.replace(
        ctx, settings=ctx.settings.model_copy(update={"abandoned_run_s": 0.001})
    )
    time.sleep(0.01)
    assert close_abandoned_runs(quick, aoi.name, STEP) == [scheduled.run_id]
    run = run_row(ctx, scheduled.run_id)
    assert run.status == "failed" and run.error.startswith("interrupted: no task of it was seen")
    assert close_abandoned_runs(ctx, aoi.name, STEP) == []
    # and its tasks, when its scheduler comes back, write nothing more
    with pytest.raises(RunStateError, match=rf"run {scheduled.run_id} is failed .*writes nothing"):
        check_run_alive(ctx, scheduled.run_id)
