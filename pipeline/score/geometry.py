"""Geometry helpers shared by matching, changes and aggregates: EPSG:3857 polygons as
object arrays, true areas, vectorised overlaps and coverage, one-to-one assignment.

Areas and distances in true metres: EPSG:3857 lengths are scaled by ``cos(lat)`` and
areas by ``cos^2(lat)`` at each polygon's centroid.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.errors import VectorDataError

EARTH_RADIUS = 6378137.0
MERCATOR = "EPSG:3857"


def to_mercator(frame: gpd.GeoDataFrame, what: str) -> gpd.GeoDataFrame:
    """``frame`` in EPSG:3857 (a frame without CRS is taken to be in EPSG:3857)."""
    if not isinstance(frame, gpd.GeoDataFrame):
        raise VectorDataError(f"{what}: expected a GeoDataFrame, got {type(frame).__name__}")
    if frame.crs is None or frame.crs == MERCATOR:
        return frame
    return frame.to_crs(MERCATOR)


def geometries(frame: gpd.GeoDataFrame, what: str) -> np.ndarray:
    """The frame's geometries as an object array; missing or empty ones are an error."""
    geoms = np.asarray(frame.geometry.values, dtype=object)
    bad = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if bad.any():
        raise VectorDataError(
            f"{what}: {int(bad.sum())} row(s) have empty or missing geometry; drop them first"
        )
    return geoms


def mercator_scale(geoms: np.ndarray) -> np.ndarray:
    """``cos(lat)`` at each geometry's centroid: ``1 / cosh(y / R)`` for EPSG:3857 ``y``."""
    y = shapely.get_y(shapely.centroid(geoms)) if geoms.size else np.empty(0)
    return 1.0 / np.cosh(np.asarray(y, np.float64) / EARTH_RADIUS)


def area_m2(geoms: np.ndarray) -> np.ndarray:
    """True area of EPSG:3857 polygons: ``area_3857 * cos^2(lat)``."""
    return shapely.area(geoms) * mercator_scale(geoms) ** 2


def overlap_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(ia, ib)`` of polygons of ``a`` and ``b`` that overlap, with intersection areas.

    Candidates come from one vectorised STRtree query; pairs that only touch
    (zero intersection area) are dropped. Areas are in CRS units.
    """
    if a.size == 0 or b.size == 0:
        empty = np.empty(0, np.intp)
        return empty, empty, np.empty(0)
    ia, ib = shapely.STRtree(b).query(a, predicate="intersects")
    inter = shapely.area(shapely.intersection(a[ia], b[ib]))
    keep = inter > 0
    return ia[keep], ib[keep], inter[keep]


def coverage(n: int, index: np.ndarray, inter: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Share of each of ``n`` polygons covered: ``min(1, sum(inter) / area)`` over its pairs."""
    covered = np.bincount(index, weights=inter, minlength=n)
    out = np.zeros(n)
    np.divide(covered, area, out=out, where=area > 0)
    return np.minimum(out, 1.0)


def best_per(n: int, index: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Largest of ``values`` per polygon (0 where it has no pair)."""
    out = np.zeros(n)
    np.maximum.at(out, index, values)
    return out


def greedy_one_to_one(ia: np.ndarray, ib: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Accept pairs by decreasing ``score`` while both ends are free; returns a bool mask.

    Ties are broken by pair order (stable sort), so the result is deterministic.
    """
    accepted = np.zeros(score.size, dtype=bool)
    used_a: set[int] = set()
    used_b: set[int] = set()
    for k in np.argsort(-score, kind="stable"):
        a, b = int(ia[k]), int(ib[k])
        if a in used_a or b in used_b:
            continue
        used_a.add(a)
        used_b.add(b)
        accepted[k] = True
    return accepted


def inside_share(geoms: np.ndarray, footprint: BaseGeometry | None) -> np.ndarray:
    """Share of each polygon's area inside ``footprint`` (1 everywhere when ``None``)."""
    if footprint is None:
        return np.ones(geoms.size)
    area = shapely.area(geoms)
    inside = shapely.area(shapely.intersection(geoms, footprint))
    out = np.zeros(geoms.size)
    np.divide(inside, area, out=out, where=area > 0)
    return out


def translate(geoms: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Each geometry moved by its own ``(dx, dy)``, vectorised over coordinates."""
    moved = geoms.copy()
    coords, index = shapely.get_coordinates(moved, return_index=True)
    coords = coords + np.column_stack([dx, dy])[index]
    return shapely.set_coordinates(moved, coords)


def rotate(geoms: np.ndarray, angle_deg: float, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Each geometry turned by ``angle_deg`` (counter-clockwise) about its own ``(cx, cy)``,
    vectorised over coordinates."""
    a = np.radians(angle_deg)
    cos, sin = np.cos(a), np.sin(a)
    coords, index = shapely.get_coordinates(geoms, return_index=True)
    x, y = coords[:, 0] - cx[index], coords[:, 1] - cy[index]
    turned = np.column_stack([cx[index] + cos * x - sin * y, cy[index] + sin * x + cos * y])
    return shapely.set_coordinates(geoms.copy(), turned)


def pair_iou(inter: np.ndarray, area_a: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    """``inter / (area_a + area_b - inter)``."""
    union = area_a + area_b - inter
    out = np.zeros(inter.size)
    np.divide(inter, union, out=out, where=union > 0)
    return out
