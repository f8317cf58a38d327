"""Shared pieces of the CLI: context creation, error handling, option types."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.errors import GeoAuditError
from pipeline.redact import redact

if TYPE_CHECKING:
    from pipeline.context import Context

# Commands import what they use when they run: ``--help`` and the light commands start
# without SQLAlchemy, the data frames or the model (``tests/cli_process.py`` checks it).

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])

AoiName = Annotated[str, typer.Argument(help="Name of a registered AOI (see `geoaudit aoi list`).")]
StepOption = Annotated[str, typer.Option("--step", "-s", help="Time step, an ISO date YYYY-MM-DD.")]
AuditStepOption = Annotated[
    str | None,
    typer.Option(
        "--step",
        "-s",
        help="Audit date YYYY-MM-DD (pins it). Default: today, each source at its newest "
        "snapshot, and 'no new data' when nothing changed since the last audit.",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def guarded(func: F) -> F:
    """Turn engine errors and database faults into one redacted line and their exit code
    (:class:`~pipeline.errors.ExitCode`: 3 bad input, 4 runtime fault); anything else is
    a bug and keeps its traceback (exit 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GeoAuditError as exc:
            fail(exc)
        except Exception as exc:
            if not _is_database_error(exc):
                raise
            from pipeline.db.faults import describe, is_database_fault

            if not is_database_fault(exc):
                raise
            fail(describe(exc, _database_url()))

    return wrapper  # type: ignore[return-value]


def fail(exc: GeoAuditError) -> NoReturn:
    """Print ``exc`` as one redacted line (never wrapped) and exit with its code."""
    err_console.print(f"[bold red]error:[/] {escape(redact(str(exc)))}", soft_wrap=True)
    raise typer.Exit(code=int(exc.exit_code)) from exc


def _is_database_error(exc: Exception) -> bool:
    """A SQLAlchemy connection-level error (DBAPI or disconnection). When SQLAlchemy was
    never imported, no database was touched and nothing can be one."""
    sa_exc = sys.modules.get("sqlalchemy.exc")
    return sa_exc is not None and isinstance(exc, (sa_exc.DBAPIError, sa_exc.DisconnectionError))


def _database_url() -> str | None:
    from pipeline.settings import load_settings

    try:
        return load_settings().resolved_database_url
    except Exception:  # settings themselves broken: name no database
        return None


def context(progress: bool = True) -> Context:
    """Settings → logging → database + artifact store, ready for a command. Progress goes
    to stderr: a bar on a terminal, a line every few seconds in a log or a pipe
    (:mod:`pipeline.progress`)."""
    from pipeline.context import open_context
    from pipeline.logs import configure_logging
    from pipeline.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return open_context(settings, progress=progress)


def print_json(data: Any) -> None:
    """Print JSON to stdout (numbers from numpy made plain)."""
    typer.echo(
        json.dumps(data, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    )
