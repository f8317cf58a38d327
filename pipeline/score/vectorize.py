"""Prediction mosaics to building polygons, and shard-edge repair.

Polygons are traced with 4-connectivity: pixels that touch only at a corner
are separate buildings. (8-connectivity would make GDAL trace rings that touch
themselves at a vertex, which are invalid polygons.)
"""

from __future__ import annotations

import logging

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio import features
from scipy import ndimage
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components
from shapely.geometry import shape

from pipeline.errors import ConfigError, VectorDataError
from pipeline.score.metrics import binarize

log = logging.getLogger(__name__)

_FOUR = ndimage.generate_binary_structure(2, 1)


def _empty(crs: str | None) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"confidence": np.empty(0, np.float64), "area_px": np.empty(0, np.int64)},
        geometry=gpd.GeoSeries([], crs=crs),
        crs=crs,
    )


def _probability(prob: np.ndarray) -> np.ndarray:
    if prob.dtype == np.bool_:
        return prob.astype(np.float32)
    if np.issubdtype(prob.dtype, np.integer):
        return prob.astype(np.float32) / 255.0
    return prob.astype(np.float32, copy=False)


def vectorize_mask(
    prob: np.ndarray,
    transform: Affine,
    *,
    threshold: float = 0.5,
    min_area_px: int = 12,
    simplify_tolerance_px: float = 1.0,
    valid: np.ndarray | None = None,
    crs: str | None = "EPSG:3857",
) -> gpd.GeoDataFrame:
    """Building polygons of a prediction mosaic, one row per connected component.

    ``prob``: ``(H, W)`` probability (float in [0, 1], 0..255 integers as stored
    in mosaics, or a bool mask). The mask ``prob >= threshold`` (and ``valid``)
    is split into 4-connected components with :func:`scipy.ndimage.label`;
    components under ``min_area_px`` pixels are dropped as specks; the rest are
    traced with :func:`rasterio.features.shapes` in ``transform``'s CRS and
    simplified (topology preserving) with tolerance
    ``simplify_tolerance_px * pixel size``.

    Columns: ``confidence`` = mean probability over the component's pixels,
    ``area_px`` = its pixel count, ``geometry`` (Polygon, possibly with holes).
    ``crs`` labels the result (``None`` leaves it CRS-less).
    """
    if prob.ndim != 2:
        raise ConfigError(f"prediction must be a 2-D array, got shape {prob.shape}")
    if valid is not None and valid.shape != prob.shape:
        raise ConfigError(f"valid mask {valid.shape} must have the prediction's shape {prob.shape}")
    if min_area_px < 1 or simplify_tolerance_px < 0:
        raise ConfigError(
            f"min_area_px must be >= 1 and simplify_tolerance_px >= 0, "
            f"got {min_area_px} and {simplify_tolerance_px}"
        )
    mask = binarize(prob, threshold)
    if valid is not None:
        mask = mask & valid.astype(bool, copy=False)
    labels, n = ndimage.label(mask, structure=_FOUR)
    if n == 0:
        return _empty(crs)
    area = np.bincount(labels.ravel(), minlength=n + 1)
    keep = area >= min_area_px
    keep[0] = False
    ids = np.flatnonzero(keep)
    if ids.size == 0:
        return _empty(crs)
    labels[~keep[labels]] = 0
    confidence = ndimage.mean(_probability(prob), labels=labels, index=ids)

    traced: dict[int, list] = {}
    for geom, value in features.shapes(
        labels.astype(np.int32, copy=False), mask=labels > 0, connectivity=4, transform=transform
    ):
        traced.setdefault(int(value), []).append(shape(geom))
    geoms = np.array(
        [
            polys[0] if len(polys) == 1 else shapely.union_all(polys)
            for polys in (traced[i] for i in ids)
        ],
        dtype=object,
    )
    if simplify_tolerance_px > 0:
        px = abs(transform.determinant) ** 0.5
        geoms = shapely.simplify(geoms, simplify_tolerance_px * px, preserve_topology=True)
    log.debug("vectorised %d components (%d specks dropped)", ids.size, n - ids.size)
    return gpd.GeoDataFrame(
        {"confidence": np.asarray(confidence, np.float64), "area_px": area[ids].astype(np.int64)},
        geometry=gpd.GeoSeries(geoms, crs=crs),
        crs=crs,
    )


def merge_across_edges(
    parts: gpd.GeoDataFrame, *, tolerance: float = 0.01, min_shared: float = 1.0
) -> gpd.GeoDataFrame:
    """Merge polygons that overlap or share a stretch of boundary into one building.

    Buildings are vectorised shard by shard, so one building crossing a shard
    edge arrives as two polygons sharing (up to floating-point noise) an edge.
    Two polygons are linked when they overlap or share boundary: the boundary of
    one runs for more than ``min_shared`` inside the other grown by
    ``tolerance`` (CRS units; defaults 1 m and 1 cm, i.e. about 3 pixels and a
    tiny fraction of one at z19). Polygons that merely touch at a corner, also
    after simplification, stay apart. Linked groups (connected components of
    that graph, found with an STRtree and scipy.sparse.csgraph)
    are unioned; a noise gap left between them is closed by buffering out and
    back in by ``tolerance`` with mitred joins (square corners stay square).

    Merged rows get ``confidence`` = area-weighted mean of their parts and
    ``area_px`` = sum (when those columns exist); other columns are taken from
    the largest part. The index is reset.
    """
    if tolerance <= 0 or min_shared <= 0:
        raise ConfigError(f"tolerance and min_shared must be > 0, got {tolerance} and {min_shared}")
    geoms = np.asarray(parts.geometry.values, dtype=object)
    n = geoms.size
    if n < 2:
        return parts.reset_index(drop=True)
    if shapely.is_missing(geoms).any() or shapely.is_empty(geoms).any():
        raise VectorDataError("merge_across_edges: parts hold empty or missing geometries")
    tree = shapely.STRtree(geoms)
    i, j = tree.query(geoms, predicate="dwithin", distance=tolerance)
    sel = i < j
    i, j = i[sel], j[sel]
    if i.size:
        # buffer each polygon once, however many neighbours it has
        first, back = np.unique(i, return_inverse=True)
        grown = shapely.buffer(geoms[first], tolerance)[back]
        shared = shapely.length(shapely.intersection(grown, shapely.boundary(geoms[j])))
        linked = shared > min_shared
        i, j = i[linked], j[linked]
    if i.size == 0:
        return parts.reset_index(drop=True)
    graph = coo_array((np.ones(i.size, np.int8), (i, j)), shape=(n, n))
    n_groups, group = connected_components(graph, directed=False)

    area = shapely.area(geoms)
    # representative row of each group: its largest part
    order = np.lexsort((-area, group))
    first = order[np.r_[True, group[order][1:] != group[order][:-1]]]
    out = parts.iloc[first].reset_index(drop=True)
    sizes = np.bincount(group, minlength=n_groups)
    new_geoms = np.asarray(out.geometry.values, dtype=object).copy()
    for g in np.flatnonzero(sizes > 1):
        members = geoms[group == g]
        merged = shapely.union_all(members)
        if merged.geom_type != "Polygon":  # float-noise gap: close it
            merged = shapely.union_all(
                shapely.buffer(members, tolerance, join_style="mitre")
            ).buffer(-tolerance, join_style="mitre")
        new_geoms[g] = merged
    if "confidence" in parts.columns:
        weight = np.bincount(group, weights=area, minlength=n_groups)
        conf = np.bincount(
            group, weights=area * parts["confidence"].to_numpy(np.float64), minlength=n_groups
        )
        out["confidence"] = np.divide(conf, weight, out=np.zeros(n_groups), where=weight > 0)
    if "area_px" in parts.columns:
        out["area_px"] = np.bincount(
            group, weights=parts["area_px"].to_numpy(np.float64), minlength=n_groups
        ).astype(np.int64)
    out[out.geometry.name] = gpd.GeoSeries(new_geoms, index=out.index, crs=parts.crs)
    log.debug("merged %d parts into %d buildings", n, n_groups)
    return out
