"""Time steps: an audit is of an AOI at a time step, an ISO date ``YYYY-MM-DD``."""

from __future__ import annotations

import datetime as dt
import re

from pipeline.errors import ConfigError

#: JSON-schema / regex pattern of a time step (Airflow params use the same text).
STEP_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
_STEP = re.compile(STEP_PATTERN)


def check_step(step: str) -> str:
    """A time step is an ISO date ``YYYY-MM-DD``; raise :class:`ConfigError` otherwise."""
    if not isinstance(step, str) or not _STEP.match(step):
        raise ConfigError(f"time step must be an ISO date YYYY-MM-DD, got {step!r}")
    try:
        dt.date.fromisoformat(step)
    except ValueError as exc:
        raise ConfigError(f"time step {step!r} is not a calendar date") from exc
    return step


def step_of(when: dt.date | dt.datetime) -> str:
    """The time step of a date or timestamp (its calendar date)."""
    return when.date().isoformat() if isinstance(when, dt.datetime) else when.isoformat()


#: A source's date rule (``dates:`` in the AOI file): ``latest``, the newest snapshot
#: the source has on or before the audit date; ``audit``, exactly the audit date; or a
#: fixed ISO date (a reference kept while the other source moves on).
DATE_RULES = ("latest", "audit")


def check_date_rule(rule: str) -> str:
    """``latest``, ``audit`` or an ISO date; :class:`ConfigError` otherwise."""
    if rule in DATE_RULES:
        return rule
    try:
        return check_step(rule)
    except ConfigError:
        raise ConfigError(
            f"date rule must be 'latest', 'audit' or an ISO date YYYY-MM-DD, got {rule!r}"
        ) from None
