"""Database faults told apart from bugs: which driver errors are transient (the server
went away, restarted, refused a connection, or SQLite stayed locked), and the one-line
:class:`~pipeline.errors.DatabaseFaultError` a user sees for them."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from pipeline.db.engine import SQLITE_BUSY_TIMEOUT_MS
from pipeline.errors import DatabaseFaultError
from pipeline.redact import redact

#: PostgreSQL SQLSTATEs of a server that shut down or a connection that failed
DISCONNECT_SQLSTATES = frozenset(
    {"57P01", "57P02", "57P03", "08000", "08001", "08003", "08004", "08006"}
)


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection or the server was lost (worth a retry on a
    new connection), as opposed to a statement the database refused."""
    if isinstance(exc, DisconnectionError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated or _sqlstate(exc) in DISCONNECT_SQLSTATES:
        return True
    text = str(exc.orig).lower()
    return isinstance(exc, OperationalError | InterfaceError) and (
        "connection" in text or "server closed" in text or "terminating" in text
    )


def is_locked(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "database is locked" (another writer held on)."""
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig).lower()


def is_database_fault(exc: BaseException) -> bool:
    """A fault of the database rather than of the statement or of GeoAudit (a lost
    connection, a lock held too long, any other operational error)."""
    return isinstance(exc, OperationalError) or is_disconnect(exc)


def describe(exc: DBAPIError | DisconnectionError, url: str | URL | None) -> DatabaseFaultError:
    """The one-line error for a database fault: which database (password masked), the
    first line of what the driver said, and what to do."""
    where = "the database"
    if url is not None:
        u = make_url(url)
        where = f"database {u.render_as_string(hide_password=True)}"
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    first = lines[0] if lines else type(orig).__name__
    if is_locked(exc):
        hint = (
            f"another process held a write lock for more than {SQLITE_BUSY_TIMEOUT_MS // 1000} s;"
            " retry when it has finished"
        )
    elif is_disconnect(exc):
        hint = "is the server running and reachable? (GEOAUDIT_DATABASE_URL); retry when it is"
    else:
        hint = "retry when the database is healthy"
    return DatabaseFaultError(redact(f"{where}: {first}; {hint}"))
