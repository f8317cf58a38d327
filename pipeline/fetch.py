"""Stage 1, sources → snapshots: what existed at time step ``t`` over the AOI.

An imagery snapshot is one mosaic GeoTIFF per shard (EPSG:3857) plus the hash of
each; an open-data snapshot is a GeoParquet file of repaired footprints. Both
are recorded in the ``snapshot`` table with a content hash. When the source's
fingerprint is unchanged since the last fetch of the same step, the stored
snapshot is reused without reading the source again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass

import geopandas as gpd
from sqlalchemy.orm import Session
from tqdm import tqdm

from pipeline.aoi import AoiConfig, check_step
from pipeline.context import Context
from pipeline.db import repo
from pipeline.errors import CoverageError, VectorDataError
from pipeline.mosaic import array_hash, write_mosaic
from pipeline.rasterize import prepare_footprints
from pipeline.sources import check_coverage, open_imagery, open_vector
from pipeline.validate.profiles import opendata_feature_profile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnapshotRef:
    """A stored snapshot: its row id, content hash and whether it was reused."""

    id: int
    content_hash: str
    reused: bool


def imagery_key(aoi: str, step: str, fingerprint: str, shard_id: str) -> str:
    """Artifact key of one shard's imagery mosaic."""
    return f"aois/{aoi}/imagery/{step}/{fingerprint[:16]}/{shard_id}.tif"


def opendata_key(aoi: str, step: str, content_hash: str) -> str:
    """Artifact key of an open-data snapshot."""
    return f"aois/{aoi}/opendata/{step}/{content_hash[:16]}.parquet"


def _reusable(
    ctx: Context, aoi_id: int, kind: str, step: str, fingerprint: str
) -> SnapshotRef | None:
    with Session(ctx.engine) as s:
        snap = repo.latest_snapshot(s, aoi_id, kind, step)
        if snap is None or (snap.meta or {}).get("fingerprint") != fingerprint:
            return None
        # snapshots from before validation profiles existed are fetched again
        if kind == "imagery":
            keys = [v["key"] for v in snap.meta.get("shards", {}).values()]
            keys += [] if "source" in snap.meta else [""]
        else:
            keys = [snap.meta.get("key", ""), snap.meta.get("profile_key", "")]
        if not all(k and ctx.store.exists(k) for k in keys):
            return None
        return SnapshotRef(snap.id, snap.content_hash, reused=True)


def fetch_imagery(ctx: Context, config: AoiConfig, step: str) -> SnapshotRef:
    """Read the AOI's imagery for ``step`` into shard mosaics; return the snapshot."""
    check_step(step)
    with Session(ctx.engine) as s:
        aoi_id = repo.get_aoi(s, config.name).id
    shards = config.shards()
    # the mosaics depend on the source and on the shard layout: a new layout re-fetches
    layout = json.dumps(
        {
            "work_zoom": config.work_zoom,
            "shard_zoom": config.shard_zoom,
            "shards": sorted(shard.id for shard in shards),
        }
    )
    with open_imagery(config.imagery, step=step, base_dir=config.base_dir) as source:
        fingerprint = hashlib.sha256(f"{source.fingerprint()}|{layout}".encode()).hexdigest()
        reused = _reusable(ctx, aoi_id, "imagery", step, fingerprint)
        if reused:
            log.info("imagery unchanged, snapshot reused", extra={"aoi": config.name, "step": step})
            return reused
        coverage = check_coverage(source, config.geometry)
        described = source.describe()
        shard_meta: dict[str, dict[str, object]] = {}
        for shard in tqdm(
            shards, desc=f"fetch imagery {step}", unit="shard", disable=not ctx.progress
        ):
            image = source.read_shard(shard)
            if not image.valid.any():
                log.info("shard has no imagery", extra={"shard": shard.id})
                continue
            key = imagery_key(config.name, step, fingerprint, shard.id)
            with ctx.store.writable_path(key) as tmp:
                write_mosaic(tmp, image.data, shard, kind="image", valid=image.valid)
            shard_meta[shard.id] = {
                "key": key,
                "hash": array_hash(image.data, image.valid),
                "valid_share": float(image.valid.mean()),
            }
    if not shard_meta:
        raise CoverageError(
            f"imagery {config.imagery.path.replace('{step}', step)!r} has no valid pixels "
            f"over AOI {config.name!r}"
        )
    content_hash = hashlib.sha256(
        json.dumps({k: v["hash"] for k, v in sorted(shard_meta.items())}).encode()
    ).hexdigest()
    with Session(ctx.engine) as s, s.begin():
        snap = repo.add_snapshot(
            s,
            aoi_id=aoi_id,
            kind="imagery",
            step=step,
            source=config.imagery.path.replace("{step}", step),
            content_hash=content_hash,
            uri=ctx.store.uri(f"aois/{config.name}/imagery/{step}/{fingerprint[:16]}"),
            feature_count=len(shard_meta),
            meta={
                "fingerprint": fingerprint,
                "coverage": coverage,
                "shards": shard_meta,
                "source": described,
            },
        )
        return SnapshotRef(snap.id, content_hash, reused=False)


def fetch_opendata(ctx: Context, config: AoiConfig, step: str) -> SnapshotRef:
    """Read the AOI's open data for ``step``, repair it and store it as GeoParquet."""
    check_step(step)
    with Session(ctx.engine) as s:
        aoi_id = repo.get_aoi(s, config.name).id
    with open_vector(config.opendata, step=step, base_dir=config.base_dir) as source:
        fingerprint = source.fingerprint()
        required = config.validation.required_attributes
        if required:  # the stored profile counts them: another list needs another profile
            fingerprint = hashlib.sha256(f"{fingerprint}|{sorted(required)}".encode()).hexdigest()
        reused = _reusable(ctx, aoi_id, "opendata", step, fingerprint)
        if reused:
            return reused
        frame = source.read(bbox=config.bounds)
        read_info = source.read_info()
    # profiled as read (before clipping and repair): NaN coordinates, invalid rings, etc.
    profile = opendata_feature_profile(frame, config.validation.required_attributes)
    frame = frame[frame.intersects(config.geometry)]
    if frame.empty:
        raise VectorDataError(
            f"open data {config.opendata.path.replace('{step}', step)!r} has no polygon "
            f"over AOI {config.name!r}"
        )
    frame, stats = prepare_footprints(frame)
    frame = frame[["feature_id", "geometry"]].sort_values("feature_id").reset_index(drop=True)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    content_hash = hashlib.sha256(
        frame["feature_id"].str.cat(sep="\n").encode() + b"".join(frame.geometry.to_wkb())
    ).hexdigest()
    key = opendata_key(config.name, step, content_hash)
    profile_key = key.replace(".parquet", ".profile.parquet")
    ctx.store.write_bytes(profile_key, profile.to_parquet(index=False))
    uri = ctx.store.write_bytes(key, data)
    with Session(ctx.engine) as s, s.begin():
        snap = repo.add_snapshot(
            s,
            aoi_id=aoi_id,
            kind="opendata",
            step=step,
            source=config.opendata.path.replace("{step}", step),
            content_hash=content_hash,
            uri=uri,
            feature_count=len(frame),
            meta={
                "fingerprint": fingerprint,
                "key": key,
                "profile_key": profile_key,
                "repair": _jsonable(stats),
                "source": read_info,
            },
        )
        return SnapshotRef(snap.id, content_hash, reused=False)


def read_opendata(ctx: Context, snapshot_meta: dict) -> gpd.GeoDataFrame:
    """Load an open-data snapshot (EPSG:4326, ``feature_id`` + geometry)."""
    return gpd.read_parquet(io.BytesIO(ctx.store.read_bytes(snapshot_meta["key"])))


def _jsonable(stats: object) -> dict:
    if hasattr(stats, "_asdict"):
        return dict(stats._asdict())
    if hasattr(stats, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(stats)  # type: ignore[arg-type]
    return dict(stats) if isinstance(stats, dict) else {"value": str(stats)}
