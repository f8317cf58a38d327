"""Errors raised by the database layer (all under :class:`~pipeline.errors.GeoAuditError`).

Lookups that find nothing raise :class:`pipeline.errors.NotFoundError`.
"""

from __future__ import annotations

from pipeline.errors import GeoAuditError


class RunStateError(GeoAuditError, RuntimeError):
    """A run cannot move to the requested state (e.g. success with shards missing)."""


class RowError(GeoAuditError, ValueError):
    """Rows handed to a data function break a rule: unknown column, bad geometry, bad value."""
