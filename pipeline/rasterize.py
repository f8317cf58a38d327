"""Open-data polygons to a label mosaic per shard (1 = building, 0 = background).

Repair once per snapshot, rasterize many shards::

    prepared, stats = prepare_footprints(snapshot_gdf)      # EPSG:3857, valid polygons
    for shard in shards:
        labels = rasterize_shard(prepared, shard).labels     # (H, W) uint8
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS
from rasterio.features import rasterize
from rasterio.warp import transform_bounds

from pipeline.errors import VectorDataError
from pipeline.tiles import Shard, shard_transform, xy_bounds

log = logging.getLogger(__name__)

WEB_MERCATOR = CRS.from_epsg(3857)
POLYGONAL = ("Polygon", "MultiPolygon")


class RasterizeResult(NamedTuple):
    """Labels of one shard: ``labels`` (H, W) uint8 in {0, 1}; features burnt; repaired."""

    labels: np.ndarray
    n_features: int
    n_repaired: int


class PrepareStats(NamedTuple):
    """What :func:`prepare_footprints` did: input rows, repaired geometries, dropped rows."""

    n_input: int
    n_repaired: int
    n_dropped: int


def repair(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make invalid geometries valid, keeping their polygonal parts.

    Returns ``(geoms, repaired)``: invalid inputs are replaced by
    ``make_valid(g, method="structure")`` restricted to (Multi)Polygon parts (empty if
    none is left); ``repaired`` flags the replaced ones.
    """
    geoms = np.asarray(geoms, dtype=object).copy()
    present = ~shapely.is_missing(geoms)
    repaired = np.zeros(len(geoms), dtype=bool)
    repaired[present] = ~shapely.is_valid(geoms[present])
    for i in np.flatnonzero(repaired):
        fixed = shapely.make_valid(geoms[i], method="structure", keep_collapsed=False)
        geoms[i] = _polygonal(fixed)
    return geoms, repaired


def _polygonal(geom: shapely.Geometry) -> shapely.Geometry:
    if geom.geom_type in POLYGONAL:
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in POLYGONAL]
    if not parts:
        return shapely.Polygon()
    return shapely.union_all(parts)


def _crs_of(gdf: gpd.GeoDataFrame) -> CRS:
    if gdf.crs is None:
        raise VectorDataError(
            "footprints have no CRS; expected EPSG:4326 (or EPSG:3857 when prepared)"
        )
    return CRS.from_user_input(gdf.crs)


def prepare_footprints(gdf: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, PrepareStats]:
    """Reproject to EPSG:3857 and repair invalid polygons once per snapshot.

    Rows whose geometry is missing, empty or not polygonal after repair are dropped.
    Returns the prepared frame (same columns, EPSG:3857, spatial index built) and stats.
    """
    n_input = len(gdf)
    if not _crs_of(gdf).equals(WEB_MERCATOR):
        gdf = gdf.to_crs(WEB_MERCATOR)
    geoms, repaired = repair(gdf.geometry.to_numpy())
    keep = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    keep &= np.isin(shapely.get_type_id(geoms), (3, 6))  # Polygon, MultiPolygon
    out = gdf.iloc[np.flatnonzero(keep)].copy()
    out = out.set_geometry(gpd.GeoSeries(geoms[keep], index=out.index, crs=WEB_MERCATOR))
    out.sindex  # noqa: B018 - build the spatial index once, shared by every shard
    stats = PrepareStats(n_input, int(repaired.sum()), int((~keep).sum()))
    if stats.n_repaired or stats.n_dropped:
        log.info(
            "footprints: repaired %d invalid, dropped %d unusable of %d",
            stats.n_repaired,
            stats.n_dropped,
            n_input,
        )
    return out, stats


def rasterize_shard(footprints: gpd.GeoDataFrame, shard: Shard) -> RasterizeResult:
    """Burn the footprints intersecting ``shard`` into a (size, size) uint8 label mosaic.

    ``footprints``: EPSG:4326 (or any CRS; the output of :func:`prepare_footprints` avoids
    repeated reprojection and repair). Candidates come from the spatial index, are
    reprojected to EPSG:3857, repaired if invalid (counted in ``n_repaired``) and burnt
    with ``shard_transform(shard)``, ``all_touched=False`` (a pixel is 1 when its centre
    is inside a polygon).
    """
    size = shard.size
    bounds_3857 = xy_bounds(shard.tile)
    crs = _crs_of(footprints)
    query = (
        bounds_3857
        if crs.equals(WEB_MERCATOR)
        else transform_bounds(WEB_MERCATOR, crs, *bounds_3857, densify_pts=21)
    )
    idx = footprints.sindex.query(shapely.box(*query))
    if len(idx) == 0:
        return RasterizeResult(np.zeros((size, size), np.uint8), 0, 0)
    candidates = footprints.geometry.iloc[np.sort(idx)]
    if not crs.equals(WEB_MERCATOR):
        candidates = candidates.to_crs(WEB_MERCATOR)
    geoms, repaired = repair(candidates.to_numpy())
    shard_box = shapely.box(*bounds_3857)
    hit = ~shapely.is_missing(geoms) & shapely.intersects(geoms, shard_box)
    hit &= ~shapely.is_empty(geoms)
    geoms = geoms[hit]
    n_repaired = int(repaired[hit].sum())
    if len(geoms) == 0:
        return RasterizeResult(np.zeros((size, size), np.uint8), 0, n_repaired)
    labels = rasterize(
        ((g, 1) for g in geoms),
        out_shape=(size, size),
        transform=shard_transform(shard),
        fill=0,
        all_touched=False,
        dtype=np.uint8,
    )
    return RasterizeResult(labels, len(geoms), n_repaired)


def rasterize_ids(footprints: gpd.GeoDataFrame, shard: Shard) -> tuple[np.ndarray, np.ndarray]:
    """Which footprint covers each pixel of ``shard``: the positions (in ``footprints``)
    of the footprints over the shard, and an ``(H, W)`` int32 raster holding ``k + 1``
    where the ``k``-th of them covers the pixel centre (0 elsewhere; a later footprint
    wins where two overlap). ``footprints`` as prepared (EPSG:3857, valid)."""
    size = shard.size
    bounds = xy_bounds(shard.tile)
    if not _crs_of(footprints).equals(WEB_MERCATOR):
        footprints = footprints.to_crs(WEB_MERCATOR)
    idx = np.sort(footprints.sindex.query(shapely.box(*bounds), predicate="intersects"))
    raster = np.zeros((size, size), np.int32)
    if idx.size:
        geoms = footprints.geometry.to_numpy()[idx]
        raster = rasterize(
            ((g, k + 1) for k, g in enumerate(geoms)),
            out_shape=(size, size),
            transform=shard_transform(shard),
            fill=0,
            all_touched=False,
            dtype=np.int32,
        )
    return idx, raster


__all__ = [
    "PrepareStats",
    "RasterizeResult",
    "prepare_footprints",
    "rasterize_ids",
    "rasterize_shard",
    "repair",
]
