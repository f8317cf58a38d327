"""Throw-away PostgreSQL databases for the benchmarks (``GEOAUDIT_TEST_PG_URL``'s server)."""

from __future__ import annotations

import os
import uuid

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG = os.environ.get("GEOAUDIT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def new_database(postgis: bool = True) -> str:
    """A fresh database ``geoaudit_bench_<random>`` (with PostGIS); its URL."""
    admin = make_url(PG)
    name = f"geoaudit_bench_{uuid.uuid4().hex[:8]}"
    _run(admin, f'CREATE DATABASE "{name}"')
    url = admin.set(database=name)
    if postgis:
        _run(url, "CREATE EXTENSION IF NOT EXISTS postgis")
    return url.render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop a database made by :func:`new_database`."""
    _run(make_url(PG), f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def _run(url, sql: str) -> None:  # noqa: ANN001
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()
