"""Stored snapshots: the one place that writes (:func:`imagery_meta`,
:func:`opendata_meta`) and parses (:class:`ImagerySnapshot`, :class:`OpenDataSnapshot`)
a snapshot row's JSON ``meta``, and that decides whether a stored snapshot still stands
for a source as it is now (:func:`reusable_snapshot`).

Light on purpose (no raster or vector library): an unchanged re-audit reads only this.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from pipeline.aoi.config import AoiConfig
from pipeline.aoi.steps import DATE_RULES, check_step
from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.models import Snapshot
from pipeline.errors import ConfigError, NotFoundError
from pipeline.run.handoffs import FetchedSnapshot, SnapshotKind
from pipeline.sources import latest_step
from pipeline.sources.urls import mask_url


@dataclass(frozen=True)
class ShardRef:
    """One shard of an imagery snapshot: its mosaic's key, content hash and valid share."""

    shard_id: str
    key: str
    content_hash: str
    valid_share: float


@dataclass(frozen=True)
class ImagerySnapshot:
    """A stored imagery snapshot: one mosaic per shard that has imagery.

    ``fingerprint`` identifies the source as read (a new fingerprint is a new fetch),
    ``coverage`` is the share of the AOI with imagery, ``described`` what the source
    said of itself (bands, dtype, CRS) for validation.
    """

    id: int
    aoi_id: int
    step: str
    source: str
    content_hash: str
    feature_count: int
    fingerprint: str
    coverage: float | None
    shards: Mapping[str, ShardRef]
    described: Mapping[str, Any] = field(default_factory=dict)
    #: the imagery's own date (its date rule applied to the audit date); None: ``step``
    source_step: str | None = None

    @classmethod
    def from_row(cls, row: Snapshot) -> ImagerySnapshot:
        """Parse an ``imagery`` snapshot row."""
        meta = _meta(row, "imagery")
        shards = {
            sid: ShardRef(sid, str(v["key"]), str(v["hash"]), float(v.get("valid_share", 1.0)))
            for sid, v in (meta.get("shards") or {}).items()
        }
        return cls(
            id=row.id,
            aoi_id=row.aoi_id,
            step=row.step,
            source=row.source,
            content_hash=row.content_hash,
            feature_count=int(row.feature_count or 0),
            fingerprint=str(meta.get("fingerprint", "")),
            coverage=meta.get("coverage"),
            shards=shards,
            described=dict(meta.get("source") or {}),
            source_step=meta.get("source_step"),
        )


@dataclass(frozen=True)
class OpenDataSnapshot:
    """A stored open-data snapshot: repaired footprints (EPSG:3857 GeoParquet under ``key``) and
    the per-feature profile of the data as read (``profile_key``).

    ``read_info`` is what the source said of what it read (count, CRS, dropped
    non-polygons), ``repair`` what preparing the footprints repaired or dropped.
    """

    id: int
    aoi_id: int
    step: str
    source: str
    content_hash: str
    feature_count: int
    fingerprint: str
    key: str
    profile_key: str | None
    repair: Mapping[str, Any] = field(default_factory=dict)
    read_info: Mapping[str, Any] = field(default_factory=dict)
    #: the open data's own date (its date rule applied to the audit date); None: ``step``
    source_step: str | None = None

    @classmethod
    def from_row(cls, row: Snapshot) -> OpenDataSnapshot:
        """Parse an ``opendata`` snapshot row."""
        meta = _meta(row, "opendata")
        return cls(
            id=row.id,
            aoi_id=row.aoi_id,
            step=row.step,
            source=row.source,
            content_hash=row.content_hash,
            feature_count=int(row.feature_count or 0),
            fingerprint=str(meta.get("fingerprint", "")),
            key=str(meta.get("key", "")),
            profile_key=meta.get("profile_key"),
            repair=dict(meta.get("repair") or {}),
            read_info=dict(meta.get("source") or {}),
            source_step=meta.get("source_step"),
        )

    def artifact_keys(self) -> list[str]:
        """Keys that must exist for the snapshot to be usable."""
        return [self.key, self.profile_key or ""]


def imagery_meta(
    fingerprint: str,
    coverage: float,
    shards: Mapping[str, ShardRef],
    described: Mapping[str, Any],
    source_step: str | None = None,
) -> dict[str, Any]:
    """The ``meta`` JSON of an imagery snapshot row (parsed by :class:`ImagerySnapshot`)."""
    return {
        "source_step": source_step,
        "fingerprint": fingerprint,
        "coverage": coverage,
        "shards": {
            sid: {"key": r.key, "hash": r.content_hash, "valid_share": r.valid_share}
            for sid, r in shards.items()
        },
        "source": dict(described),
    }


def opendata_meta(
    fingerprint: str,
    key: str,
    profile_key: str,
    repair: Mapping[str, Any],
    read_info: Mapping[str, Any],
    source_step: str | None = None,
) -> dict[str, Any]:
    """The ``meta`` JSON of an open-data snapshot row (parsed by :class:`OpenDataSnapshot`)."""
    return {
        "source_step": source_step,
        "fingerprint": fingerprint,
        "key": key,
        "profile_key": profile_key,
        "repair": dict(repair),
        "source": dict(read_info),
    }


def imagery_snapshot(s: Session, snapshot_id: int) -> ImagerySnapshot:
    """The imagery snapshot ``snapshot_id`` (ConfigError when it is of another kind)."""
    return ImagerySnapshot.from_row(repo.get_snapshot(s, snapshot_id))


def opendata_snapshot(s: Session, snapshot_id: int) -> OpenDataSnapshot:
    """The open-data snapshot ``snapshot_id`` (ConfigError when it is of another kind)."""
    return OpenDataSnapshot.from_row(repo.get_snapshot(s, snapshot_id))


def _meta(row: Snapshot, kind: str) -> dict[str, Any]:
    if row.kind != kind:
        raise ConfigError(f"snapshot {row.id} is {row.kind}, not {kind}")
    return dict(row.meta or {})


def source_step(config: AoiConfig, kind: SnapshotKind, step: str) -> str:
    """The date of ``kind``'s source that an audit at ``step`` reads, by the AOI's date
    rule (``dates:``); :class:`NotFoundError` when a ``latest`` source has nothing on or
    before ``step``."""
    check_step(step)
    rule = getattr(config.dates, kind)
    if rule == "audit":
        return step
    if rule not in DATE_RULES:
        return rule  # a fixed date
    spec = config.imagery if kind == "imagery" else config.opendata
    found = latest_step(spec, until=step, base_dir=config.base_dir, imagery=kind == "imagery")
    if found is None:
        raise NotFoundError(
            f"{kind} {mask_url(spec.path)!r} of AOI {config.name!r} has no snapshot dated "
            f"on or before {step} (date rule {rule!r})"
        )
    return found


def snapshot_fingerprint(config: AoiConfig, kind: SnapshotKind, source_fingerprint: str) -> str:
    """The identity of a snapshot: its source's fingerprint and what of the AOI shaped
    it. Imagery mosaics depend on the shard layout (a new layout fetches again); open
    data on the area read and the attributes profiled."""
    if kind == "imagery":
        shaped_by = json.dumps(
            {
                "work_zoom": config.work_zoom,
                "shard_zoom": config.shard_zoom,
                "shards": sorted(shard.id for shard in config.shards()),
            }
        )
    else:
        required = sorted(config.validation.required_attributes)
        shaped_by = f"{config.scored_area().wkb_hex}|{required}"
    return hashlib.sha256(f"{source_fingerprint}|{shaped_by}".encode()).hexdigest()


def reusable_snapshot(
    ctx: Context, aoi_id: int, kind: SnapshotKind, step: str, fingerprint: str, dated: str
) -> FetchedSnapshot | None:
    """The stored snapshot of ``step`` with the same fingerprint and source date, when
    its artifacts exist (then the source need not be read again); else None."""
    with Session(ctx.engine) as s:
        row = repo.latest_snapshot(s, aoi_id, kind, step)
        if row is None:
            return None
        snap = (ImagerySnapshot if kind == "imagery" else OpenDataSnapshot).from_row(row)
    if snap.fingerprint != fingerprint or (snap.source_step or step) != dated:
        return None
    if isinstance(snap, ImagerySnapshot):
        keys = [ref.key for ref in snap.shards.values()]
        # snapshots from before validation profiles existed are fetched again
        keys += [] if snap.described else [""]
    else:
        keys = snap.artifact_keys()
    if not all(k and ctx.store.exists(k) for k in keys):
        return None
    return FetchedSnapshot(kind, snap.id, snap.content_hash, step, source_step=dated, reused=True)
