"""The fetch stage: sources → snapshots of what existed at time step ``t`` over the AOI.

Each source first resolves its own date from the audit date by the AOI's date rule
(:func:`~pipeline.run.snapshots.source_step`): the newest ``{step}`` file on or before
it, a STAC window ending on it, a live service's content now. The snapshot records
that date.

An imagery snapshot is one mosaic GeoTIFF per shard (EPSG:3857) plus the hash of
each; an open-data snapshot is a GeoParquet file of repaired footprints and the
per-feature profile of the data as read. Both are recorded in the ``snapshot`` table
with a content hash. When the source's fingerprint is unchanged since the last fetch
of the same step, the stored snapshot is reused without reading the source again
(:func:`~pipeline.run.snapshots.reusable_snapshot`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time

from sqlalchemy.orm import Session

from pipeline.aoi.config import AoiConfig
from pipeline.aoi.steps import check_step
from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.engine import write_session
from pipeline.errors import CoverageError, VectorDataError
from pipeline.mosaic import array_hash, write_mosaic
from pipeline.progress import progress_bar
from pipeline.rasterize import prepare_footprints
from pipeline.run import layout
from pipeline.run.handoffs import FetchedSnapshot
from pipeline.run.inputs import geoparquet_bytes
from pipeline.run.snapshots import (
    ShardRef,
    imagery_meta,
    opendata_meta,
    reusable_snapshot,
    snapshot_fingerprint,
    source_step,
)
from pipeline.sources import check_coverage, open_imagery, open_vector
from pipeline.sources.urls import mask_url
from pipeline.validate.profiles import opendata_feature_profile

log = logging.getLogger(__name__)


def _remove(ctx: Context, keys: list[str]) -> None:
    """Remove the artifacts a failed fetch wrote (no snapshot refers to them)."""
    for key in keys:
        ctx.store.delete(key)


def fetch_imagery(ctx: Context, config: AoiConfig, step: str) -> FetchedSnapshot:
    """Read the AOI's imagery for the audit at ``step`` into shard mosaics; return the
    snapshot (its ``source_step`` is the imagery's own date)."""
    check_step(step)
    started = time.perf_counter()
    dated = source_step(config, "imagery", step)
    with Session(ctx.engine) as s:
        aoi_id = repo.get_aoi(s, config.name).id
    shards = config.shards()
    with open_imagery(
        config.imagery,
        step=dated,
        base_dir=config.base_dir,
        bbox=config.bounds,
        zoom=config.work_zoom,
    ) as source:
        fingerprint = snapshot_fingerprint(config, "imagery", source.fingerprint())
        reused = reusable_snapshot(ctx, aoi_id, "imagery", step, fingerprint, dated)
        if reused:
            log.info("imagery unchanged, snapshot reused", extra={"aoi": config.name, "step": step})
            return dataclasses.replace(reused, seconds=time.perf_counter() - started)
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
        fingerprint = snapshot_fingerprint(config, "opendata", source.fingerprint())
        reused = reusable_snapshot(ctx, aoi_id, "opendata", step, fingerprint, dated)
        if reused:
            return dataclasses.replace(reused, seconds=time.perf_counter() - started)
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
