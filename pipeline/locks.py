"""One audit of an AOI and time step at a time, across processes and machines.

PostgreSQL: a session-level advisory lock on a connection held for the audit (the
server drops it when the process dies). SQLite: an OS file lock next to the database
file (``flock``; the OS drops it when the process dies). Different AOIs or steps
lock different keys and run in parallel.

A whole audit in one process, and a scheduler's planning task, hold the lock
exclusively; a scheduler's later tasks of the same run (validate, the shards, changes,
publish) hold it shared, so they run side by side while no other audit can start.

The lock yields an :class:`AuditLock`; a runner calls :meth:`AuditLock.verify` before
each write. On PostgreSQL a restarted server or a dropped connection silently frees
the lock: ``verify`` notices, takes it back on a new connection, or raises
:class:`~pipeline.errors.LockLostError` when another process took it meanwhile.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from pipeline.db.faults import is_disconnect
from pipeline.errors import ExitCode, GeoAuditError, LockLostError

log = logging.getLogger(__name__)

_PG_LOCK_CLASS = 0x6761_7564  # "gaud": GeoAudit audit locks, apart from other advisory locks
POLL_S = 0.25


class AuditBusyError(GeoAuditError, RuntimeError):
    """Another process is auditing the same AOI and time step."""

    exit_code = ExitCode.FAULT


class AuditLock:
    """A held audit lock (the OS file lock of SQLite cannot be lost while the process
    lives: :meth:`verify` has nothing to check)."""

    def verify(self) -> None:
        """Make sure the lock is still held before a write; raise
        :class:`~pipeline.errors.LockLostError` when it is not and cannot be taken back."""


def lock_key(aoi: str, step: str) -> int:
    """A stable signed 32-bit key for ``(aoi, step)`` (the advisory lock's object id)."""
    digest = hashlib.blake2b(f"{aoi}\0{step}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def audit_lock(
    engine: Engine,
    aoi: str,
    step: str,
    *,
    wait_s: float = 0.0,
    home: Path | None = None,
    shared: bool = False,
) -> Iterator[AuditLock]:
    """Hold the audit lock of ``(aoi, step)`` for the block (it yields the lock, whose
    ``verify`` a runner calls before each write).

    When another process holds it (exclusively, or at all when this one asks for it
    exclusively), wait up to ``wait_s`` seconds, then raise :class:`AuditBusyError`
    naming the AOI and the step. ``home`` is where SQLite
    lock files go when the database is in memory.
    """
    if engine.dialect.name == "postgresql":
        with _pg_lock(engine, aoi, step, wait_s, shared) as lock:
            yield lock
    else:
        with _file_lock(engine, aoi, step, wait_s, home, shared) as lock:
            yield lock


def _busy(aoi: str, step: str, wait_s: float) -> AuditBusyError:
    waited = f" after waiting {wait_s:g} s" if wait_s > 0 else ""
    return AuditBusyError(
        f"AOI {aoi!r} step {step} is being audited by another process{waited}; "
        "let it finish, or retry with a wait (`geoaudit audit --wait SECONDS`)"
    )


class _PgAuditLock(AuditLock):
    """A session-level advisory lock on one AUTOCOMMIT connection held for the audit."""

    _TRY = {
        False: text("SELECT pg_try_advisory_lock(:cls, :key)"),
        True: text("SELECT pg_try_advisory_lock_shared(:cls, :key)"),
    }
    _UNLOCK = {
        False: text("SELECT pg_advisory_unlock(:cls, :key)"),
        True: text("SELECT pg_advisory_unlock_shared(:cls, :key)"),
    }

    def __init__(self, engine: Engine, aoi: str, step: str, shared: bool = False) -> None:
        self.engine, self.aoi, self.step, self.shared = engine, aoi, step, shared
        self.params = {"cls": _PG_LOCK_CLASS, "key": lock_key(aoi, step)}
        self.conn: Connection | None = None

    def _connect(self) -> Connection:
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def acquire(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        conn = self._connect()
        try:
            while not conn.scalar(self._TRY[self.shared], self.params):
                if time.monotonic() >= deadline:
                    raise _busy(self.aoi, self.step, wait_s)
                time.sleep(POLL_S)
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def verify(self) -> None:
        assert self.conn is not None, "verify() outside the lock"
        try:
            self.conn.scalar(text("SELECT 1"))
            return
        except DBAPIError as exc:
            if not is_disconnect(exc):
                raise
        # the connection died, and the server dropped its lock with it: take it back
        self._close_quietly()
        conn = self._connect()
        if conn.scalar(self._TRY[self.shared], self.params):
            self.conn = conn
            log.warning(
                "audit lock re-acquired after its connection was lost",
                extra={"aoi": self.aoi, "step": self.step},
            )
            return
        conn.close()
        raise LockLostError(
            f"AOI {self.aoi!r} step {self.step}: the audit lock was lost with its database "
            "connection and another process holds it now; this run stopped before writing "
            "more (re-run the audit when the other one has finished)"
        )

    def release(self) -> None:
        if self.conn is None:
            return
        try:
            self.conn.execute(self._UNLOCK[self.shared], self.params)
        except DBAPIError as exc:
            # a lost connection: the server already dropped the lock with it
            if not is_disconnect(exc):
                raise
        finally:
            self._close_quietly()

    def _close_quietly(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except DBAPIError:
                self.conn.invalidate()
            self.conn = None


@contextmanager
def _pg_lock(
    engine: Engine, aoi: str, step: str, wait_s: float, shared: bool
) -> Iterator[AuditLock]:
    lock = _PgAuditLock(engine, aoi, step, shared)
    lock.acquire(wait_s)
    try:
        yield lock
    finally:
        lock.release()


@contextmanager
def _file_lock(
    engine: Engine, aoi: str, step: str, wait_s: float, home: Path | None, shared: bool
) -> Iterator[AuditLock]:
    database = engine.url.database
    if database and database != ":memory:":
        folder = Path(database).resolve().parent / "locks"
    else:
        folder = (home or Path.cwd()) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{aoi}@{step}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _busy(aoi, step, wait_s) from None
                time.sleep(POLL_S)
        try:
            yield AuditLock()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
