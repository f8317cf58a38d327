"""The fetch stage: sources → snapshots of what existed at time step ``t`` over the AOI.

Each source first resolves its own date from the audit date by the AOI's date rule
(:func:`source_step`): the newest ``{step}`` file on or before it, a STAC window
ending on it, a live service's content now. The snapshot records that date.

An imagery snapshot is one mosaic GeoTIFF per shard (EPSG:3857) plus the hash of
each; an open-data snapshot is a GeoParquet file of repaired footprints and the
per-feature profile of the data as read. Both are recorded in the ``snapshot`` table
with a content hash. When the source's fingerprint is unchanged since the last fetch
of the same step, the stored snapshot is reused without reading the source again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

from sqlalchemy.orm import Session

from pipeline.aoi.config import AoiConfig
from pipeline.aoi.steps import DATE_RULES, check_step
from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.engine import write_session
from pipeline.errors import CoverageError, NotFoundError, VectorDataError
from pipeline.mosaic import array_hash, write_mosaic
from pipeline.progress import progress_bar
from pipeline.rasterize import prepare_footprints
from pipeline.run import layout
from pipeline.run.handoffs import FetchedSnapshot, SnapshotKind
from pipeline.run.inputs import (
    ImagerySnapshot,
    OpenDataSnapshot,
    ShardRef,
    geoparquet_bytes,
    imagery_meta,
    opendata_meta,
)
from pipeline.sources import check_coverage, latest_step, open_imagery, open_vector
from pipeline.sources.urls import mask_url
from pipeline.validate.profiles import opendata_feature_profile

log = logging.getLogger(__name__)


def _reusable(
    ctx: Context,
    aoi_id: int,
    kind: SnapshotKind,
    step: str,
    fingerprint: str,
    started: float,
    dated: str,
) -> FetchedSnapshot | None:
    """The stored snapshot of the same source fingerprint and date, when its artifacts
    exist."""
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
    return FetchedSnapshot(
        kind,
        snap.id,
        snap.content_hash,
        step,
        source_step=dated,
        reused=True,
        seconds=time.perf_counter() - started,
    )


def _remove(ctx: Context, keys: list[str]) -> None:
    """Remove the artifacts a failed fetch wrote (no snapshot refers to them)."""
    for key in keys:
        ctx.store.delete(key)


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


def fetch_imagery(ctx: Context, config: AoiConfig, step: str) -> FetchedSnapshot:
    """Read the AOI's imagery for the audit at ``step`` into shard mosaics; return the
    snapshot (its ``source_step`` is the imagery's own date)."""
    check_step(step)
    started = time.perf_counter()
    dated = source_step(config, "imagery", step)
    with Session(ctx.engine) as s:
        aoi_id = repo.get_aoi(s, config.name).id
    shards = config.shards()
    # the mosaics depend on the source and on the shard layout: a new layout re-fetches
    tiling = json.dumps(
        {
            "work_zoom": config.work_zoom,
            "shard_zoom": config.shard_zoom,
            "shards": sorted(shard.id for shard in shards),
        }
    )
    with open_imagery(
        config.imagery,
        step=dated,
        base_dir=config.base_dir,
        bbox=config.bounds,
        zoom=config.work_zoom,
    ) as source:
        fingerprint = hashlib.sha256(f"{source.fingerprint()}|{tiling}".encode()).hexdigest()
        reused = _reusable(ctx, aoi_id, "imagery", step, fingerprint, started, dated)
        if reused:
            log.info("imagery unchanged, snapshot reused", extra={"aoi": config.name, "step": step})
            return reused
        coverage = check_coverage(source, config.geometry)
        described = source.describe()
        refs: dict[str, ShardRef] = {}
        written: list[str] = []  # mosaics this fetch added: removed again if it fails
        try:
            for shard in progress_bar(
                shards, desc=f"fetch imagery {step}", unit="shard", enabled=ctx.progress
            ):
                image = source.read_shard(shard)
                if not image.valid.any():
                    log.info("shard has no imagery", extra={"shard": shard.id})
                    continue
                key = layout.imagery_key(config.name, step, fingerprint, shard.id)
                if not ctx.store.exists(key):
                    written.append(key)
                with ctx.store.writable_path(key) as tmp:
                    write_mosaic(tmp, image.data, shard, kind="image", valid=image.valid)
                refs[shard.id] = ShardRef(
                    shard.id, key, array_hash(image.data, image.valid), image.valid_share
                )
        except BaseException:
            _remove(ctx, written)
            raise
    source_name = mask_url(config.imagery.path.replace("{step}", dated))
    if not refs:
        raise CoverageError(f"imagery {source_name!r} has no valid pixels over AOI {config.name!r}")
    content_hash = hashlib.sha256(
        json.dumps({sid: r.content_hash for sid, r in sorted(refs.items())}).encode()
    ).hexdigest()
    try:
        with write_session(ctx.engine) as s:
            row = repo.add_snapshot(
                s,
                aoi_id=aoi_id,
                kind="imagery",
                step=step,
                source=source_name,
                content_hash=content_hash,
                uri=ctx.store.uri(layout.imagery_folder(config.name, step, fingerprint)),
                feature_count=len(refs),
                meta=imagery_meta(fingerprint, coverage, refs, described, dated),
            )
            snapshot_id = row.id
    except BaseException:
        _remove(ctx, written)
        raise
    return FetchedSnapshot(
        "imagery",
        snapshot_id,
        content_hash,
        step,
        source_step=dated,
        seconds=time.perf_counter() - started,
    )


def fetch_opendata(ctx: Context, config: AoiConfig, step: str) -> FetchedSnapshot:
    """Read the AOI's open data for the audit at ``step``, repair it and store it as
    GeoParquet (the snapshot's ``source_step`` is the open data's own date)."""
    check_step(step)
    started = time.perf_counter()
    dated = source_step(config, "opendata", step)
    with Session(ctx.engine) as s:
        aoi_id = repo.get_aoi(s, config.name).id
    source_name = mask_url(config.opendata.path.replace("{step}", dated))
    # the footprints over every scored tile, not only inside the outline: the edge
    # tiles and the tiles around a hole are scored whole
    area = config.scored_area()
    with open_vector(
        config.opendata, step=dated, base_dir=config.base_dir, bbox=area.bounds
    ) as source:
        # the snapshot depends on the source, the area read and the attributes profiled
        required = config.validation.required_attributes
        fingerprint = hashlib.sha256(
            f"{source.fingerprint()}|{area.wkb_hex}|{sorted(required)}".encode()
        ).hexdigest()
        reused = _reusable(ctx, aoi_id, "opendata", step, fingerprint, started, dated)
        if reused:
            return reused
        frame = source.read(bbox=area.bounds)
        read_info = source.read_info()
    # profiled as read (before clipping and repair): NaN coordinates, invalid rings, etc.
    profile = opendata_feature_profile(frame, config.validation.required_attributes)
    frame = frame[frame.intersects(area)]
    if frame.empty:
        raise VectorDataError(f"open data {source_name!r} has no polygon over AOI {config.name!r}")
    frame, stats = prepare_footprints(frame)
    frame = frame[["feature_id", "geometry"]].sort_values("feature_id").reset_index(drop=True)
    content_hash = hashlib.sha256(
        frame["feature_id"].str.cat(sep="\n").encode() + b"".join(frame.geometry.to_wkb())
    ).hexdigest()
    key = layout.opendata_key(config.name, step, content_hash)
    profile_key = layout.opendata_profile_key(config.name, step, content_hash)
    ctx.store.write_bytes(profile_key, profile.to_parquet(index=False))
    uri = ctx.store.write_bytes(key, geoparquet_bytes(frame))
    with write_session(ctx.engine) as s:
        row = repo.add_snapshot(
            s,
            aoi_id=aoi_id,
            kind="opendata",
            step=step,
            source=source_name,
            content_hash=content_hash,
            uri=uri,
            feature_count=len(frame),
            meta=opendata_meta(fingerprint, key, profile_key, stats._asdict(), read_info, dated),
        )
        snapshot_id = row.id
    return FetchedSnapshot(
        "opendata",
        snapshot_id,
        content_hash,
        step,
        source_step=dated,
        seconds=time.perf_counter() - started,
    )
