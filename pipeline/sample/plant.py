"""Known errors planted into real open data, to measure what an audit finds.

From real footprints and the outline of the imagery, with a seed:

* **deleted**: a share of the buildings on the imagery is removed (the audit should
  report each as ``missing_in_opendata``);
* **phantom**: footprints are added where the imagery shows no building: the shape
  of a random real building, turned by a random angle, placed at a random spot of the
  imagery clear of every real building by ``clearance_m`` (``unsupported_by_imagery``);
* **shifted**: a share of the remaining buildings is moved by ``shift_m`` metres in a
  random direction (``misaligned``).

A building is *on the imagery* when at least ``on_imagery_share`` of its area lies
inside the imagery outline. Metric work happens in the local UTM zone; results are in
EPSG:4326. The same inputs and seed give the same planted errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from shapely import affinity
from shapely.geometry.base import BaseGeometry

from pipeline.errors import ConfigError, VectorDataError


@dataclass(frozen=True)
class PlantConfig:
    """How many errors of each kind, and how they look."""

    delete_share: float = 0.15
    phantom_share: float = 0.10
    shift_share: float = 0.10
    shift_m: tuple[float, float] = (2.0, 4.0)
    clearance_m: float = 3.0
    on_imagery_share: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("delete_share", "phantom_share", "shift_share", "on_imagery_share"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"PlantConfig.{name} must be within 0..1, got {value}")
        if not 0 <= self.shift_m[0] <= self.shift_m[1]:
            raise ConfigError(f"PlantConfig.shift_m must be (low, high) >= 0, got {self.shift_m}")


@dataclass(frozen=True)
class Planted:
    """The corrupted open data and the truth of what was planted (all EPSG:4326).

    ``opendata``: what the audit gets (``feature_id`` + geometry); ``deleted``,
    ``phantoms``: the removed and the added footprints; ``shifted``: the moved ones
    (``geometry`` as in the corrupted data, ``true_geometry`` where the building is);
    ``on_imagery``: the real footprints on the imagery (deleted ones included).
    """

    opendata: gpd.GeoDataFrame
    deleted: gpd.GeoDataFrame
    phantoms: gpd.GeoDataFrame
    shifted: gpd.GeoDataFrame
    on_imagery: gpd.GeoDataFrame


def plant_errors(
    footprints: gpd.GeoDataFrame, imagery: BaseGeometry, config: PlantConfig = PlantConfig()
) -> Planted:
    """Plant deleted, phantom and shifted buildings into ``footprints`` (a GeoDataFrame
    with ``feature_id``); ``imagery`` is the outline of the imagery in EPSG:4326."""
    if "feature_id" not in footprints.columns:
        raise VectorDataError("footprints: column 'feature_id' is missing")
    if footprints.crs is None:
        raise VectorDataError("footprints have no CRS")
    rng = np.random.default_rng(config.seed)
    frame = footprints[["feature_id", "geometry"]].to_crs("EPSG:4326").reset_index(drop=True)
    utm = frame.estimate_utm_crs()
    metric = frame.to_crs(utm)
    outline = gpd.GeoSeries([imagery], crs="EPSG:4326").to_crs(utm).iloc[0]
    geoms = metric.geometry.to_numpy()
    inside = shapely.area(shapely.intersection(geoms, outline)) / shapely.area(geoms)
    on = np.flatnonzero(inside >= config.on_imagery_share)
    if on.size == 0:
        raise VectorDataError("no footprint lies on the imagery: nothing to plant errors into")

    n_delete = _count(on.size, config.delete_share)
    deleted = rng.choice(on, size=n_delete, replace=False) if n_delete else np.empty(0, int)
    rest = np.setdiff1d(on, deleted)
    n_shift = min(_count(on.size, config.shift_share), rest.size)
    shifted = rng.choice(rest, size=n_shift, replace=False) if n_shift else np.empty(0, int)

    moved = geoms.copy()
    for i in shifted:
        dist = rng.uniform(*config.shift_m)
        angle = rng.uniform(0, 2 * math.pi)
        moved[i] = affinity.translate(geoms[i], dist * math.cos(angle), dist * math.sin(angle))

    phantoms = _phantoms(
        geoms, outline, _count(on.size, config.phantom_share), config.clearance_m, rng
    )
    keep = np.setdiff1d(np.arange(len(frame)), deleted)
    ids = frame["feature_id"].astype(str).to_numpy()
    corrupted = gpd.GeoDataFrame(
        {
            "feature_id": [*ids[keep], *(f"phantom-{k}" for k in range(len(phantoms)))],
            "geometry": [*moved[keep], *phantoms],
        },
        crs=utm,
    ).to_crs("EPSG:4326")

    def part(index: np.ndarray, geometry: np.ndarray | list) -> gpd.GeoDataFrame:
        return gpd.GeoDataFrame(
            {"feature_id": ids[index] if len(index) else []}, geometry=list(geometry), crs=utm
        ).to_crs("EPSG:4326")

    shifted_frame = part(shifted, moved[shifted])
    shifted_frame["true_geometry"] = part(shifted, geoms[shifted]).geometry.to_numpy()
    return Planted(
        opendata=corrupted,
        deleted=part(deleted, geoms[deleted]),
        phantoms=gpd.GeoDataFrame(
            {"feature_id": [f"phantom-{k}" for k in range(len(phantoms))]},
            geometry=phantoms,
            crs=utm,
        ).to_crs("EPSG:4326"),
        shifted=shifted_frame,
        on_imagery=part(on, geoms[on]),
    )


def _count(n: int, share: float) -> int:
    """``round(n * share)``, at least 1 when the share is positive."""
    return max(1, round(n * share)) if share > 0 else 0


def _phantoms(
    geoms: np.ndarray, outline: BaseGeometry, n: int, clearance: float, rng: np.random.Generator
) -> list[BaseGeometry]:
    """``n`` building-shaped polygons inside ``outline``, clear of every footprint by
    ``clearance`` (halved, down to 0.5 m, where a dense place leaves no room)."""
    tree = shapely.STRtree(geoms)
    out: list[BaseGeometry] = []
    minx, miny, maxx, maxy = outline.bounds
    while True:
        free = outline.difference(shapely.union_all(shapely.buffer(geoms, clearance)))
        attempts = 0
        while len(out) < n and attempts < 300 * max(n, 1):
            attempts += 1
            template = geoms[int(rng.integers(len(geoms)))]
            shape = affinity.rotate(template, rng.uniform(0, 360), origin="centroid")
            c = shape.centroid
            x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
            candidate = affinity.translate(shape, x - c.x, y - c.y)
            if not free.contains(candidate):
                continue
            if any(candidate.distance(p) < clearance for p in out):
                continue
            if len(tree.query(candidate.buffer(clearance), predicate="intersects")):
                continue
            out.append(candidate)
        if len(out) == n or clearance <= 0.5:
            break
        clearance = max(clearance / 2, 0.5)
    if len(out) < n:
        raise VectorDataError(
            f"only {len(out)} of {n} phantom footprints fit on the imagery clear of buildings"
        )
    return out
