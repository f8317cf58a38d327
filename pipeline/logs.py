"""Structured, quiet-by-default logging (structlog rendering stdlib records)."""

from __future__ import annotations

import logging
import sys
from typing import Any


class _StructlogFormatter(logging.Formatter):
    """structlog's ``ProcessorFormatter`` built when the first record is formatted: a
    command that logs nothing (the default level is WARNING) never imports structlog."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self._fmt_name = fmt
        self._inner: logging.Formatter | None = None

    def format(self, record: logging.LogRecord) -> str:
        if self._inner is None:
            self._inner = _processor_formatter(self._fmt_name)
        return self._inner.format(record)


def _processor_formatter(fmt: str) -> logging.Formatter:
    """``key=value`` lines (``console``) or JSON lines, secrets redacted."""
    import structlog

    from pipeline.redact import redact_processor

    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_processor,  # secrets never reach the log, tracebacks included
            renderer,
        ],
    )


def configure_logging(level: str = "WARNING", fmt: str = "console") -> None:
    """Route stdlib logging through structlog: ``key=value`` lines or JSON on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StructlogFormatter(fmt))
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not getattr(h, "_geoaudit", False)]
    handler._geoaudit = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("rasterio", "fiona", "pyogrio", "alembic", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
