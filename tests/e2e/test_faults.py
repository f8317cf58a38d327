"""Faults in the middle of an audit: a lost database connection, a killed process, an
artifact store that refuses writes. Each ends in a clear error, a rolled-back shard or a
recorded failed run, and a re-run that completes with no duplicates."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from pipeline.db import repo
from pipeline.db.errors import RunStateError
from pipeline.db.models import Run, RunShard, TileScore
from pipeline.errors import StoreError
from pipeline.locks import AuditBusyError
from pipeline.run.fetch import fetch_imagery
from pipeline.run.handoffs import AuditRequest
from pipeline.run.layout import prediction_key
from pipeline.run.local import run_audit
from pipeline.run.snapshots import imagery_snapshot
from pipeline.run.stages import run_stage
from pipeline.sample.demo import SAMPLE_AOI

from .test_validation_gate import haze

pytestmark = pytest.mark.slow
KILLER = Path(__file__).parents[1] / "kill_mid_shard.py"


def tile_rows(ctx, run_id: int) -> tuple[int, int]:  # noqa: ANN001
    """(rows, distinct tiles) of a run's tile scores."""
    with Session(ctx.engine) as s:
        rows = s.execute(
            select(TileScore.z, TileScore.x, TileScore.y).where(TileScore.run_id == run_id)
        ).all()
    return len(rows), len(set(rows))


@pytest.mark.postgres
@pytest.mark.parametrize("small_town", ["postgres"], indirect=True)
def test_connection_lost_while_storing_a_shard_rolls_back_and_a_rerun_is_clean(
    small_town,  # noqa: ANN001
) -> None:
    # a server connection to terminate: PostgreSQL's (SQLite has none)
    ctx = small_town.ctx
    step = small_town.new_step("2032-01-01", imagery=haze(0.02))
    request = AuditRequest(SAMPLE_AOI, step, trigger="airflow", external_id="fault-1")
    xcom = {name: run_stage(ctx, name, request, {}) for name in ("fetch_imagery", "fetch_opendata")}
    plan = run_stage(ctx, "plan", request, xcom)
    run_stage(ctx, "validate", request, {"plan": plan})
    shard_id = plan.shard_ids[0]
    admin = create_engine(ctx.engine.url)

    def terminate(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ARG001
        if statement.lstrip().upper().startswith("INSERT INTO TILE_SCORE"):
            pid = conn.connection.dbapi_connection.info.backend_pid
            with admin.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    event.listen(ctx.engine, "before_cursor_execute", terminate)
    try:
        with pytest.raises(OperationalError):
            run_stage(ctx, "shard", request, {"plan": plan}, shard_id=shard_id)
    finally:
        event.remove(ctx.engine, "before_cursor_execute", terminate)
        admin.dispose()
    # the shard's transaction was rolled back: no row of it, the shard not done
    assert tile_rows(ctx, plan.run_id) == (0, 0)
    with Session(ctx.engine) as s:
        shards = s.scalars(select(RunShard).where(RunShard.run_id == plan.run_id)).all()
    # recorded as failed, with the reason
    assert [(r.shard_id, r.status) for r in shards] == [(shard_id, "failed")]
    assert "OperationalError" in shards[0].stats["error"]
    # the re-run (a retried task) completes the run with one row per tile
    for sid in plan.shard_ids:
        run_stage(ctx, "shard", request, {"plan": plan}, shard_id=sid)
    run_stage(ctx, "shard", request, {"plan": plan}, shard_id=shard_id)  # replaces, not appends
    rows, distinct = tile_rows(ctx, plan.run_id)
    assert rows == distinct > 0
    run_stage(ctx, "changes", request, {"plan": plan})
    run_stage(ctx, "publish", request, {"plan": plan})
    with Session(ctx.engine) as s:
        assert repo.get_run(s, plan.run_id).status == "succeeded"


def test_process_killed_in_the_middle_of_a_shard_then_a_rerun_is_clean(small_town) -> None:  # noqa: ANN001
    ctx = small_town.ctx
    step = small_town.new_step("2032-02-01", imagery=haze(0.03))
    url = ctx.settings.database_url or ""
    killed = subprocess.run(
        [sys.executable, str(KILLER), str(ctx.settings.home), url, SAMPLE_AOI, step],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert "killing" in killed.stdout
    with Session(ctx.engine) as s:
        dead = s.scalars(select(Run).where(Run.step == step)).one()
        assert dead.status == "running"  # the process is gone, nobody finished it
    assert tile_rows(ctx, dead.id) == (0, 0)  # its open shard transaction left nothing
    # the lock died with the process: a re-run starts at once, closes the dead run and
    # completes with one row per tile
    result = run_audit(ctx, SAMPLE_AOI, step)
    with Session(ctx.engine) as s:
        dead = s.get(Run, dead.id)
        assert dead.status == "failed" and dead.error.startswith("interrupted")
        assert repo.get_run(s, result.run_id).status == "succeeded"
    rows, distinct = tile_rows(ctx, result.run_id)
    assert rows == distinct > 0


def test_unwritable_artifact_store_fails_the_run_with_nothing_half_written(
    small_town,  # noqa: ANN001
) -> None:
    ctx = small_town.ctx
    step = small_town.new_step("2032-03-01", imagery=haze(0.04))
    fetched = fetch_imagery(ctx, small_town.config, step)
    with Session(ctx.engine) as s:
        shards = imagery_snapshot(s, fetched.snapshot_id).shards
        model = repo.production_model(s, small_town.config.model_name)
    shard_id, ref = next(iter(shards.items()))
    key = prediction_key(SAMPLE_AOI, model.id, ref.content_hash, shard_id)
    blocker = Path(ctx.store.path(key)).parent
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the predictions folder should go")
    before = sorted(p for p in Path(ctx.settings.resolved_artifact_root).rglob("*") if p.is_file())
    try:
        with pytest.raises(StoreError, match="not writable"):
            run_audit(ctx, SAMPLE_AOI, step)
        with Session(ctx.engine) as s:
            run = s.scalars(select(Run).where(Run.step == step)).one()
            assert run.status == "failed" and "not writable" in run.error
            assert (
                s.scalar(
                    select(func.count()).select_from(TileScore).where(TileScore.run_id == run.id)
                )
                == 0
            )
        after = sorted(
            p for p in Path(ctx.settings.resolved_artifact_root).rglob("*") if p.is_file()
        )
        assert not [p for p in after if p.name.startswith(".tmp-")]  # no half-written file
        # only whole artifacts were added (labels, validation pages), none of them partial
        assert set(before) <= set(after)
    finally:
        blocker.unlink()
    assert run_audit(ctx, SAMPLE_AOI, step).summary.n_findings >= 0


@pytest.mark.postgres
@pytest.mark.parametrize("small_town", ["postgres"], indirect=True)
def test_a_database_restart_mid_audit_is_survived_and_the_lock_taken_back(
    small_town,  # noqa: ANN001
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = small_town.ctx
    step = small_town.new_step("2032-04-01", imagery=haze(0.05))
    admin = create_engine(ctx.engine.url)
    restarted: list[int] = []

    def restart(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ARG001
        # at the first tile row, every session of the database ends (the audit lock's
        # too), as when the server restarts: SQLSTATE 57P01 "terminating connection"
        if restarted or not statement.lstrip().upper().startswith("INSERT INTO TILE_SCORE"):
            return
        with admin.connect() as other:
            restarted.extend(
                other.scalars(
                    text(
                        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            )

    event.listen(ctx.engine, "before_cursor_execute", restart)
    try:
        with caplog.at_level("WARNING"):
            result = run_audit(ctx, SAMPLE_AOI, step)
    finally:
        event.remove(ctx.engine, "before_cursor_execute", restart)
        admin.dispose()
    assert len(restarted) >= 2  # the shard's connection and the lock's at least
    assert "database connection lost; stage runs again" in caplog.text
    assert "audit lock re-acquired" in caplog.text
    with Session(ctx.engine) as s:
        assert repo.get_run(s, result.run_id).status == "succeeded"
    rows, distinct = tile_rows(ctx, result.run_id)
    assert rows == distinct > 0


HOLD_WRITE_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("CREATE TABLE IF NOT EXISTS other_writer (note TEXT)")
db.execute("INSERT INTO other_writer VALUES ('held')")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


@pytest.mark.parametrize("small_town", ["sqlite"], indirect=True)
def test_sqlite_audit_waits_for_another_writer_instead_of_failing(small_town) -> None:  # noqa: ANN001
    ctx = small_town.ctx
    step = small_town.new_step("2032-05-01", imagery=haze(0.06))
    writer = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE_LOCK, ctx.engine.url.database, "4"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "held"
        # the audit's writes wait for the other writer (busy timeout 30 s), then go on
        result = run_audit(ctx, SAMPLE_AOI, step)
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    with Session(ctx.engine) as s:
        assert repo.get_run(s, result.run_id).status == "succeeded"


def test_a_scheduler_run_holds_its_step_against_a_cli_audit_until_it_is_abandoned(
    small_town,  # noqa: ANN001
) -> None:
    ctx = small_town.ctx
    step = small_town.new_step("2032-06-01", imagery=haze(0.07))
    request = AuditRequest(SAMPLE_AOI, step, trigger="airflow", external_id="sched-live")
    xcom = {n: run_stage(ctx, n, request, {}) for n in ("fetch_imagery", "fetch_opendata")}
    plan = run_stage(ctx, "plan", request, xcom)
    run_stage(ctx, "validate", request, {"plan": plan})
    # between the scheduler's tasks no process holds the lock, yet its run is alive
    with pytest.raises(AuditBusyError, match=r"by airflow run 'sched-live' \(GeoAudit run \d+"):
        run_audit(ctx, SAMPLE_AOI, step)
    # the scheduler's run goes on untouched and succeeds
    for sid in plan.shard_ids:
        run_stage(ctx, "shard", request, {"plan": plan}, shard_id=sid)
    run_stage(ctx, "changes", request, {"plan": plan})
    run_stage(ctx, "publish", request, {"plan": plan})
    with Session(ctx.engine) as s:
        assert repo.get_run(s, plan.run_id).status == "succeeded"

    # a scheduler that stopped after planning: the next audit, once no task of that run
    # was seen for abandoned_run_s, closes it and runs; the dead run's late tasks write
    # nothing
    dead = AuditRequest(SAMPLE_AOI, step, trigger="airflow", external_id="sched-dead", force=True)
    xcom = {n: run_stage(ctx, n, dead, {}) for n in ("fetch_imagery", "fetch_opendata")}
    dead_plan = run_stage(ctx, "plan", dead, xcom)
    settings = ctx.settings.model_copy(update={"abandoned_run_s": 0.05})
    time.sleep(0.1)
    result = run_audit(dataclasses.replace(ctx, settings=settings), SAMPLE_AOI, step, force=True)
    with Session(ctx.engine) as s:
        closed = repo.get_run(s, dead_plan.run_id)
        assert closed.status == "failed"
        assert closed.error.startswith("interrupted: no task of it was seen")
        assert repo.get_run(s, result.run_id).status == "succeeded"
    with pytest.raises(RunStateError, match=rf"run {dead_plan.run_id} is failed"):
        run_stage(ctx, "shard", dead, {"plan": dead_plan}, shard_id=dead_plan.shard_ids[0])
    assert tile_rows(ctx, dead_plan.run_id) == (0, 0)
