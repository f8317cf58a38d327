"""Structured, quiet-by-default logging (structlog rendering stdlib records)."""

from __future__ import annotations

import logging
import sys

import structlog

from pipeline.redact import redact_processor


def configure_logging(level: str = "WARNING", fmt: str = "console") -> None:
    """Route stdlib logging through structlog: ``key=value`` lines or JSON on stderr."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_processor,  # secrets never reach the log, tracebacks included
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not getattr(h, "_geoaudit", False)]
    handler._geoaudit = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("rasterio", "fiona", "pyogrio", "alembic", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
