"""Typed hand-offs between the stages of an audit run.

Each stage returns one of these frozen dataclasses; the next stages take them as
arguments. A scheduler that runs stages in separate processes (Airflow) carries them
as small JSON objects: :meth:`Handoff.to_xcom` and :meth:`Handoff.from_xcom` are that
form, and the only one. Ids, hashes, counts and seconds travel; arrays never do.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

from pipeline.errors import ConfigError

SnapshotKind = Literal["imagery", "opendata"]
ShardStatus = Literal["done", "no_imagery"]


class Handoff:
    """Base of the hand-offs: a plain-JSON form and a checked way back."""

    #: what the hand-off is, in error messages
    what: ClassVar[str] = "hand-off"

    def to_xcom(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists)."""
        return _plain(dataclasses.asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_xcom(cls, data: Any) -> Self:
        """Rebuild from :meth:`to_xcom`'s form; :class:`ConfigError` names a missing or
        malformed field."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.what}: expected a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ConfigError(f"{cls.what}: field {f.name!r} is missing in {data!r}")
                continue
            try:
                values[f.name] = _coerce(hints[f.name], data[f.name])
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"{cls.what}: field {f.name!r} = {data[f.name]!r} is not {_name(hints[f.name])}"
                ) from exc
        return cls(**values)


@dataclass(frozen=True)
class AuditRequest(Handoff):
    """What a runner is asked to audit: AOI, time step and options.

    ``step`` is the audit date; each source reads its own date by the AOI's date rules.
    ``pinned``: the step was asked for (a CLI argument, a ``step`` param); a scheduled run
    (not pinned) whose sources and model are those of the last succeeded run records
    "no new data" instead of auditing again. ``force`` audits even when nothing changed;
    ``repredict`` also ignores predictions cached by other runs; ``bbox`` (WGS84 west,
    south, east, north) limits the audit to the shards it touches; ``trigger`` and
    ``external_id`` say who started it (an Airflow run id); ``params`` are stored on
    the run as given.
    """

    what: ClassVar[str] = "audit request"

    aoi: str
    step: str
    model_version_id: int | None = None
    pinned: bool = True
    force: bool = False
    repredict: bool = False
    bbox: tuple[float, ...] | None = None
    trigger: str = "cli"
    external_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FetchedSnapshot(Handoff):
    """A stored snapshot of one source for the audit at ``step``: its row, content hash,
    the source's own date (``source_step``) and whether an identical earlier one was
    reused (the source's fingerprint was unchanged)."""

    what: ClassVar[str] = "fetched snapshot"

    kind: SnapshotKind
    snapshot_id: int
    content_hash: str
    step: str
    source_step: str | None = None
    reused: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class AuditPlan(Handoff):
    """A started run and its shards. ``reused``: there is nothing to do, because an
    earlier succeeded run had exactly the same inputs (``run_id`` is that run) or, with
    ``no_new_data``, because no source changed since the last succeeded run (``run_id``
    is the run recorded as ``no_new_data``)."""

    what: ClassVar[str] = "audit plan"

    aoi: str
    step: str
    run_id: int
    shard_ids: tuple[str, ...] = ()
    reused: bool = False
    no_new_data: bool = False


@dataclass(frozen=True)
class ValidationOutcome(Handoff):
    """The input suites' verdict on a planned run (no critical failure: it goes on)."""

    what: ClassVar[str] = "validation outcome"

    run_id: int
    reused: bool = False
    success: bool = True
    n_warnings: int = 0
    warnings: tuple[str, ...] = ()
    data_docs: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class ShardOutcome(Handoff):
    """What the shard stage did with one shard (also stored as the shard's stats)."""

    what: ClassVar[str] = "shard outcome"

    shard_id: str
    status: ShardStatus
    tiles: int = 0
    buildings: int = 0
    cache_hit: bool = False
    rasterize_s: float = 0.0
    predict_s: float = 0.0
    score_s: float = 0.0

    @property
    def predicted(self) -> bool:
        """The model ran on this shard for this run (not a prediction cached earlier)."""
        return self.status == "done" and not self.cache_hit


@dataclass(frozen=True)
class ChangesOutcome(Handoff):
    """How many changes against the previous step the run has stored."""

    what: ClassVar[str] = "changes outcome"

    run_id: int
    n_changes: int
    reused: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class RunSummary(Handoff):
    """A published run: its AOI aggregates, result counts and stage timings.
    ``no_new_data``: this audit found nothing new and these are the results of the last
    succeeded run, which stay current."""

    what: ClassVar[str] = "run summary"

    run_id: int
    aoi: str
    step: str
    aggregates: dict[str, Any]
    n_findings: int
    n_changes: int
    n_hotspots: int
    buildings_uri: str
    stage_seconds: dict[str, Any]
    reused: bool = False
    no_new_data: bool = False


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)


def _coerce(hint: Any, value: Any) -> Any:
    """``value`` as the annotated type: None for optionals, tuples from lists, numbers
    from numbers; strings and literals as given."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"one of {args}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise TypeError("a list")
        return tuple(_coerce(args[0], v) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise TypeError("a mapping")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError("a boolean")
        return value
    if hint is int:
        if isinstance(value, bool):
            raise TypeError("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise ValueError("an integer")
    if hint is float:
        if isinstance(value, bool):
            raise TypeError("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError("a string")
        return value
    return value
