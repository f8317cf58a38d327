"""One audit per AOI and time step at a time: a real second process holds the lock
(PostgreSQL advisory lock or SQLite file lock); others refuse, wait, or run in parallel
on another AOI or step; a killed holder frees the lock."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.db.engine import make_engine
from pipeline.locks import AuditBusyError, audit_lock, lock_key

STEP = "2026-06-01"
HOLDER = Path(__file__).with_name("lock_holder.py")


@pytest.fixture
def holder(db_url, tmp_path):
    """``holder(aoi, step)``: a process that holds the audit lock until stopped."""
    procs: list[subprocess.Popen] = []

    def _hold(aoi: str, step: str = STEP) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, str(HOLDER), db_url, aoi, step, str(tmp_path)],
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


def test_lock_keys_are_stable_and_distinct():
    assert lock_key("town", STEP) == lock_key("town", STEP)
    assert lock_key("town", STEP) != lock_key("town", "2026-07-01")
    assert lock_key("town", STEP) != lock_key("village", STEP)
    assert -(2**31) <= lock_key("town", STEP) < 2**31
