"""One audit of an AOI and time step at a time, across processes and machines.

PostgreSQL: a session-level advisory lock on a connection held for the audit (the
server drops it when the process dies). SQLite: an OS file lock next to the database
file (``filelock``; the OS drops it when the process dies). Different AOIs or steps
lock different keys and run in parallel.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import Engine, text

from pipeline.errors import GeoAuditError

_PG_LOCK_CLASS = 0x6761_7564  # "gaud": GeoAudit audit locks, apart from other advisory locks
POLL_S = 0.25


class AuditBusyError(GeoAuditError, RuntimeError):
    """Another process is auditing the same AOI and time step."""


def lock_key(aoi: str, step: str) -> int:
    """A stable signed 32-bit key for ``(aoi, step)`` (the advisory lock's object id)."""
    digest = hashlib.blake2b(f"{aoi}\0{step}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def audit_lock(
    engine: Engine, aoi: str, step: str, *, wait_s: float = 0.0, home: Path | None = None
) -> Iterator[None]:
    """Hold the audit lock of ``(aoi, step)`` for the block.

    When another process holds it, wait up to ``wait_s`` seconds, then raise
    :class:`AuditBusyError` naming the AOI and the step. ``home`` is where SQLite
    lock files go when the database is in memory.
    """
    if engine.dialect.name == "postgresql":
        with _pg_lock(engine, aoi, step, wait_s):
            yield
    else:
        with _file_lock(engine, aoi, step, wait_s, home):
            yield


def _busy(aoi: str, step: str, wait_s: float) -> AuditBusyError:
    waited = f" after waiting {wait_s:g} s" if wait_s > 0 else ""
    return AuditBusyError(
        f"AOI {aoi!r} step {step} is being audited by another process{waited}; "
        "let it finish, or retry with a wait (`geoaudit audit --wait SECONDS`)"
    )


@contextmanager
def _pg_lock(engine: Engine, aoi: str, step: str, wait_s: float) -> Iterator[None]:
    key = lock_key(aoi, step)
    deadline = time.monotonic() + wait_s
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        try_lock = text("SELECT pg_try_advisory_lock(:cls, :key)")
        while not conn.scalar(try_lock, {"cls": _PG_LOCK_CLASS, "key": key}):
            if time.monotonic() >= deadline:
                raise _busy(aoi, step, wait_s)
            time.sleep(POLL_S)
        try:
            yield
        finally:
            conn.execute(
                text("SELECT pg_advisory_unlock(:cls, :key)"), {"cls": _PG_LOCK_CLASS, "key": key}
            )


@contextmanager
def _file_lock(
    engine: Engine, aoi: str, step: str, wait_s: float, home: Path | None
) -> Iterator[None]:
    database = engine.url.database
    if database and database != ":memory:":
        folder = Path(database).resolve().parent / "locks"
    else:
        folder = (home or Path.cwd()) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / f"{aoi}@{step}.lock", timeout=wait_s)
    try:
        lock.acquire(poll_interval=POLL_S)
    except Timeout as exc:
        raise _busy(aoi, step, wait_s) from exc
    try:
        yield
    finally:
        lock.release()
