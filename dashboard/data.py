"""Cached reads for the pages: one context per configured database, frames per query.

Frames are cached for ``TTL_S`` seconds (so an audit that just finished shows up on
its own) and per database, so two dashboards on two databases never mix results.
Writes (verdicts) clear the caches they make stale. A read that takes longer than
half a second shows what it is waiting for (Streamlit's cache spinner), so a page is
never blank while its first query runs.
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
import streamlit as st
from shapely.geometry.base import BaseGeometry
from sqlalchemy.orm import Session

from pipeline.context import Context, open_context
from pipeline.db import frames, registry, repo
from pipeline.db.queries import read_query
from pipeline.results.tile_view import TileLayers, imagery_crop, shard_previews, tile_layers
from pipeline.settings import Settings, load_settings
from pipeline.tiles import Tile

TTL_S = 60


def settings() -> Settings:
    """Settings from the environment, read on every script run (cheap)."""
    return load_settings()


def db_key() -> tuple[str, str, str]:
    """What identifies the data a page shows: database URL, artifact root, home."""
    s = settings()
    return (s.resolved_database_url, s.resolved_artifact_root, str(s.home))


@st.cache_resource(show_spinner="Opening the results store…")
def _context(database_url: str, artifact_root: str, home: str) -> Context:
    return open_context(Settings(home=home, database_url=database_url, artifact_root=artifact_root))


def context() -> Context:
    """The engine and artifact store of the configured database (one per process)."""
    return _context(*db_key())


@st.cache_data(ttl=TTL_S, show_spinner="Reading the audit results…")
def query(key: tuple[str, str, str], name: str, **params: Any) -> pd.DataFrame:
    """Named SQL query of ``sql/queries`` (see :func:`pipeline.db.queries.read_query`)."""
    return read_query(_context(*key).engine, name, **params)


def q(name: str, **params: Any) -> pd.DataFrame:
    """:func:`query` on the configured database."""
    return query(db_key(), name, **params)


@st.cache_data(ttl=TTL_S, show_spinner="Reading the AOI outline…")
def _aoi_bounds(key: tuple[str, str, str], aoi_id: int) -> tuple[float, float, float, float]:
    with Session(_context(*key).engine) as s:
        return tuple(float(v) for v in repo.get_aoi(s, aoi_id).geometry.bounds)  # type: ignore[return-value]


def aoi_bounds(aoi_id: int) -> tuple[float, float, float, float]:
    """The AOI outline's (west, south, east, north)."""
    return _aoi_bounds(db_key(), aoi_id)


@st.cache_data(ttl=TTL_S, show_spinner="Reading the findings…")
def _findings(key: tuple[str, str, str], run_id: int) -> gpd.GeoDataFrame:
    with Session(_context(*key).engine) as s:
        return frames.findings_frame(s, run_id)


def findings(run_id: int) -> gpd.GeoDataFrame:
    """All findings of a run (EPSG:4326)."""
    return _findings(db_key(), run_id)


@st.cache_data(ttl=TTL_S, show_spinner="Reading the hotspots…")
def _hotspots(key: tuple[str, str, str], run_id: int) -> gpd.GeoDataFrame:
    with Session(_context(*key).engine) as s:
        return frames.hotspots_frame(s, run_id)


def hotspots(run_id: int) -> gpd.GeoDataFrame:
    """Hotspot cells of a run by rank."""
    return _hotspots(db_key(), run_id)


@st.cache_data(ttl=TTL_S, show_spinner="Reading the changes…")
def _changes(key: tuple[str, str, str], run_id: int) -> gpd.GeoDataFrame:
    with Session(_context(*key).engine) as s:
        return frames.changes_frame(s, run_id)


def changes(run_id: int) -> gpd.GeoDataFrame:
    """Changes stored by a run (against the step before it)."""
    return _changes(db_key(), run_id)


@st.cache_data(ttl=TTL_S, show_spinner="Reading the model registry…")
def _models(key: tuple[str, str, str]) -> pd.DataFrame:
    with Session(_context(*key).engine) as s:
        rows = [
            {
                "id": mv.id,
                "name": mv.name,
                "version": mv.version,
                "stage": mv.stage,
                "arch": mv.arch,
                "encoder": mv.encoder,
                "created_at": mv.created_at,
                "promoted_at": mv.promoted_at,
                "parent_id": mv.parent_id,
                "metrics": dict(mv.metrics or {}),
                "params": dict(mv.params or {}),
                "training_data": dict(mv.training_data or {}),
                "weights_uri": mv.weights_uri,
            }
            for mv in registry.list_model_versions(s)
        ]
    return pd.DataFrame(rows)


def models() -> pd.DataFrame:
    """The model registry, one row per version."""
    return _models(db_key())


@st.cache_data(
    ttl=3600, show_spinner="Loading the tile's imagery, labels and prediction…", max_entries=256
)
def _tile(key: tuple[str, str, str], run_id: int, z: int, x: int, y: int) -> TileLayers:
    return tile_layers(_context(*key), run_id, Tile(x, y, z))


def tile(run_id: int, t: Tile) -> TileLayers:
    """Imagery, labels and prediction of a tile (artifacts do not change: cached 1 h)."""
    return _tile(db_key(), run_id, t.z, t.x, t.y)


@st.cache_data(ttl=3600, show_spinner="Loading the imagery around the finding…", max_entries=256)
def _crop(key: tuple[str, str, str], run_id: int, wkb: bytes) -> Any:
    return imagery_crop(_context(*key), run_id, shapely.from_wkb(wkb))


def crop(run_id: int, geometry: BaseGeometry) -> Any:
    """The run's imagery around a lon/lat geometry, with its outline drawn."""
    return _crop(db_key(), run_id, shapely.to_wkb(geometry))


@st.cache_data(ttl=3600, show_spinner="Loading the AOI's imagery…", max_entries=32)
def _previews(key: tuple[str, str, str], run_id: int) -> list[tuple[tuple[float, ...], bytes]]:
    return shard_previews(_context(*key), run_id)


def previews(run_id: int) -> list[tuple[tuple[float, ...], bytes]]:
    """Low-resolution imagery of each shard of a run, with lon/lat bounds."""
    return _previews(db_key(), run_id)


@st.cache_data(ttl=3600, show_spinner="Fetching the basemap…", max_entries=16)
def basemap(url: str, bounds: tuple[float, float, float, float]) -> list:
    """Basemap tiles over ``bounds`` (see :func:`dashboard.maps.basemap_tiles`)."""
    from dashboard.maps import basemap_tiles

    return basemap_tiles(url, bounds)


def save_review(aoi_id: int, target: str, verdict: str, **kwargs: Any) -> int:
    """Store a verdict (see :func:`pipeline.db.reviews.upsert_review`); clears stale caches."""
    from pipeline.db.engine import session_scope

    with session_scope(context().engine) as s:
        review_id = repo.upsert_review(s, aoi_id, target, verdict, **kwargs).id
    query.clear()
    return review_id


@st.cache_data(ttl=TTL_S, show_spinner="Reading the report…", max_entries=32)
def _artifact(key: tuple[str, str, str], artifact_key: str) -> bytes | None:
    from pipeline.errors import StoreError

    try:
        return _context(*key).store.read_bytes(artifact_key)
    except StoreError:
        return None


def artifact_bytes(artifact_key: str) -> bytes | None:
    """Bytes of an artifact (e.g. a Data Docs page), or None when it is gone."""
    return _artifact(db_key(), artifact_key)
