"""The run's typed data model: snapshots as stored, a run's inputs, and their reads.

A snapshot row keeps what its stage needs in a JSON ``meta`` column; this module is
the one place that writes (:func:`imagery_meta`, :func:`opendata_meta`) and parses
(:class:`ImagerySnapshot`, :class:`OpenDataSnapshot`) that JSON. The reads of their
artifacts are here too: a shard's imagery (:func:`read_shard_image`) and the open data
(:func:`read_opendata`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from shapely.geometry.base import BaseGeometry
from sqlalchemy.orm import Session

from pipeline.aoi.config import AoiConfig, parse_aoi
from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.models import Snapshot
from pipeline.errors import ConfigError, StoreError
from pipeline.mosaic import read_mosaic

WEB_MERCATOR = "EPSG:3857"


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


@dataclass(frozen=True)
class RunInputs:
    """Everything a stage needs to know about its run."""

    run_id: int
    aoi: AoiConfig
    step: str
    imagery: ImagerySnapshot
    opendata: OpenDataSnapshot
    model_version_id: int
    repredict: bool = False
    bbox: tuple[float, ...] | None = None


def load_run_inputs(ctx: Context, run_id: int) -> RunInputs:
    """Read a run's AOI configuration (as when it started), snapshots and model version."""
    with Session(ctx.engine) as s:
        run = repo.get_run(s, run_id)
        aoi_row = repo.get_aoi(s, run.aoi_id)
        if run.imagery_snapshot_id is None or run.opendata_snapshot_id is None:
            raise ConfigError(f"run {run_id} has no snapshots: it was not planned by an audit")
        params = run.params or {}
        bbox = params.get("bbox")
        return RunInputs(
            run_id=run.id,
            aoi=parse_aoi(dict(aoi_row.config), source=f"AOI {aoi_row.name!r}"),
            step=run.step,
            imagery=imagery_snapshot(s, run.imagery_snapshot_id),
            opendata=opendata_snapshot(s, run.opendata_snapshot_id),
            model_version_id=int(run.model_version_id),
            repredict=bool(params.get("repredict", False)),
            bbox=tuple(float(v) for v in bbox) if bbox else None,
        )


class ShardPixels(NamedTuple):
    """A shard's imagery ``(bands, H, W) uint8`` and valid-data mask ``(H, W) bool``."""

    data: np.ndarray
    valid: np.ndarray


def read_shard_image(ctx: Context, ref: ShardRef, *, size: int | None = None) -> ShardPixels:
    """The imagery mosaic of one shard; ``size`` reads it decimated to ``size`` px per
    side (nearest neighbour). A mosaic without a mask is valid everywhere."""
    with ctx.store.readable_path(ref.key) as path:
        if size is None:
            data, valid = read_mosaic(path)
            return ShardPixels(data, np.ones(data.shape[1:], bool) if valid is None else valid)
        try:
            with rasterio.open(path) as src:
                bands = [1, 2, 3][: src.count]
                data = src.read(
                    bands, out_shape=(len(bands), size, size), resampling=Resampling.nearest
                )
                valid = src.dataset_mask(out_shape=(size, size)) > 0
        except RasterioError as exc:
            raise StoreError(
                f"imagery mosaic {ref.key} of shard {ref.shard_id}: cannot read ({exc})"
            ) from exc
    return ShardPixels(data, valid)


_opendata_cache: dict[tuple[str, str], gpd.GeoDataFrame] = {}


def read_opendata(ctx: Context, snapshot: OpenDataSnapshot) -> gpd.GeoDataFrame:
    """An open-data snapshot's footprints as prepared at fetch time (``feature_id`` +
    repaired polygons in EPSG:3857); the last one read is kept per process (a run's
    shards share it)."""
    cache_key = (ctx.store.url, snapshot.content_hash)
    if cache_key not in _opendata_cache:
        frame = read_geoparquet(ctx, snapshot.key)
        _opendata_cache.clear()
        _opendata_cache[cache_key] = frame
    return _opendata_cache[cache_key]


def compared_opendata(
    ctx: Context, inputs: RunInputs, tiles: gpd.GeoDataFrame
) -> tuple[gpd.GeoDataFrame, BaseGeometry | None]:
    """The run's open data in EPSG:3857 and, for a bbox subset run, the area it looked at
    (EPSG:3857, the union of its scored ``tiles``): only open data inside it is compared."""
    opendata = read_opendata(ctx, inputs.opendata).to_crs(WEB_MERCATOR)
    if inputs.bbox is None:
        return opendata, None
    footprint = tiles.to_crs(WEB_MERCATOR).union_all()
    return opendata[opendata.representative_point().within(footprint)], footprint


def read_geoparquet(ctx: Context, key: str) -> gpd.GeoDataFrame:
    """A GeoParquet artifact (predicted buildings, open data)."""
    return gpd.read_parquet(io.BytesIO(ctx.store.read_bytes(key)))


def geoparquet_bytes(frame: gpd.GeoDataFrame) -> bytes:
    """A GeoDataFrame as GeoParquet bytes, to store as an artifact."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _meta(row: Snapshot, kind: str) -> dict[str, Any]:
    if row.kind != kind:
        raise ConfigError(f"snapshot {row.id} is {row.kind}, not {kind}")
    return dict(row.meta or {})
