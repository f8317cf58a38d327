"""Run results as GeoDataFrames in EPSG:4326 (for the dashboard, reports and exports)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.db.models import Base, Change, Finding, Hotspot, TileScore

if TYPE_CHECKING:  # geopandas is imported when a frame is built, keeping `import pipeline.db` light
    import geopandas as gpd


def _frame(
    s: Session, model: type[Base], where: list[Any], order_by: list[Any]
) -> gpd.GeoDataFrame:
    """All columns of ``model``'s rows matching ``where``; ``geometry`` is the geometry column."""
    import geopandas as gpd
    import pandas as pd

    columns = list(model.__table__.columns)
    rows = s.execute(select(*columns).where(*where).order_by(*order_by)).all()
    df = pd.DataFrame.from_records(rows, columns=[c.name for c in columns])
    geometry = gpd.GeoSeries(list(df.pop("geometry")), index=df.index, crs="EPSG:4326")
    return gpd.GeoDataFrame(df, geometry=geometry, crs="EPSG:4326")


def tile_scores_frame(
    s: Session, run_id: int, *, shard_id: str | None = None, flagged: bool | None = None
) -> gpd.GeoDataFrame:
    """The run's tile scores (one row per tile, tile outline as geometry), by z, x, y."""
    where = [TileScore.run_id == run_id]
    if shard_id is not None:
        where.append(TileScore.shard_id == shard_id)
    if flagged is not None:
        where.append(TileScore.flagged.is_(flagged))
    return _frame(s, TileScore, where, [TileScore.z, TileScore.x, TileScore.y])


def findings_frame(
    s: Session, run_id: int, *, kind: str | None = None, shard_id: str | None = None
) -> gpd.GeoDataFrame:
    """The run's findings, optionally of one ``kind`` or shard, by id."""
    where = [Finding.run_id == run_id]
    if kind is not None:
        where.append(Finding.kind == kind)
    if shard_id is not None:
        where.append(Finding.shard_id == shard_id)
    return _frame(s, Finding, where, [Finding.id])


def changes_frame(s: Session, run_id: int, *, kind: str | None = None) -> gpd.GeoDataFrame:
    """The run's changes (``step_from`` -> ``step_to``), optionally of one ``kind``, by id."""
    where = [Change.run_id == run_id]
    if kind is not None:
        where.append(Change.kind == kind)
    return _frame(s, Change, where, [Change.id])


def hotspots_frame(s: Session, run_id: int) -> gpd.GeoDataFrame:
    """The run's hotspots by rank (1 = hottest)."""
    return _frame(s, Hotspot, [Hotspot.run_id == run_id], [Hotspot.rank])
