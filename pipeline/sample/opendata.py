"""Open-data snapshots of the sample town with injected defects, and the truth record.

The snapshots mimic an OSM building layer: GeoJSON in EPSG:4326, one Polygon
per building with the string property ``id`` (stable across steps) and
``building = "yes"``. Step 0 holds every true step-0 building except the
omitted ones (misaligned ones displaced) plus the phantoms. Step 1 keeps all of
that, drops the reflected demolitions, keeps the stale ones, and adds the
reflected new buildings under new (higher) ids.

GeoJSON is written by hand (coordinates rounded to 1e-7 degrees, exteriors
counter-clockwise, keys in a fixed order) so the same seed gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import Polygon

from pipeline.sample.town import DefectPlan, Town

_RNG_IDS = 5
COORD_DECIMALS = 7

Role = Literal["mapped", "misaligned", "phantom", "stale_demolished", "added"]


@dataclass(frozen=True)
class OpenDataFeature:
    """One open-data polygon and what it really is."""

    opendata_id: str
    polygon: Polygon  # local metres
    truth_id: str | None  # None for a phantom
    role: Role


def snapshots(town: Town, plan: DefectPlan) -> tuple[list[OpenDataFeature], list[OpenDataFeature]]:
    """Open-data features of step 0 and step 1, sorted by id.

    Ids are distinct random 6-digit numbers: step-0 features draw from
    100000-799999 in random order (so an id says nothing about what it is),
    features added at step 1 from 800000-999999 (newer edits, higher ids).
    """
    rng = np.random.default_rng([town.seed, _RNG_IDS])
    step0 = town.buildings_at(0)
    kept = [b for b in step0 if b.truth_id not in plan.omitted]
    n0 = len(kept) + len(plan.phantoms)
    ids0 = (rng.choice(700_000, size=n0, replace=False) + 100_000).tolist()
    added = [
        b for b in town.buildings if b.truth_id in town.appeared and b.truth_id not in plan.stale
    ]
    ids1 = (rng.choice(200_000, size=len(added), replace=False) + 800_000).tolist()

    first: list[OpenDataFeature] = []
    for b, oid in zip(kept, ids0[: len(kept)], strict=True):
        mis = plan.misaligned.get(b.truth_id)
        if mis is not None:
            first.append(OpenDataFeature(str(oid), mis.polygon, b.truth_id, "misaligned"))
        else:
            first.append(OpenDataFeature(str(oid), b.footprint, b.truth_id, "mapped"))
    for poly, oid in zip(plan.phantoms, ids0[len(kept) :], strict=True):
        first.append(OpenDataFeature(str(oid), poly, None, "phantom"))

    second: list[OpenDataFeature] = []
    for f in first:
        if f.truth_id in town.demolished:
            if f.truth_id in plan.stale:
                second.append(
                    OpenDataFeature(f.opendata_id, f.polygon, f.truth_id, "stale_demolished")
                )
            continue
        second.append(f)
    for b, oid in zip(added, ids1, strict=True):
        second.append(OpenDataFeature(str(oid), b.footprint, b.truth_id, "added"))
    return sorted(first, key=lambda f: f.opendata_id), sorted(second, key=lambda f: f.opendata_id)


# ---------------------------------------------------------------- GeoJSON


def lonlat_converter(town: Town) -> Callable:
    """A function mapping a local-metre geometry to a WGS84 geometry (rounded, CCW)."""
    t = Transformer.from_crs(town.crs, "EPSG:4326", always_xy=True)
    ox, oy = town.origin

    def convert(xy: np.ndarray) -> np.ndarray:
        lon, lat = t.transform(xy[:, 0] + ox, xy[:, 1] + oy)
        return np.round(np.column_stack((lon, lat)), COORD_DECIMALS)

    def to_lonlat(geom):
        return shapely.orient_polygons(shapely.transform(geom, convert), exterior_cw=False)

    return to_lonlat


def town_bbox(town: Town) -> tuple[float, float, float, float]:
    """WGS84 ``(west, south, east, north)`` enclosing the town's UTM square."""
    t = Transformer.from_crs(town.crs, "EPSG:4326", always_xy=True)
    ox, oy = town.origin
    w, s, e, n = t.transform_bounds(ox, oy, ox + town.size_m, oy + town.size_m, densify_pts=21)
    return (
        round(w, COORD_DECIMALS),
        round(s, COORD_DECIMALS),
        round(e, COORD_DECIMALS),
        round(n, COORD_DECIMALS),
    )


def geometry_json(geom) -> dict:
    """GeoJSON geometry dict of a (Multi)Polygon, coordinates as plain floats."""

    def ring(r) -> list[list[float]]:
        return [[float(x), float(y)] for x, y in r.coords]

    def poly(p: Polygon) -> list:
        return [ring(p.exterior)] + [ring(i) for i in p.interiors]

    if geom.geom_type == "Polygon":
        return {"type": "Polygon", "coordinates": poly(geom)}
    if geom.geom_type == "MultiPolygon":
        return {"type": "MultiPolygon", "coordinates": [poly(p) for p in geom.geoms]}
    raise ValueError(f"geometry_json: {geom.geom_type} is not a polygon")


def write_feature_collection(path: Path, name: str, features: Sequence[tuple[dict, dict]]) -> None:
    """Write ``(properties, geometry)`` pairs as a compact GeoJSON FeatureCollection."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fc = {
        "type": "FeatureCollection",
        "name": name,
        "features": [{"type": "Feature", "properties": p, "geometry": g} for p, g in features],
    }
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(fc, f, separators=(",", ":"))
        f.write("\n")


def opendata_collection(
    features: Sequence[OpenDataFeature], to_lonlat: Callable
) -> list[tuple[dict, dict]]:
    return [
        ({"id": f.opendata_id, "building": "yes"}, geometry_json(to_lonlat(f.polygon)))
        for f in features
    ]


def truth_collection(town: Town, step: int, to_lonlat: Callable) -> list[tuple[dict, dict]]:
    return [
        (
            {
                "truth_id": b.truth_id,
                "category": b.category,
                "roof": b.roof,
                "height_m": round(b.height_m, 1),
            },
            geometry_json(to_lonlat(b.footprint)),
        )
        for b in town.buildings_at(step)
    ]


# ---------------------------------------------------------------- truth record


def truth_record(
    town: Town,
    plan: DefectPlan,
    steps: Sequence[str],
    opendata: tuple[list[OpenDataFeature], list[OpenDataFeature]],
    to_lonlat: Callable,
) -> dict:
    """The content of ``truth.json``: hotspots, defects per step, changes, counts.

    Defect geometries are where the building really is (the true footprint),
    except phantoms (the phantom polygon); a misaligned defect also carries the
    displaced open-data polygon in ``detail.opendata_geometry``.
    """
    by_id = town.by_id()
    od_of = {f.truth_id: f.opendata_id for f in opendata[0] + opendata[1] if f.truth_id is not None}
    phantom_ids = [f.opendata_id for f in opendata[0] if f.role == "phantom"]
    phantom_polys = {f.opendata_id: f.polygon for f in opendata[0] if f.role == "phantom"}

    def g(geom) -> dict:
        return geometry_json(to_lonlat(geom))

    hotspots = []
    step0 = town.buildings_at(0)
    for k, hs in enumerate(town.hotspots):
        members = [b for b in step0 if hs.contains(b.footprint.centroid)]
        n_om = sum(1 for b in members if plan.omitted.get(b.truth_id, -1) == k)
        hotspots.append(
            {
                "name": f"hotspot-{k + 1}",
                "geometry": g(hs),
                "diameter_m": round(2 * float(np.sqrt(hs.area / np.pi)), 1),
                "n_buildings": len(members),
                "n_omitted": n_om,
            }
        )

    defects: list[dict] = []
    for s, step in enumerate(steps):
        for tid in sorted(plan.omitted):
            k = plan.omitted[tid]
            defects.append(
                {
                    "step": step,
                    "kind": "omitted",
                    "truth_id": tid,
                    "opendata_id": None,
                    "geometry": g(by_id[tid].footprint),
                    "detail": {"hotspot": None if k is None else f"hotspot-{k + 1}"},
                }
            )
        for oid in phantom_ids:
            defects.append(
                {
                    "step": step,
                    "kind": "phantom",
                    "truth_id": None,
                    "opendata_id": oid,
                    "geometry": g(phantom_polys[oid]),
                    "detail": {"area_m2": round(phantom_polys[oid].area, 1)},
                }
            )
        for tid in sorted(plan.misaligned):
            m = plan.misaligned[tid]
            defects.append(
                {
                    "step": step,
                    "kind": "misaligned",
                    "truth_id": tid,
                    "opendata_id": od_of[tid],
                    "geometry": g(by_id[tid].footprint),
                    "detail": {
                        "mode": m.mode,
                        "dx_m": round(m.dx_m, 2),
                        "dy_m": round(m.dy_m, 2),
                        "angle_deg": round(m.angle_deg, 2),
                        "max_displacement_m": round(m.max_displacement_m, 2),
                        "opendata_geometry": g(m.polygon),
                    },
                }
            )
        if s == 0:
            continue
        for tid in sorted(plan.stale):
            new = tid in town.appeared
            defects.append(
                {
                    "step": step,
                    "kind": "stale",
                    "truth_id": tid,
                    "opendata_id": None if new else od_of[tid],
                    "geometry": g(by_id[tid].footprint),
                    "detail": {"subkind": "new_missing" if new else "demolished_still_mapped"},
                }
            )

    changes = []
    for tid in sorted(town.appeared | town.demolished):
        reflected = tid not in plan.stale
        changes.append(
            {
                "step": steps[1],
                "from_step": steps[0],
                "kind": "appeared" if tid in town.appeared else "disappeared",
                "truth_id": tid,
                "geometry": g(by_id[tid].footprint),
                "reflected_in_opendata": reflected,
                "opendata_id": od_of.get(tid),
            }
        )

    def kinds(step: str) -> dict[str, int]:
        out = {"omitted": 0, "phantom": 0, "misaligned": 0, "stale": 0}
        for d in defects:
            if d["step"] == step:
                out[d["kind"]] += 1
        return out

    counts = {
        "buildings": {step: len(town.buildings_at(s)) for s, step in enumerate(steps)},
        "opendata_features": {step: len(opendata[s]) for s, step in enumerate(steps)},
        "defects": {step: kinds(step) for step in steps},
        "changes": {
            "appeared": len(town.appeared),
            "disappeared": len(town.demolished),
            "stale": len(plan.stale),
        },
        "trees": len(town.trees),
    }

    def geometry_last(d: dict) -> dict:
        return {k: v for k, v in d.items() if k != "geometry"} | {"geometry": d["geometry"]}

    return {
        "hotspots": [geometry_last(h) for h in hotspots],
        "defects": [geometry_last(d) for d in defects],
        "changes": [geometry_last(c) for c in changes],
        "counts": counts,
    }
