"""Layout of the synthetic sample town: roads, blocks, buildings, trees, changes, defects.

Everything here is in *local metres*: x east, y north, origin at the town's
south-west corner; :attr:`Town.origin` is that corner in the UTM CRS
:attr:`Town.crs`. Nothing here touches pixels or files, so tests can check the
layout of a full 1 km² town in well under a second per step.

Random streams are split by purpose (``default_rng([seed, k])``): the layout,
the changes, the trees and the defects each draw from their own stream, so a
tweak to one never reshuffles the others.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import LineString, Point, Polygon, box
from shapely.prepared import prep

CENTER_LONLAT = (8.55, 47.37)
UTM_CRS = "EPSG:32632"

Zone = Literal["centre", "residential", "industrial", "park", "field"]
RoofKind = Literal["gable", "hip", "flat"]
Category = Literal["house", "shed", "apartment", "commercial", "warehouse"]

# Stream ids for np.random.default_rng([seed, k]).
_RNG_LAYOUT, _RNG_CHANGES, _RNG_TREES, _RNG_DEFECTS = 1, 2, 3, 6

ROOF_COLOURS: dict[str, tuple[int, int, int]] = {
    "terracotta": (176, 86, 60),
    "terracotta_dark": (146, 70, 52),
    "grey": (128, 128, 132),
    "slate": (68, 72, 80),
    "brown": (112, 82, 62),
    "light": (212, 210, 204),
    "white": (232, 232, 228),
    "metal": (168, 178, 188),
    "gravel": (150, 146, 138),
}
_PALETTE_PITCHED = (
    ("terracotta", 0.34),
    ("terracotta_dark", 0.14),
    ("grey", 0.14),
    ("slate", 0.18),
    ("brown", 0.15),
    ("light", 0.05),
)
_PALETTE_FLAT = (
    ("light", 0.3),
    ("white", 0.15),
    ("gravel", 0.25),
    ("grey", 0.2),
    ("slate", 0.1),
)
_PALETTE_WAREHOUSE = (("metal", 0.35), ("white", 0.25), ("light", 0.2), ("grey", 0.2))

# (x0, y0, x1, y1, ridge axis) of one rectangle of a roof, in the building frame.
RoofPart = tuple[float, float, float, float, str]


@dataclass(frozen=True)
class Road:
    """A road centreline with its carriageway and sidewalk polygons."""

    line: LineString
    width_m: float
    kind: Literal["main", "local"]
    polygon: Polygon
    sidewalk: Polygon


@dataclass(frozen=True)
class Block:
    """Land between roads, with its land use."""

    polygon: Polygon
    zone: Zone
    angle_deg: float  # direction of the block's longest edge


@dataclass(frozen=True)
class Building:
    """One true building.

    The building frame has x along the street frontage and y pointing away
    from the street; ``world = (cx, cy) + R(angle) @ frame``.
    """

    truth_id: str
    cx: float
    cy: float
    angle_deg: float
    outline: tuple[tuple[float, float], ...]  # footprint vertices, building frame
    parts: tuple[RoofPart, ...]  # rectangles whose union is the footprint
    category: Category
    zone: Zone
    roof: RoofKind
    colour: tuple[int, int, int]
    height_m: float
    footprint: Polygon  # local metres
    driveway: Polygon | None

    def to_world(self, pts: np.ndarray) -> np.ndarray:
        """Frame coordinates ``(n, 2)`` to local metres."""
        a = math.radians(self.angle_deg)
        c, s = math.cos(a), math.sin(a)
        pts = np.asarray(pts, dtype=float)
        return np.column_stack(
            (self.cx + c * pts[:, 0] - s * pts[:, 1], self.cy + s * pts[:, 0] + c * pts[:, 1])
        )


@dataclass(frozen=True)
class Tree:
    """A tree crown (lobed disc) with the height that sets its shadow."""

    x: float
    y: float
    radius_m: float
    height_m: float
    shade: int  # index into the renderer's green palette
    crown: Polygon


@dataclass(frozen=True)
class Town:
    """The whole synthetic world over two time steps (index 0 and 1)."""

    seed: int
    size_m: float
    resolution_m: float
    width_px: int
    origin: tuple[float, float]  # UTM easting/northing of the local (0, 0)
    crs: str
    roads: tuple[Road, ...]
    blocks: tuple[Block, ...]
    buildings: tuple[Building, ...]  # every building that exists at step 0 or 1
    appeared: frozenset[str]  # built between step 0 and 1
    demolished: frozenset[str]  # torn down between step 0 and 1
    trees: tuple[Tree, ...]
    paved: tuple[Polygon, ...]  # plazas, yards
    parking: tuple[tuple[Polygon, float], ...]  # parking lots with stall direction (deg)
    paths: tuple[Polygon, ...]  # gravel paths in parks
    hotspots: tuple[Polygon, ...]  # areas of heavy omission in the open data

    def buildings_at(self, step: int) -> list[Building]:
        """True buildings standing at step ``0`` or ``1``."""
        if step == 0:
            return [b for b in self.buildings if b.truth_id not in self.appeared]
        return [b for b in self.buildings if b.truth_id not in self.demolished]

    def by_id(self) -> dict[str, Building]:
        return {b.truth_id: b for b in self.buildings}

    def to_utm(self, geom):
        """Local metres to UTM coordinates (a translation)."""
        return shapely.transform(geom, lambda xy: xy + np.asarray(self.origin))


@dataclass(frozen=True)
class Misalignment:
    """How an open-data polygon is displaced from its true footprint."""

    mode: Literal["shift", "rotate"]
    dx_m: float
    dy_m: float
    angle_deg: float
    polygon: Polygon  # the displaced polygon, local metres
    max_displacement_m: float


@dataclass(frozen=True)
class DefectPlan:
    """Which open-data errors to inject (steps share all but the stale ones)."""

    omitted: Mapping[str, int | None]  # truth_id -> hotspot index (None = scattered)
    phantoms: tuple[Polygon, ...]
    misaligned: Mapping[str, Misalignment]
    stale: frozenset[str]  # truth_ids of changes the step-1 open data misses


# ---------------------------------------------------------------- helpers


def utm_origin(size_m: float) -> tuple[float, float]:
    """South-west corner of a town of ``size_m`` centred on :data:`CENTER_LONLAT`.

    Rounded to whole 10 m so the raster transform is clean.
    """
    t = Transformer.from_crs("EPSG:4326", UTM_CRS, always_xy=True)
    e, n = t.transform(*CENTER_LONLAT)
    return (round((e - size_m / 2) / 10) * 10.0, round((n - size_m / 2) / 10) * 10.0)


def _polys(geom) -> list[Polygon]:
    if geom.is_empty:
        return []
    if isinstance(geom, Polygon):
        return [geom]
    return [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon) and not g.is_empty]


def _pick(rng: np.random.Generator, table: Iterable[tuple[str, float]]) -> str:
    names, weights = zip(*table, strict=True)
    w = np.asarray(weights, dtype=float)
    return str(names[int(rng.choice(len(names), p=w / w.sum()))])


def _jitter_colour(rng: np.random.Generator, name: str) -> tuple[int, int, int]:
    base = np.asarray(ROOF_COLOURS[name], dtype=float)
    c = base * rng.uniform(0.9, 1.08) + rng.normal(0, 5, 3)
    return tuple(int(v) for v in np.clip(c, 20, 245))  # type: ignore[return-value]


def _longest_edge_angle(poly: Polygon) -> float:
    c = np.asarray(poly.minimum_rotated_rectangle.exterior.coords)
    d = np.diff(c[:3], axis=0)
    k = int(np.argmax(np.hypot(d[:, 0], d[:, 1])))
    return math.degrees(math.atan2(d[k, 1], d[k, 0])) % 180.0


# ---------------------------------------------------------------- roads


def _roads(rng: np.random.Generator, S: float) -> list[Road]:
    """A rotated grid, plus a diagonal avenue (S >= 500) and a curved road (S >= 700)."""
    theta = math.radians(rng.uniform(8, 22) * rng.choice([-1, 1]))
    u = np.array([math.cos(theta), math.sin(theta)])
    v = np.array([-u[1], u[0]])
    c = np.array([S / 2, S / 2])
    lines: list[tuple[LineString, str]] = []
    for axis, across, (lo, hi) in ((u, v, (100, 150)), (v, u, (90, 140))):
        p = -0.75 * S + rng.uniform(0, 60)
        while p < 0.75 * S:
            mid = c + across * p
            line = LineString([mid - axis * 1.6 * S, mid + axis * 1.6 * S])
            lines.append((line, "main" if rng.random() < 0.35 else "local"))
            p += rng.uniform(lo, hi)
    if S >= 500:
        phi = theta + math.radians(rng.uniform(35, 55) * rng.choice([-1, 1]))
        w = np.array([math.cos(phi), math.sin(phi)])
        mid = c + rng.uniform(-0.15, 0.15, 2) * S
        lines.append((LineString([mid - w * 1.6 * S, mid + w * 1.6 * S]), "main"))
    if S >= 700:
        corner = np.array([rng.choice([0.0, S]), rng.choice([0.0, S])])
        ctr = corner + rng.uniform(-0.15, 0.15, 2) * S
        r = rng.uniform(0.5, 0.7) * S
        a = np.radians(np.arange(0, 360.0, 1.5))
        arc = LineString(np.column_stack((ctr[0] + r * np.cos(a), ctr[1] + r * np.sin(a))))
        lines.append((arc, "local"))
    extent = box(-20, -20, S + 20, S + 20)
    roads = []
    for line, kind in lines:
        clipped = line.intersection(extent)
        if clipped.is_empty or clipped.length < 30:
            continue
        merged = shapely.line_merge(clipped) if clipped.geom_type == "MultiLineString" else clipped
        for part in getattr(merged, "geoms", [merged]):
            if part.length < 30:
                continue
            width = rng.uniform(10, 12.5) if kind == "main" else rng.uniform(6.5, 8)
            sw = 2.6 if kind == "main" else 1.8
            roads.append(
                Road(
                    line=part,
                    width_m=float(width),
                    kind=kind,  # type: ignore[arg-type]
                    polygon=part.buffer(width / 2, cap_style="flat"),
                    sidewalk=part.buffer(width / 2 + sw, cap_style="flat"),
                )
            )
    return roads


def _blocks(rng: np.random.Generator, S: float, roads: list[Road]) -> list[Block]:
    """Land between the roads, zoned: a centre, an industrial corner, parks, housing."""
    land = box(0, 0, S, S).difference(shapely.union_all([r.sidewalk for r in roads]))
    polys = [p for p in _polys(land) if p.area >= 250]
    centre = np.array([S / 2, S / 2]) + rng.uniform(-0.1, 0.1, 2) * S
    corner = np.array([rng.choice([0.0, S]), rng.choice([0.0, S])])
    zones: list[str] = []
    for p in polys:
        c = np.array(p.centroid.coords[0])
        if S >= 500 and np.hypot(*(c - corner)) < 0.3 * S:
            zones.append("industrial")
        elif np.hypot(*(c - centre)) < 0.2 * S:
            zones.append("centre")
        else:
            zones.append("residential")
    resid = [
        i for i, z in enumerate(zones) if z == "residential" and 3000 <= polys[i].area <= 25000
    ]
    n_parks = 0 if len(resid) < 6 else (1 if S < 800 else 2)
    for i in rng.choice(resid, size=min(n_parks, len(resid)), replace=False) if resid else []:
        zones[int(i)] = "park"
    return [
        Block(polygon=p, zone=z, angle_deg=_longest_edge_angle(p))  # type: ignore[arg-type]
        for p, z in zip(polys, zones, strict=True)
    ]


# ---------------------------------------------------------------- buildings


@dataclass(frozen=True)
class _Spec:
    """A building shape in its frame, before it is placed."""

    length: float  # along the frontage
    depth: float  # total extent away from the street
    outline: tuple[tuple[float, float], ...]
    parts: tuple[RoofPart, ...]
    category: Category
    roof: RoofKind
    colour: tuple[int, int, int]
    height_m: float


def _shape(rng: np.random.Generator, L: float, W: float, kind: str) -> tuple[tuple, tuple]:
    """Outline and roof parts of a rectangle, an L or a T, front edge at y = 0."""
    if kind == "rect":
        return ((0, 0), (L, 0), (L, W), (0, W)), ((0, 0, L, W, "x" if L >= W else "y"),)
    ww = float(rng.uniform(5.5, max(6.0, min(0.5 * L, 11))))
    d = float(rng.uniform(4, 10))
    ridge_main = "x" if L >= W else "y"
    if kind == "L":
        if rng.random() < 0.5:  # wing at the right end
            outline = ((0, 0), (L, 0), (L, W + d), (L - ww, W + d), (L - ww, W), (0, W))
            wing = (L - ww, W, L, W + d, "y")
        else:
            outline = ((0, 0), (L, 0), (L, W), (ww, W), (ww, W + d), (0, W + d))
            wing = (0, W, ww, W + d, "y")
    else:  # T
        a = (L - ww) / 2
        outline = ((0, 0), (L, 0), (L, W), (a + ww, W), (a + ww, W + d), (a, W + d), (a, W), (0, W))
        wing = (a, W, a + ww, W + d, "y")
    # The wing overlaps the main part by 0.5 m so the roof has no seam.
    wing = (wing[0], wing[1] - 0.5, wing[2], wing[3], wing[4])
    return outline, ((0, 0, L, W, ridge_main), wing)


def _spec(rng: np.random.Generator, zone: Zone, *, interior: bool = False) -> _Spec:
    """Draw a building for a zone; sizes are clamped to 6-40 m."""
    r = rng.random()
    if zone == "industrial":
        if r < 0.7:
            cat, L, W, kind = "warehouse", rng.uniform(24, 40), rng.uniform(15, 28), "rect"
            if rng.random() < 0.2:
                kind = "L"
        else:
            cat, L, W, kind = "commercial", rng.uniform(12, 20), rng.uniform(9, 14), "rect"
    elif zone == "centre":
        cat = "apartment" if r < 0.6 else "commercial"
        L, W = rng.uniform(14, 30), rng.uniform(10, 15)
        kind = "L" if rng.random() < 0.3 else ("T" if rng.random() < 0.1 else "rect")
    elif interior:
        cat, L, W, kind = "shed", rng.uniform(6, 8.5), rng.uniform(6, 7.5), "rect"
    else:
        cat = "house"
        L, W = rng.uniform(8.5, 16), rng.uniform(7.5, 12)
        kind = "L" if r < 0.25 else ("T" if r < 0.3 else "rect")
    L, W = float(np.clip(L, 6, 40)), float(np.clip(W, 6, 40))
    outline, parts = _shape(rng, L, W, kind)
    depth = max(p[3] for p in parts)
    if cat == "warehouse":
        roof, colour = "flat", _jitter_colour(rng, _pick(rng, _PALETTE_WAREHOUSE))
        height = float(rng.uniform(7, 11))
    elif cat in ("apartment", "commercial"):
        roof = "flat" if rng.random() < (0.45 if cat == "apartment" else 0.7) else "gable"
        palette = _PALETTE_FLAT if roof == "flat" else _PALETTE_PITCHED
        colour, height = _jitter_colour(rng, _pick(rng, palette)), float(rng.uniform(9, 17))
    elif cat == "shed":
        roof = "flat" if rng.random() < 0.5 else "gable"
        palette = _PALETTE_FLAT if roof == "flat" else _PALETTE_PITCHED
        colour, height = _jitter_colour(rng, _pick(rng, palette)), 3.0
    else:
        rr = rng.random()
        roof = "gable" if rr < 0.68 else ("hip" if rr < 0.9 else "flat")
        palette = _PALETTE_FLAT if roof == "flat" else _PALETTE_PITCHED
        colour, height = _jitter_colour(rng, _pick(rng, palette)), float(rng.uniform(6, 9.5))
    # Centre the frame on the main rectangle: x in [-L/2, L/2], front at y = -W/2.
    ox, oy = L / 2, W / 2
    outline = tuple((x - ox, y - oy) for x, y in outline)
    parts = tuple((a - ox, b - oy, c - ox, d - oy, ax) for a, b, c, d, ax in parts)
    return _Spec(L, depth, outline, parts, cat, roof, colour, height)  # type: ignore[arg-type]


def _place(spec: _Spec, cx: float, cy: float, angle_deg: float) -> Polygon:
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    pts = np.asarray(spec.outline, dtype=float)
    return Polygon(
        np.column_stack((cx + c * pts[:, 0] - s * pts[:, 1], cy + s * pts[:, 0] + c * pts[:, 1]))
    )


@dataclass(frozen=True)
class _Placed:
    spec: _Spec
    cx: float
    cy: float
    angle_deg: float
    footprint: Polygon
    zone: Zone
    driveway: Polygon | None


_SETBACK = {"residential": (4.0, 7.0), "centre": (1.5, 3.0), "industrial": (5.0, 8.0)}
_GAP = {"residential": (3.5, 12.0), "centre": (2.0, 5.0), "industrial": (8.0, 16.0)}
_CLEAR = {"residential": 3.0, "centre": 2.0, "industrial": 4.0}


def _fill_block(rng: np.random.Generator, block: Block) -> tuple[list[_Placed], list]:
    """Buildings along the block's frontage, then a few in its interior.

    Returns the buildings and extra land-use polygons ``("paved"|"parking", poly, angle)``.
    """
    zone = block.zone
    extras: list = []
    if zone == "park":
        return [], extras
    setback = float(rng.uniform(*_SETBACK[zone]))
    inner = block.polygon.buffer(-setback, join_style="mitre", mitre_limit=2.0)
    inner = shapely.orient_polygons(inner.simplify(1.0))
    if inner.is_empty:
        return [], extras
    inner_p = prep(inner)
    placed: list[_Placed] = []
    geoms: list[Polygon] = []
    clear = _CLEAR[zone]

    def fits(fp: Polygon) -> bool:
        if not inner_p.contains(fp):
            return False
        return not geoms or not bool(np.any(shapely.dwithin(fp, np.asarray(geoms), clear)))

    for poly in _polys(inner):
        coords = np.asarray(poly.exterior.coords)
        for p0, p1 in zip(coords[:-1], coords[1:], strict=True):
            seg = p1 - p0
            seg_len = float(np.hypot(*seg))
            if seg_len < 10:
                continue
            u = seg / seg_len
            n = np.array([-u[1], u[0]])
            angle = math.degrees(math.atan2(u[1], u[0]))
            t = float(rng.uniform(0.5, 5.0))
            while True:
                spec = _spec(rng, zone)
                if t + spec.length > seg_len:
                    break
                extra = float(rng.uniform(0, 1.5))
                ctr = p0 + u * (t + spec.length / 2) + n * (spec.parts[0][3] + extra)
                a = angle + float(rng.normal(0, 1.0))
                fp = _place(spec, ctr[0], ctr[1], a)
                if fits(fp):
                    drive = None
                    if spec.category == "house" and rng.random() < 0.6:
                        # From the front wall to the block edge (sidewalk), 3 m wide.
                        x0 = float(rng.uniform(-spec.length / 2, spec.length / 2 - 3))
                        back = -spec.parts[0][3]
                        dpts = np.array(
                            [
                                (x0, back),
                                (x0 + 3, back),
                                (x0 + 3, back - setback - extra - 0.5),
                                (x0, back - setback - extra - 0.5),
                            ]
                        )
                        c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
                        drive = Polygon(
                            np.column_stack(
                                (
                                    ctr[0] + c * dpts[:, 0] - s * dpts[:, 1],
                                    ctr[1] + s * dpts[:, 0] + c * dpts[:, 1],
                                )
                            )
                        ).intersection(block.polygon)
                        drive = drive if isinstance(drive, Polygon) and not drive.is_empty else None
                    placed.append(_Placed(spec, float(ctr[0]), float(ctr[1]), a, fp, zone, drive))
                    geoms.append(fp)
                    t += spec.length + float(rng.uniform(*_GAP[zone]))
                else:
                    t += float(rng.uniform(1.0, 3.0))

    # Parking lots and yards first, so interior buildings stay clear of them.
    if zone == "industrial":
        extras.append(("paved", block.polygon.buffer(-1.0), 0.0))
    elif zone == "centre":
        extras.append(("paved", block.polygon.difference(inner), 0.0))
    if zone in ("centre", "residential") and rng.random() < (0.6 if zone == "centre" else 0.2):
        for _ in range(30):
            lot_spec = (float(rng.uniform(18, 32)), float(rng.uniform(14, 24)))
            x, y = _random_point(rng, inner)
            lot = _oriented_rect(x, y, *lot_spec, block.angle_deg)
            if fits(lot):
                extras.append(("parking", lot, block.angle_deg))
                geoms.append(lot)
                break

    # Interior: sheds behind houses, courtyard buildings, more warehouses.
    tries = int(inner.area / (350 if zone == "residential" else 600))
    for _ in range(tries):
        spec = _spec(rng, zone, interior=True)
        x, y = _random_point(rng, inner)
        a = block.angle_deg + float(rng.normal(0, 2))
        if rng.random() < 0.15:
            a = float(rng.uniform(0, 180))
        fp = _place(spec, x, y, a)
        if fits(fp):
            placed.append(_Placed(spec, x, y, a, fp, zone, None))
            geoms.append(fp)
    return placed, extras


def _random_point(rng: np.random.Generator, poly) -> tuple[float, float]:
    x0, y0, x1, y1 = poly.bounds
    pp = prep(poly)
    for _ in range(200):
        x, y = float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))
        if pp.contains(Point(x, y)):
            return x, y
    c = poly.representative_point()
    return float(c.x), float(c.y)


def _oriented_rect(cx: float, cy: float, L: float, W: float, angle_deg: float) -> Polygon:
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    pts = np.array([(-L / 2, -W / 2), (L / 2, -W / 2), (L / 2, W / 2), (-L / 2, W / 2)])
    return Polygon(
        np.column_stack((cx + c * pts[:, 0] - s * pts[:, 1], cy + s * pts[:, 0] + c * pts[:, 1]))
    )


def _settle(
    rng: np.random.Generator,
    S: float,
    blocks: list[Block],
    filled: list[tuple[list[_Placed], list]],
    keep_total: int,
) -> tuple[list[Block], list[_Placed], list]:
    """Keep ``keep_total`` buildings: a built-up core, farmland at the fringe.

    Blocks are taken in order (centre and industrial first, then housing by
    distance from the centre, with noise) until the count is reached; the
    blocks left over become fields. About 10 % of the houses and sheds of the
    built blocks are then dropped at random (empty lots), more if the last
    block overshot.
    """
    centre = [b.polygon.centroid for b in blocks if b.zone == "centre"]
    cx, cy = (
        (np.mean([c.x for c in centre]), np.mean([c.y for c in centre]))
        if centre
        else (S / 2, S / 2)
    )

    def rank(i: int) -> float:
        b = blocks[i]
        if b.zone in ("centre", "industrial"):
            return -1.0
        c = b.polygon.centroid
        return math.hypot(c.x - cx, c.y - cy) + float(rng.normal(0, 0.12 * S))

    keys = {i: rank(i) for i in range(len(blocks))}
    order = sorted(range(len(blocks)), key=lambda i: (keys[i], i))
    budget = keep_total / 0.9
    used: set[int] = set()
    count = 0
    for i in order:
        if count >= budget and blocks[i].zone == "residential":
            continue
        used.add(i)
        count += len(filled[i][0])
    out_blocks: list[Block] = []
    placed: list[_Placed] = []
    extras: list = []
    for i, b in enumerate(blocks):
        if i in used or b.zone == "park":
            out_blocks.append(b)
            placed += filled[i][0]
            extras += filled[i][1]
        else:
            out_blocks.append(Block(polygon=b.polygon, zone="field", angle_deg=b.angle_deg))
    if len(placed) > keep_total:
        droppable = [i for i, p in enumerate(placed) if p.spec.category in ("house", "shed")]
        k = min(len(droppable), len(placed) - keep_total)
        drop = set(rng.choice(droppable, size=k, replace=False).tolist())
        placed = [p for i, p in enumerate(placed) if i not in drop]
    return out_blocks, placed, extras


# ---------------------------------------------------------------- hotspots and changes


def hotspot_diameter(rng: np.random.Generator, S: float) -> float:
    """100-150 m in a 1 km town; scaled with the town, never below 60 m."""
    return float(np.clip(S * rng.uniform(0.10, 0.15), 60.0, 150.0))


def _hotspots(
    rng: np.random.Generator, S: float, placed: list[_Placed], n: int = 3
) -> list[Polygon]:
    """``n`` separate discs centred on the denser built-up places.

    Candidate centres are building centroids at least ``r + 10`` m inside the
    town whose disc holds more buildings than 60 % of candidates; centres are
    at least 2.3 radii apart. Relaxed step by step when a small town has no
    room (down to 2 m from the edge, 2 radii apart, any zone).
    """
    cents = np.array([(p.footprint.centroid.x, p.footprint.centroid.y) for p in placed])
    eligible = np.array([p.zone in ("residential", "centre") for p in placed])
    radii = [hotspot_diameter(rng, S) / 2 for _ in range(n)]
    r_max = max(radii)
    counts = np.array([np.sum(np.hypot(*(cents - c).T) < r_max) for c in cents])
    levels = (  # (edge margin, separation in radii, density quantile, zones restricted)
        (10.0, 2.3, 0.6, True),
        (10.0, 2.3, 0.3, True),
        (10.0, 2.1, 0.0, True),
        (2.0, 2.0, 0.0, False),
    )
    for margin, sep, quantile, zoned in levels:
        inside = np.all((cents > r_max + margin) & (cents < S - r_max - margin), axis=1)
        ok = inside & eligible if zoned else inside
        if not ok.any():
            continue
        dense = ok & (counts >= np.quantile(counts[ok], quantile))
        cand = np.flatnonzero(dense)
        for _ in range(100):
            chosen: list[np.ndarray] = []
            for i in rng.permutation(cand):
                c = cents[i]
                if all(np.hypot(*(c - c2)) >= sep * r_max for c2 in chosen):
                    chosen.append(c)
                    if len(chosen) == n:
                        return [
                            Point(*c).buffer(r, quad_segs=16)
                            for c, r in zip(chosen, radii, strict=True)
                        ]
    return []


# ---------------------------------------------------------------- trees


def _crown(rng: np.random.Generator, x: float, y: float, r: float) -> Polygon:
    a = np.linspace(0, 2 * np.pi, 22, endpoint=False)
    k = r * (
        1
        + 0.12 * np.sin(3 * a + rng.uniform(0, 6.3))
        + 0.07 * np.sin(5 * a + rng.uniform(0, 6.3))
        + rng.normal(0, 0.04, a.size)
    )
    return Polygon(np.column_stack((x + k * np.cos(a), y + k * np.sin(a))))


def _trees(
    rng: np.random.Generator,
    S: float,
    roads: list[Road],
    blocks: list[Block],
    buildings: list[Building],
    keep_clear: list[Polygon],
) -> list[Tree]:
    """Street trees, park groves and garden trees.

    A crown may hang over a building, but a trunk never stands inside one, and
    no tree grows where a building will be built (``keep_clear``).
    """
    fps = np.asarray([b.footprint for b in buildings])
    tree_fp = shapely.STRtree(fps)
    clear_geom = shapely.union_all(keep_clear) if keep_clear else Polygon()
    clear_p = prep(clear_geom)
    road_p = prep(shapely.union_all([r.polygon for r in roads]))
    trunks: list[tuple[float, float, float]] = []

    def ok(x: float, y: float, r: float, min_build: float) -> bool:
        if not (1 <= x <= S - 1 and 1 <= y <= S - 1):
            return False
        pt = Point(x, y)
        if road_p.contains(pt) or clear_p.intersects(pt.buffer(r)):
            return False
        near = tree_fp.query(pt, predicate="dwithin", distance=min_build)
        return len(near) == 0

    for road in roads:
        if rng.random() > (0.7 if road.kind == "main" else 0.35):
            continue
        spacing = float(rng.uniform(9, 14))
        for side in (-1, 1):
            off = road.line.offset_curve(
                side * (road.width_m / 2 + (2.6 if road.kind == "main" else 1.8) + 1.2)
            )
            if off.is_empty:
                continue
            for line in getattr(off, "geoms", [off]):
                for d in np.arange(rng.uniform(0, spacing), line.length, spacing):
                    p = line.interpolate(d)
                    r = float(rng.uniform(2.2, 3.6))
                    if ok(p.x, p.y, r, 1.5):
                        trunks.append((p.x, p.y, r))
    for block in blocks:
        if block.zone == "field":
            edge = block.polygon.buffer(-2.0).exterior if block.polygon.area > 2000 else None
            if edge is not None and rng.random() < 0.5:  # a hedgerow
                for d in np.cumsum(rng.uniform(5, 30, int(edge.length / 8))):
                    if d > edge.length:
                        break
                    p = edge.interpolate(d)
                    r = float(rng.uniform(2.0, 4.0))
                    if ok(p.x, p.y, r, 2.0):
                        trunks.append((p.x, p.y, r))
            continue
        density = {"park": 80.0, "residential": 330.0, "centre": 900.0, "industrial": 1600.0}[
            block.zone
        ]
        n = int(block.polygon.area / density * rng.uniform(0.6, 1.4))
        inside = block.polygon.buffer(-1.0)
        if inside.is_empty:
            continue
        for _ in range(n):
            x, y = _random_point(rng, inside)
            r = float(rng.uniform(2.0, 5.0) if block.zone == "park" else rng.uniform(1.8, 4.5))
            if not ok(x, y, r, 1.0):
                continue
            if block.zone == "park" and any(
                math.hypot(x - a, y - b) < 0.9 * (r + c) for a, b, c in trunks[-40:]
            ):
                continue
            trunks.append((x, y, r))
    return [
        Tree(
            x=float(x),
            y=float(y),
            radius_m=r,
            height_m=float(rng.uniform(6, 14)),
            shade=int(rng.integers(0, 4)),
            crown=_crown(rng, x, y, r),
        )
        for x, y, r in trunks
    ]


# ---------------------------------------------------------------- the town


def build_town(seed: int = 7, size_m: float = 1000.0, resolution_m: float = 0.4) -> Town:
    """Lay out the town (both steps): roads, blocks, buildings, trees, hotspots, changes.

    Building count targets 520-600 per km² at step 0; ~4-6 % of that count is
    built between the steps (on lots empty at step 0) and ~3-5 % demolished,
    all outside the omission hotspots.
    """
    width_px = int(round(size_m / resolution_m))
    S = width_px * resolution_m
    rng = np.random.default_rng([seed, _RNG_LAYOUT])
    roads = _roads(rng, S)
    blocks = _blocks(rng, S, roads)
    filled = [_fill_block(rng, block) for block in blocks]

    crng = np.random.default_rng([seed, _RNG_CHANGES])
    n_target = int(round(crng.uniform(520, 600) * (S / 1000.0) ** 2))
    n_new = max(1, int(round(crng.uniform(0.045, 0.055) * n_target)))
    n_gone = max(1, int(round(crng.uniform(0.035, 0.045) * n_target)))
    keep_total = n_target + n_new
    blocks, placed, extras = _settle(crng, S, blocks, filled, keep_total)
    hotspots = _hotspots(crng, S, placed)
    hot = shapely.union_all([h.buffer(5) for h in hotspots]) if hotspots else Polygon()
    hot_p = prep(hot)
    outside = [i for i, p in enumerate(placed) if not hot_p.intersects(p.footprint)]
    new_cand = [
        i
        for i in outside
        if placed[i].spec.category in ("house", "apartment", "commercial", "shed")
    ]
    new_idx = set(crng.choice(new_cand, size=min(n_new, len(new_cand)), replace=False).tolist())
    gone_cand = [i for i in outside if i not in new_idx]
    gone_idx = set(crng.choice(gone_cand, size=min(n_gone, len(gone_cand)), replace=False).tolist())

    buildings = [
        Building(
            truth_id=f"b{i + 1:05d}",
            cx=p.cx,
            cy=p.cy,
            angle_deg=p.angle_deg,
            outline=p.spec.outline,
            parts=p.spec.parts,
            category=p.spec.category,
            zone=p.zone,
            roof=p.spec.roof,
            colour=p.spec.colour,
            height_m=p.spec.height_m,
            footprint=p.footprint,
            driveway=p.driveway,
        )
        for i, p in enumerate(placed)
    ]
    appeared = frozenset(buildings[i].truth_id for i in new_idx)
    demolished = frozenset(buildings[i].truth_id for i in gone_idx)

    paved = [g for kind, g, _ in extras if kind == "paved" and not g.is_empty]
    parking = [(g, a) for kind, g, a in extras if kind == "parking"]
    paths = []
    for block in blocks:
        if block.zone != "park":
            continue
        c = block.polygon.centroid
        for _ in range(2):
            a = math.radians(float(crng.uniform(0, 180)))
            d = np.array([math.cos(a), math.sin(a)]) * 400
            chord = LineString([(c.x - d[0], c.y - d[1]), (c.x + d[0], c.y + d[1])])
            paths.append(chord.buffer(1.2).intersection(block.polygon))

    trng = np.random.default_rng([seed, _RNG_TREES])
    keep_clear = [b.footprint.buffer(3.0) for b in buildings if b.truth_id in appeared]
    keep_clear += [b.footprint.buffer(1.0) for b in buildings if b.truth_id in demolished]
    keep_clear += paved + [g for g, _ in parking] + paths
    keep_clear += [b.driveway for b in buildings if b.driveway is not None]
    trees = _trees(trng, S, roads, blocks, buildings, keep_clear)

    return Town(
        seed=seed,
        size_m=S,
        resolution_m=resolution_m,
        width_px=width_px,
        origin=utm_origin(S),
        crs=UTM_CRS,
        roads=tuple(roads),
        blocks=tuple(blocks),
        buildings=tuple(buildings),
        appeared=appeared,
        demolished=demolished,
        trees=tuple(trees),
        paved=tuple(paved),
        parking=tuple(parking),
        paths=tuple(p for p in paths if not p.is_empty),
        hotspots=tuple(hotspots),
    )


# ---------------------------------------------------------------- defects


def plan_defects(town: Town) -> DefectPlan:
    """Draw the open-data defects.

    * omitted: 60-80 % of the step-0 buildings whose centroid lies in each
      hotspot, plus 0.4-0.8 % of the other buildings, scattered;
    * phantom: ~3 % (2.8-3.2 % of the step-0 count) house-sized rectangles on
      open ground, >= 3 m from any true building of either step and off roads,
      paved areas and tree trunks;
    * misaligned: ~4 % of the mapped step-0 buildings, shifted 3-5 m (70 %) or,
      for buildings >= 14 m long, rotated 10-15 degrees about the centroid;
    * stale: ~40 % of the appeared and of the demolished buildings are not
      reflected in the step-1 open data.
    Demolished buildings are never omitted or misaligned, so each change has one story.
    """
    rng = np.random.default_rng([town.seed, _RNG_DEFECTS])
    step0 = town.buildings_at(0)
    n0 = len(step0)
    stable = [b for b in step0 if b.truth_id not in town.demolished]
    omitted: dict[str, int | None] = {}
    hot_members: set[str] = set()
    for k, hs in enumerate(town.hotspots):
        hp = prep(hs)
        members = [b.truth_id for b in stable if hp.contains(b.footprint.centroid)]
        hot_members.update(members)
        rate = float(rng.uniform(0.62, 0.78))
        m = len(members)
        k_om = min(max(int(round(rate * m)), math.ceil(0.6 * m)), math.floor(0.8 * m))
        for tid in rng.choice(members, size=k_om, replace=False) if members else []:
            omitted[str(tid)] = k
    far = shapely.union_all([h.buffer(20) for h in town.hotspots]) if town.hotspots else Polygon()
    far_p = prep(far)
    scattered_cand = [b.truth_id for b in stable if not far_p.intersects(b.footprint)]
    n_sc = int(round(rng.uniform(0.004, 0.008) * n0))
    for tid in rng.choice(scattered_cand, size=min(n_sc, len(scattered_cand)), replace=False):
        omitted[str(tid)] = None

    phantoms = _phantoms(rng, town, max(1, int(round(rng.uniform(0.028, 0.032) * n0))))

    mapped = [b for b in stable if b.truth_id not in omitted]
    n_mis = max(1, int(round(rng.uniform(0.038, 0.042) * len(mapped))))
    misaligned: dict[str, Misalignment] = {}
    for i in sorted(rng.choice(len(mapped), size=min(n_mis, len(mapped)), replace=False).tolist()):
        b = mapped[i]
        misaligned[b.truth_id] = _misalign(rng, b)

    stale: set[str] = set()
    for ids in (sorted(town.appeared), sorted(town.demolished)):
        k = int(round(0.4 * len(ids)))
        if k:
            stale.update(str(t) for t in rng.choice(ids, size=k, replace=False))
    if not stale and (town.appeared or town.demolished):
        stale.add(sorted(town.appeared | town.demolished)[0])
    return DefectPlan(
        omitted=omitted, phantoms=tuple(phantoms), misaligned=misaligned, stale=frozenset(stale)
    )


def _misalign(rng: np.random.Generator, b: Building) -> Misalignment:
    fp = b.footprint
    xs, ys = fp.exterior.xy
    long_side = max(b.parts[0][2] - b.parts[0][0], b.parts[0][3] - b.parts[0][1])
    if long_side >= 14 and rng.random() < 0.3:
        ang = float(rng.uniform(10, 15) * rng.choice([-1, 1]))
        c = fp.centroid
        a = math.radians(ang)
        pts = np.column_stack((xs, ys)) - (c.x, c.y)
        rot = pts @ np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        poly = Polygon(rot + (c.x, c.y))
        disp = float(np.max(np.hypot(*(rot - pts).T)))
        return Misalignment("rotate", 0.0, 0.0, ang, poly, disp)
    dist = float(rng.uniform(3, 5))
    a = float(rng.uniform(0, 2 * np.pi))
    dx, dy = dist * math.cos(a), dist * math.sin(a)
    poly = shapely.transform(fp, lambda xy: xy + (dx, dy))
    return Misalignment("shift", dx, dy, 0.0, poly, dist)


def _phantoms(rng: np.random.Generator, town: Town, n: int) -> list[Polygon]:
    """House-sized rectangles on open ground inside residential/centre/park blocks."""
    S = town.size_m
    taken = [b.footprint for b in town.buildings]
    fp_tree = shapely.STRtree(np.asarray(taken))
    hard = list(town.paved) + [g for g, _ in town.parking] + list(town.paths)
    hard += [b.driveway for b in town.buildings if b.driveway is not None]
    hard_p = prep(shapely.union_all(hard)) if hard else None
    trunks = (
        shapely.STRtree(np.asarray([Point(t.x, t.y) for t in town.trees])) if town.trees else None
    )
    blocks = [
        b
        for b in town.blocks
        if b.zone in ("residential", "centre", "park") and b.polygon.area > 600
    ]
    weights = np.asarray([b.polygon.area for b in blocks], dtype=float)
    out: list[Polygon] = []
    for _ in range(4000):
        if len(out) >= n or not blocks:
            break
        blk = blocks[int(rng.choice(len(blocks), p=weights / weights.sum()))]
        inner = blk.polygon.buffer(-3.0)
        if inner.is_empty:
            continue
        x, y = _random_point(rng, inner)
        L, W = float(rng.uniform(8, 15)), float(rng.uniform(7, 11))
        poly = _oriented_rect(x, y, L, W, blk.angle_deg + float(rng.normal(0, 2)))
        if not inner.contains(poly) or not (0 < x < S and 0 < y < S):
            continue
        if len(fp_tree.query(poly, predicate="dwithin", distance=3.0)):
            continue
        if hard_p is not None and hard_p.intersects(poly):
            continue
        if trunks is not None and len(trunks.query(poly.buffer(1.5), predicate="intersects")):
            continue
        if out and np.any(shapely.dwithin(poly, np.asarray(out), 10.0)):
            continue
        out.append(poly)
    return out
