"""Alembic environment for GeoAudit, configured from Python (no alembic.ini).

Normally run through :func:`pipeline.db.migrate.upgrade`, which hands over an
open connection in ``config.attributes["connection"]``. For ad-hoc use of the
``alembic`` command, pass the database with ``-x url=...``.
"""

from __future__ import annotations

from alembic import context

from pipeline.db.engine import make_engine
from pipeline.db.migrate import context_options

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, **context_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("no database: pass -x url=<sqlalchemy url> or use pipeline.db.migrate")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


def run_migrations_offline() -> None:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("offline mode needs -x url=<sqlalchemy url> to pick the dialect")
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    context.configure(url=url, literal_binds=True, **context_options(dialect))
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
