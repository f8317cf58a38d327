"""One audit per AOI and time step at a time: a real second process holds the lock
(PostgreSQL advisory lock or SQLite file lock); others refuse, wait, or run in parallel
on another AOI or step; a killed holder frees the lock."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from pipeline.db.engine import make_engine
from pipeline.errors import LockLostError
from pipeline.locks import _PG_LOCK_CLASS, AuditBusyError, audit_lock, lock_key

STEP = "2026-06-01"
HOLDER = Path(__file__).with_name("lock_holder.py")


@pytest.fixture
def holder(db_url, tmp_path):
    """``holder(aoi, step)``: a process that holds the audit lock until stopped."""
    procs: list[subprocess.Popen] = []

    def _hold(aoi: str, step: str = STEP, mode: str = "exclusive") -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, str(HOLDER), db_url, aoi, step, str(tmp_path), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield _hold
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def lock_engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def test_a_second_audit_of_the_same_aoi_and_step_is_refused(holder, lock_engine, tmp_path):
    holder("town")
    with (
        pytest.raises(AuditBusyError, match=r"AOI 'town' step 2026-06-01 is being audited"),
        audit_lock(lock_engine, "town", STEP, home=tmp_path),
    ):
        pass


def test_other_aois_and_steps_run_in_parallel(holder, lock_engine, tmp_path):
    holder("town")
    with (
        audit_lock(lock_engine, "village", STEP, home=tmp_path),
        audit_lock(lock_engine, "town", "2026-07-01", home=tmp_path),
    ):
        pass


def test_a_waiting_audit_starts_when_the_holder_finishes(holder, lock_engine, tmp_path):
    proc = holder("town")
    proc.stdin.write("\n")  # the holder finishes one second from now
    proc.stdin.flush()
    t0 = time.monotonic()
    with audit_lock(lock_engine, "town", STEP, wait_s=30, home=tmp_path):
        waited = time.monotonic() - t0
        assert proc.stdout.readline().strip() == "released"
    assert 0.5 < waited < 30


def test_waiting_too_long_names_the_wait(holder, lock_engine, tmp_path):
    holder("town")
    t0 = time.monotonic()
    with (
        pytest.raises(AuditBusyError, match="after waiting 1 s"),
        audit_lock(lock_engine, "town", STEP, wait_s=1, home=tmp_path),
    ):
        pass
    assert time.monotonic() - t0 >= 1


def test_a_killed_holder_frees_the_lock(holder, lock_engine, tmp_path):
    proc = holder("town")
    proc.kill()
    proc.wait(timeout=10)
    # PostgreSQL ends the dead session's locks, the OS its file locks; allow a moment
    with audit_lock(lock_engine, "town", STEP, wait_s=10, home=tmp_path):
        pass


def test_shared_holders_run_side_by_side_and_keep_an_exclusive_one_out(
    holder, lock_engine, tmp_path
):
    # a scheduler's tasks of one run (shards on two workers) hold the lock shared
    holder("town", mode="shared")
    with audit_lock(lock_engine, "town", STEP, home=tmp_path, shared=True):
        pass
    # a whole audit (or another run's planning) needs it alone
    with (
        pytest.raises(AuditBusyError, match="is being audited by another process"),
        audit_lock(lock_engine, "town", STEP, home=tmp_path),
    ):
        pass


def test_an_exclusive_holder_keeps_shared_ones_out(holder, lock_engine, tmp_path):
    holder("town")
    with (
        pytest.raises(AuditBusyError, match="is being audited by another process"),
        audit_lock(lock_engine, "town", STEP, home=tmp_path, shared=True),
    ):
        pass


def test_lock_keys_are_stable_and_distinct():
    assert lock_key("town", STEP) == lock_key("town", STEP)
    assert lock_key("town", STEP) != lock_key("town", "2026-07-01")
    assert lock_key("town", STEP) != lock_key("village", STEP)
    assert -(2**31) <= lock_key("town", STEP) < 2**31


def lock_holders(admin, aoi: str, step: str) -> list[int]:  # noqa: ANN001
    """Server pids holding the audit lock of ``(aoi, step)`` (two-key advisory lock)."""
    with admin.connect() as conn:
        return list(
            conn.scalars(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND objsubid = 2 AND classid = :cls AND objid = :key"
                ),
                {"cls": _PG_LOCK_CLASS, "key": lock_key(aoi, step) % 2**32},
            )
        )


def terminate(admin, pids: list[int]) -> None:  # noqa: ANN001
    """What a server restart does to these sessions (SQLSTATE 57P01, admin shutdown)."""
    with admin.connect() as conn:
        for pid in pids:
            conn.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})


@pytest.fixture
def pg_admin(pg_url):
    eng = make_engine(pg_url)
    yield eng
    eng.dispose()


@pytest.mark.postgres
def test_a_lock_lost_with_its_connection_is_taken_back_before_the_next_write(
    pg_url, pg_admin, caplog
):
    engine = make_engine(pg_url)
    with audit_lock(engine, "town", STEP) as lock:
        (first,) = lock_holders(pg_admin, "town", STEP)
        terminate(pg_admin, [first])
        assert lock_holders(pg_admin, "town", STEP) == []  # the server dropped it
        with caplog.at_level(logging.WARNING, logger="pipeline.locks"):
            lock.verify()
        (second,) = lock_holders(pg_admin, "town", STEP)
        assert second != first
        assert "audit lock re-acquired" in caplog.text
        lock.verify()  # held: nothing to do
        assert lock_holders(pg_admin, "town", STEP) == [second]
    assert lock_holders(pg_admin, "town", STEP) == []
    engine.dispose()


@pytest.mark.postgres
def test_a_lock_taken_by_another_process_meanwhile_stops_the_run(pg_url, pg_admin, tmp_path):
    engine = make_engine(pg_url)
    with audit_lock(engine, "town", STEP) as lock:
        terminate(pg_admin, lock_holders(pg_admin, "town", STEP))
        other = subprocess.Popen(
            [sys.executable, str(HOLDER), pg_url, "town", STEP, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert other.stdout.readline().strip() == "held"
            with pytest.raises(LockLostError, match=r"AOI 'town' step 2026-06-01: the audit lock"):
                lock.verify()
            assert lock_holders(pg_admin, "town", STEP) != []  # the other still holds it
        finally:
            other.kill()
            other.wait(timeout=10)
    engine.dispose()


@pytest.mark.postgres
def test_releasing_a_lock_whose_connection_died_is_quiet(pg_url, pg_admin):
    engine = make_engine(pg_url)
    with audit_lock(engine, "town", STEP):
        terminate(pg_admin, lock_holders(pg_admin, "town", STEP))
    # and the lock is free for the next audit
    with audit_lock(engine, "town", STEP):
        assert len(lock_holders(pg_admin, "town", STEP)) == 1
    engine.dispose()
