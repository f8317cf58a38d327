"""Shared fixtures: database URLs and migrated engines for SQLite and PostgreSQL/PostGIS.

* ``sqlite_url`` — a fresh SQLite file URL in ``tmp_path``.
* ``pg_url`` (session) — a fresh database ``geoaudit_test_<random>_<n>`` with
  PostGIS on the server of ``GEOAUDIT_TEST_PG_URL`` (default: local ``postgres``),
  dropped at the end. No server / no PostGIS: the test is skipped, or fails when
  ``GEOAUDIT_REQUIRE_PG=1`` (CI), because a silently skipped PG test is a failure.
* ``db_url`` — parametrized ``sqlite`` / ``postgres``; the PostgreSQL database is
  shared by the session and emptied after each test.
* ``engine`` — a migrated engine for ``db_url``, clean for each test.
* ``pg_engine`` — the same on PostgreSQL only.
* ``empty_engine`` — an engine on an empty, never-migrated database for
  ``db_url`` (a fresh PostGIS database on PostgreSQL), for migration tests.

* ``audited`` (session) — the sample town trained on and audited at two steps, per
  dialect, with the demo summary (the end-to-end and dashboard tests share it).

Tests must not change the schema behind ``engine``; use ``empty_engine`` for that.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL, make_url

from audited_town import (
    E2E_SIZE_M,
    E2E_TRAIN_CAP_S,
    E2E_TRAIN_STEPS,
    Audited,
    dialect_context,
)

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
_KEEP_TABLES = ("spatial_ref_sys", "alembic_version")


def _pg_unavailable(reason: str) -> None:
    reason = reason.strip().splitlines()[0] if reason.strip() else reason
    if os.environ.get("GEOAUDIT_REQUIRE_PG") == "1":
        pytest.fail(
            f"GEOAUDIT_REQUIRE_PG=1 but PostgreSQL/PostGIS is unusable: {reason}", pytrace=False
        )
    pytest.skip(f"PostgreSQL/PostGIS unavailable: {reason}")


def _pg_admin_url() -> URL:
    from pipeline.db.engine import normalize_url

    return normalize_url(os.environ.get("GEOAUDIT_TEST_PG_URL", PG_ADMIN_URL))


def _pg_admin_engine(url: URL) -> Engine:
    from pipeline.db.engine import make_engine

    return make_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh (not yet created) SQLite database file."""
    return f"sqlite:///{tmp_path / 'geoaudit.db'}"


class _PgServer:
    """The test server: a PostGIS template database, cloned into fresh test databases."""

    def __init__(self, admin_url: URL) -> None:
        self.admin_url = admin_url
        self.prefix = f"geoaudit_test_{secrets.token_hex(4)}"
        self.template = f"{self.prefix}_tpl"
        self.admin = _pg_admin_engine(admin_url)
        self._n = 0

    def _exec(self, sql: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(sql))

    def create_template(self) -> None:
        from pipeline.db.engine import make_engine

        self._exec(f'CREATE DATABASE "{self.template}"')
        eng = make_engine(
            self.admin_url.set(database=self.template), connect_args={"connect_timeout": 5}
        )
        try:
            with eng.begin() as conn:
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
        finally:
            eng.dispose()

    def create_database(self) -> URL:
        """A fresh database with PostGIS (a clone of the template)."""
        self._n += 1
        name = f"{self.prefix}_{self._n}"
        self._exec(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return self.admin_url.set(database=name)

    def drop_database(self, name: str) -> None:
        self._exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _pg_server() -> Iterator[_PgServer]:
    admin_url = _pg_admin_url()
    shown = admin_url.render_as_string(hide_password=True)
    server = _PgServer(admin_url)
    try:
        with server.admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # no server, refused, bad password: say so, skip or fail
        server.admin.dispose()
        _pg_unavailable(f"cannot connect to {shown}: {exc}")
    try:
        try:
            server.create_template()
        except Exception as exc:
            _pg_unavailable(f"cannot create a PostGIS database on {shown}: {exc}")
        yield server
    finally:
        server.drop_database(server.template)
        server.admin.dispose()


@pytest.fixture(scope="session")
def pg_url(_pg_server: _PgServer) -> Iterator[str]:
    """URL of a fresh PostGIS-enabled database, dropped when the session ends."""
    url = _pg_server.create_database()
    yield url.render_as_string(hide_password=False)
    _pg_server.drop_database(url.database)


def _truncate_pg(url: str) -> None:
    """Empty every table of the test database; schema and PostGIS tables stay.

    Model tables are emptied with DELETE, children first (far quicker than TRUNCATE
    on small tables); any other table is truncated.
    """
    from pipeline.db.engine import make_engine
    from pipeline.db.models import Base

    eng = make_engine(url)
    try:
        with eng.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            present = set(
                conn.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
            )
            for table in reversed(Base.metadata.sorted_tables):
                if table.name in present:
                    conn.execute(table.delete())
            others = present - set(Base.metadata.tables) - set(_KEEP_TABLES)
            if others:
                listed = ", ".join(f'"{t}"' for t in sorted(others))
                conn.execute(text(f"TRUNCATE {listed} CASCADE"))
    finally:
        eng.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL per dialect: a fresh SQLite file, or the session's PostGIS database
    (emptied after the test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db_url.db'}"
        return
    url = request.getfixturevalue("pg_url")
    yield url
    _truncate_pg(url)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating each time)."""
    from pipeline.db.engine import make_engine
    from pipeline.db.migrate import upgrade

    path = tmp_path_factory.mktemp("db-template") / "geoaudit.db"
    eng = make_engine(f"sqlite:///{path}")
    upgrade(eng)
    with eng.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    eng.dispose()
    return path


_MIGRATED_PG: set[str] = set()


def _migrated_pg_engine(url: str) -> Engine:
    from pipeline.db.engine import make_engine
    from pipeline.db.migrate import upgrade

    eng = make_engine(url)
    if url not in _MIGRATED_PG:
        upgrade(eng)
        _MIGRATED_PG.add(url)
    return eng


@pytest.fixture
def engine(db_url: str, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A migrated, empty database for ``db_url`` (SQLite file or PostGIS)."""
    from pipeline.db.engine import make_engine

    if make_url(db_url).get_backend_name() == "sqlite":
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), make_url(db_url).database)
        eng = make_engine(db_url)
    else:
        eng = _migrated_pg_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """A migrated, empty PostGIS database (PostgreSQL-only tests)."""
    eng = _migrated_pg_engine(pg_url)
    yield eng
    eng.dispose()
    _truncate_pg(pg_url)


@pytest.fixture
def empty_engine(db_url: str, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An engine on an empty, never-migrated database (a fresh PostGIS database on PG)."""
    from pipeline.db.engine import make_engine

    if make_url(db_url).get_backend_name() == "sqlite":
        eng = make_engine(db_url)
        yield eng
        eng.dispose()
        return
    server: _PgServer = request.getfixturevalue("_pg_server")
    url = server.create_database()
    eng = make_engine(url)
    try:
        yield eng
    finally:
        eng.dispose()
        server.drop_database(url.database)


@pytest.fixture(
    scope="session",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def audited(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Audited]:
    """Sample town → train → audit step 1 and 2 → re-audit, on SQLite or PostGIS."""
    from pipeline.sample.demo import run_demo

    ctx = dialect_context(request, tmp_path_factory, "e2e")
    result = run_demo(
        ctx, size_m=E2E_SIZE_M, train_steps=E2E_TRAIN_STEPS, train_seconds=E2E_TRAIN_CAP_S
    )
    assert result.path.exists()
    yield Audited(ctx=ctx, summary=result.summary, dialect=request.param)
    ctx.engine.dispose()
