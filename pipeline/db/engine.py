"""Engines and sessions for SQLite (embedded default) and PostgreSQL/PostGIS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from pipeline.db.geopackage import register_functions
from pipeline.db.types import to_jsonable

SQLITE_BUSY_TIMEOUT_MS = 30_000
_SQLITE_BEGIN = "geoaudit_sqlite_begin"


def _json_dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), allow_nan=False)


def normalize_url(url: str | URL) -> URL:
    """Parse ``url``; a bare ``postgresql://`` (or ``postgres://``) URL uses psycopg 3."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Engine for ``url``, tuned per dialect.

    SQLite: GeoPackage functions, foreign keys on, WAL journal, busy timeout 30 s, and explicit
    ``BEGIN`` so transactions and savepoints behave as on PostgreSQL; write
    transactions (:func:`write_session`) begin ``IMMEDIATE``.
    PostgreSQL: ``pool_pre_ping``, GeoAlchemy loaded. ``kwargs`` go to
    :func:`sqlalchemy.create_engine`.
    """
    u = normalize_url(url)
    kwargs.setdefault("json_serializer", _json_dumps)
    if u.get_backend_name() == "sqlite":
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        engine = create_engine(u, connect_args=connect_args, **kwargs)
        _tune_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if u.get_backend_name() == "postgresql":
        # PostGIS: GeoAlchemy's types and DDL hooks (the embedded SQLite store needs neither)
        import geoalchemy2  # noqa: F401
    return create_engine(u, **kwargs)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # let SQLAlchemy, not pysqlite, decide where transactions begin (see "begin")
        dbapi_conn.isolation_level = None
        # the GeoPackage spatial-index triggers call these on every geometry write
        register_functions(dbapi_conn)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # a write transaction takes the write lock up front: it then waits for the busy
        # timeout when another process writes. A deferred one that reads first cannot
        # wait: SQLite refuses its upgrade to a writer at once ("database is locked").
        immediate = conn.get_execution_options().get(_SQLITE_BEGIN) == "IMMEDIATE"
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def writing(engine: Engine) -> Engine:
    """``engine`` for write transactions: on SQLite they begin ``IMMEDIATE`` (the write
    lock taken up front, waiting up to the busy timeout); elsewhere ``engine`` as is."""
    if engine.dialect.name != "sqlite":
        return engine
    return engine.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})


@contextmanager
def write_session(engine: Engine, **kwargs: Any) -> Iterator[Session]:
    """One write transaction: commit when the block ends, roll back if it raises (on
    SQLite the write lock is taken when it begins, see :func:`writing`)."""
    with Session(writing(engine), **kwargs) as session, session.begin():
        yield session


@contextmanager
def session_scope(engine: Engine, **kwargs: Any) -> Iterator[Session]:
    """One transaction: commit when the block ends, roll back if it raises.

    Same as ``with Session(engine) as s, s.begin():`` but objects stay readable
    after the commit (``expire_on_commit=False``).
    """
    kwargs.setdefault("expire_on_commit", False)
    with write_session(engine, **kwargs) as session:
        yield session
