"""Shared pieces of the CLI: context creation, error handling, option types."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.context import Context, open_context
from pipeline.errors import GeoAuditError
from pipeline.logs import configure_logging
from pipeline.redact import redact
from pipeline.settings import load_settings

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
    """Turn engine errors into a one-line message and exit code 2 (1 for other failures)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GeoAuditError as exc:
            err_console.print(f"[bold red]error:[/] {escape(redact(str(exc)))}")
            raise typer.Exit(code=2) from exc

    return wrapper  # type: ignore[return-value]


def context(progress: bool = True) -> Context:
    """Settings → logging → database + artifact store, ready for a command."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return open_context(settings, progress=progress)


def print_json(data: Any) -> None:
    """Print JSON to stdout (numbers from numpy made plain)."""
    typer.echo(
        json.dumps(data, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    )
