"""Render the synthetic town into RGB imagery, one raster per time step.

Layers, bottom to top: ground (grass field with dry and bare-soil patches,
parks, paved yards, parking lots, driveways, park paths, sidewalks, asphalt
roads with lane markings, construction soil and demolition rubble) → cast
shadows of buildings and trees (one sun direction per step) → roofs (gable and
hip roofs shaded per face, flat roofs with parapets, rooftop units and metal
ribs) → tree crowns (textured, lit on the sun side) → lighting and colour
balance of the step, a slight optical blur and sensor noise.

Drawing is PIL ``ImageDraw`` on class / mask images plus a few whole-array
numpy operations, so a 2500 x 2500 px step takes a few seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from PIL import Image, ImageDraw, ImageFilter
from rasterio.enums import Resampling
from rasterio.features import rasterize
from shapely.geometry import LineString, Polygon
from shapely.ops import substring

from pipeline.sample.town import Building, Town

_RNG_WORLD, _RNG_SENSOR, _RNG_ROOF = 4, 10, 20

# Ground classes of the class image.
GRASS, PARK, PAVED, SIDEWALK, ROAD, SOIL, RUBBLE, PATH, DRIVEWAY, MARKING, PARKING = range(11)
FIELDS = (11, 12, 13)  # green crop, ripe crop, ploughed; FIELDS[k] + 3 = its furrows
_GROUND = np.array(
    [
        (0, 0, 0),  # grass: from the field colour
        (78, 116, 52),  # park lawn
        (166, 163, 154),  # paved yard / plaza
        (182, 178, 170),  # sidewalk
        (84, 86, 90),  # asphalt
        (150, 121, 88),  # bare soil
        (138, 127, 114),  # rubble
        (186, 172, 142),  # gravel path
        (124, 122, 118),  # driveway
        (226, 226, 218),  # marking
        (104, 106, 108),  # parking asphalt
        (96, 132, 60),  # green crop
        (196, 178, 112),  # ripe crop
        (128, 100, 74),  # ploughed
        (84, 118, 52),  # green crop furrow
        (176, 158, 98),  # ripe crop furrow
        (106, 82, 60),  # ploughed furrow
    ],
    dtype=np.float32,
)
# Texture amplitude (medium scale, pixel scale) per class.
_AMP_MID = np.array(
    [
        0.10,
        0.08,
        0.04,
        0.03,
        0.05,
        0.10,
        0.10,
        0.06,
        0.04,
        0.02,
        0.05,
        0.08,
        0.06,
        0.08,
        0.08,
        0.06,
        0.08,
    ],
    np.float32,
)
_AMP_FINE = np.array(
    [
        0.07,
        0.06,
        0.03,
        0.03,
        0.05,
        0.08,
        0.22,
        0.05,
        0.03,
        0.02,
        0.04,
        0.06,
        0.05,
        0.07,
        0.06,
        0.05,
        0.07,
    ],
    np.float32,
)
_TREE_GREENS = np.array([(50, 80, 40), (62, 94, 44), (44, 70, 38), (74, 98, 50)], np.float32)


@dataclass(frozen=True)
class Light:
    """Sun position and colour balance of one acquisition."""

    azimuth_deg: float  # clockwise from north, where the sun is
    elevation_deg: float
    gain: tuple[float, float, float]
    offset: float
    gamma: float

    @property
    def to_sun(self) -> np.ndarray:
        a = math.radians(self.azimuth_deg)
        return np.array([math.sin(a), math.cos(a)])

    def shadow(self, height_m: float) -> np.ndarray:
        """Ground offset (metres) of a point ``height_m`` above the ground."""
        return -self.to_sun * height_m / math.tan(math.radians(self.elevation_deg))


LIGHTS = (
    Light(azimuth_deg=155.0, elevation_deg=55.0, gain=(1.0, 1.0, 1.0), offset=0.0, gamma=1.0),
    Light(azimuth_deg=142.0, elevation_deg=60.0, gain=(1.05, 1.01, 0.93), offset=4.0, gamma=0.94),
)


class _Canvas:
    """Local metres to pixel coordinates (row 0 is the north edge)."""

    def __init__(self, town: Town) -> None:
        self.n = town.width_px
        self.res = town.resolution_m
        self.S = town.size_m

    def px(self, xy: np.ndarray) -> list[tuple[float, float]]:
        xy = np.asarray(xy, dtype=float)
        cols = xy[:, 0] / self.res - 0.5
        rows = (self.S - xy[:, 1]) / self.res - 0.5
        return list(zip(cols.tolist(), rows.tolist(), strict=True))

    def fill(self, draw: ImageDraw.ImageDraw, geom, value, hole_value=None) -> None:
        """Fill polygon(s); holes are filled with ``hole_value`` when given."""
        for poly in _polygons(geom):
            draw.polygon(self.px(poly.exterior.coords), fill=value)
            if hole_value is not None:
                for ring in poly.interiors:
                    draw.polygon(self.px(ring.coords), fill=hole_value)

    def line(self, draw: ImageDraw.ImageDraw, geom, value, width: int = 1) -> None:
        for ln in _lines(geom):
            draw.line(self.px(ln.coords), fill=value, width=width)


def _polygons(geom) -> list[Polygon]:
    if geom is None or geom.is_empty:
        return []
    if isinstance(geom, Polygon):
        return [geom]
    return [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon)]


def _lines(geom) -> list[LineString]:
    if geom is None or geom.is_empty:
        return []
    if isinstance(geom, LineString):
        return [geom]
    return [g for g in getattr(geom, "geoms", []) if isinstance(g, LineString)]


def _noise(rng: np.random.Generator, n: int, cell_px: float) -> np.ndarray:
    """Smooth value noise ``(n, n) float32`` in roughly [-1, 1], features ~``cell_px`` wide."""
    g = max(2, int(math.ceil(n / cell_px)) + 2)
    small = rng.standard_normal((g, g)).astype(np.float32)
    big = Image.fromarray(small).resize(
        (n, n), Image.Resampling.BICUBIC, box=(0.5, 0.5, g - 1.5, g - 1.5)
    )
    return np.asarray(big, dtype=np.float32)


# ---------------------------------------------------------------- ground


def _marking_lines(town: Town) -> tuple[list, list]:
    """Dashed centre lines and solid edge lines of the main roads, cut at junctions."""
    polys = [r.polygon for r in town.roads]
    tree = shapely.STRtree(np.asarray(polys))
    a, b = tree.query(np.asarray(polys), predicate="intersects")
    keep = a < b
    junctions = [polys[i].intersection(polys[j]) for i, j in zip(a[keep], b[keep], strict=True)]
    junction = shapely.union_all(junctions).buffer(2.5) if junctions else Polygon()
    dashes, edges = [], []
    for road in town.roads:
        if road.kind != "main":
            continue
        for d in np.arange(0.0, road.line.length, 9.0):
            dash = substring(road.line, d, d + 3.0)
            if not dash.intersects(junction):
                dashes.append(dash)
        for side in (-1, 1):
            off = road.line.offset_curve(side * (road.width_m / 2 - 0.7))
            edges.append(off.difference(junction))
    return dashes, edges


def _ground_classes(town: Town, step: int, canvas: _Canvas) -> np.ndarray:
    n = town.width_px
    img = Image.new("L", (n, n), GRASS)
    d = ImageDraw.Draw(img)
    frng = np.random.default_rng([town.seed, _RNG_WORLD, 2])
    for block in town.blocks:
        if block.zone == "park":
            canvas.fill(d, block.polygon, PARK, PARK)
        elif block.zone == "field":
            _field(
                d,
                canvas,
                block.polygon,
                int(frng.integers(0, 3)),
                block.angle_deg + 90 * int(frng.integers(0, 2)),
            )
    for g in town.paved:
        canvas.fill(d, g, PAVED, GRASS)
    for path in town.paths:
        canvas.fill(d, path, PATH)
    bid = {b.truth_id for b in town.buildings_at(step)}
    for b in town.buildings:
        if b.driveway is not None and b.truth_id in bid:
            canvas.fill(d, b.driveway, DRIVEWAY)
    for lot, angle in town.parking:
        canvas.fill(d, lot, PARKING)
        _stalls(d, canvas, lot, angle)
    if step == 1:
        for b in town.buildings:
            if b.truth_id in town.appeared:
                canvas.fill(d, b.footprint.buffer(2.5, join_style="mitre"), SOIL)
            elif b.truth_id in town.demolished:
                canvas.fill(d, b.footprint.buffer(1.2, join_style="mitre"), RUBBLE)
    for road in town.roads:
        canvas.fill(d, road.sidewalk, SIDEWALK)
    for road in town.roads:
        canvas.fill(d, road.polygon, ROAD)
    dashes, edges = _marking_lines(town)
    w = max(1, int(round(0.3 / town.resolution_m)))
    for g in dashes + edges:
        canvas.line(d, g, MARKING, w)
    return np.asarray(img)


def _field(d: ImageDraw.ImageDraw, canvas: _Canvas, poly: Polygon, crop: int, angle: float) -> None:
    """A crop field inside a 1.5 m grass margin, with furrows every 2.4 m."""
    inner = poly.buffer(-1.5)
    canvas.fill(d, inner, FIELDS[crop], GRASS)
    c = poly.centroid
    a = math.radians(angle)
    u = np.array([math.cos(a), math.sin(a)])
    v = np.array([-u[1], u[0]])
    half = math.sqrt(poly.area) + max(
        poly.bounds[2] - poly.bounds[0], poly.bounds[3] - poly.bounds[1]
    )
    rows = [
        LineString(
            [np.array([c.x, c.y]) + v * t - u * half, np.array([c.x, c.y]) + v * t + u * half]
        )
        for t in np.arange(-half, half, 2.4)
    ]
    w = max(1, int(round(0.8 / canvas.res)))
    for seg in shapely.intersection(np.asarray(rows), inner):
        canvas.line(d, seg, FIELDS[crop] + 3, w)


def _stalls(d: ImageDraw.ImageDraw, canvas: _Canvas, lot: Polygon, angle: float) -> None:
    """White stall lines every 2.6 m across the lot, leaving an aisle in the middle."""
    c = lot.centroid
    a = math.radians(angle)
    u = np.array([math.cos(a), math.sin(a)])
    v = np.array([-u[1], u[0]])
    for t in np.arange(-20.0, 20.0, 2.6):
        for s0, s1 in ((-12.0, -3.0), (3.0, 12.0)):
            p0 = np.array([c.x, c.y]) + u * t + v * s0
            p1 = np.array([c.x, c.y]) + u * t + v * s1
            seg = LineString([p0, p1]).intersection(lot.buffer(-0.8))
            canvas.line(d, seg, MARKING, 1)


@dataclass(frozen=True)
class World:
    """Step-independent textures of the town (computed once, shared by both steps)."""

    field: np.ndarray  # (n, n, 3) float32 grass colours with dry and bare patches
    mid: np.ndarray  # (n, n) medium-scale texture
    fine: np.ndarray  # (n, n) pixel-scale texture
    grain: np.ndarray  # roof grain
    clump: np.ndarray  # leaf clumps


def world_textures(town: Town) -> World:
    """Noise fields of the town; the same seed gives the same textures."""
    n = town.width_px
    px_m = 1.0 / town.resolution_m
    rng = np.random.default_rng([town.seed, _RNG_WORLD])
    field = _noise(rng, n, 90 * px_m) * 0.6 + _noise(rng, n, 25 * px_m) * 0.4
    soil = _noise(rng, n, 30 * px_m) + 0.35 * _noise(rng, n, 6 * px_m)
    mid = _noise(rng, n, 4 * px_m)
    fine = rng.standard_normal((n, n), dtype=np.float32)
    lush = np.array([88, 120, 56], np.float32)
    dry = np.array([140, 146, 88], np.float32)
    t = np.clip(0.5 + 0.45 * field, 0, 1)[..., None]
    rgb = lush + (dry - lush) * t
    del t, field
    s = np.clip((soil - 1.0) / 0.5, 0, 1)[..., None] * 0.85  # ~12 % of the grass is bare soil
    rgb += (np.array([148, 122, 90], np.float32) - rgb) * s
    del s, soil
    wrng = np.random.default_rng([town.seed, _RNG_WORLD, 1])
    grain = _noise(wrng, n, 1.5 * px_m)
    clump = _noise(wrng, n, 1.2 * px_m) * 0.7 + _noise(wrng, n, 0.6 * px_m) * 0.3
    return World(field=rgb, mid=mid, fine=fine, grain=grain, clump=clump)


def _ground_rgb(world: World, cls: np.ndarray) -> np.ndarray:
    """``(n, n, 3) float32`` ground colours: the grass field, class colours, texture."""
    rgb = world.field.copy()
    not_grass = cls != GRASS
    rgb[not_grass] = _GROUND[cls[not_grass]]
    tex = 1.0 + _AMP_MID[cls] * world.mid
    tex += _AMP_FINE[cls] * world.fine
    rgb *= tex[..., None]
    return rgb


# ---------------------------------------------------------------- objects


def _shadows(town: Town, step: int, canvas: _Canvas, light: Light) -> np.ndarray:
    """Shadow strength ``(n, n) float32`` in [0, 1] (soft edges)."""
    n = town.width_px
    img = Image.new("L", (n, n), 0)
    d = ImageDraw.Draw(img)
    hulls = []
    for b in town.buildings_at(step):
        off = light.shadow(b.height_m)
        for x0, y0, x1, y1, _ in b.parts:
            corners = b.to_world(np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)]))
            hulls.append(np.vstack((corners, corners + off)))
    if hulls:
        for hull in shapely.convex_hull(shapely.multipoints(np.asarray(hulls))):
            d.polygon(canvas.px(hull.exterior.coords), fill=255)
    for t in town.trees:
        off = light.shadow(t.height_m * 0.8)
        crown = np.asarray(t.crown.exterior.coords) + off
        d.polygon(canvas.px(crown), fill=255)
    img = img.filter(ImageFilter.GaussianBlur(radius=1.0))
    return np.asarray(img, dtype=np.float32) / 255.0


def _shade(colour: Sequence[int], factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)  # type: ignore[return-value]


def _part_faces(roof: str, part: tuple) -> list[tuple[list, tuple[float, float]]]:
    """Faces of one roof rectangle in the building frame, with their outward normals."""
    x0, y0, x1, y1, axis = part
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    if axis == "x":  # ridge along x
        if roof == "gable":
            return [
                ([(x0, y0), (x1, y0), (x1, ym), (x0, ym)], (0.0, -1.0)),
                ([(x0, ym), (x1, ym), (x1, y1), (x0, y1)], (0.0, 1.0)),
            ]
        h = min((y1 - y0) / 2, (x1 - x0) / 2)
        ra, rb = (x0 + h, ym), (x1 - h, ym)
        return [
            ([(x0, y0), (x1, y0), rb, ra], (0.0, -1.0)),
            ([(x0, y1), (x1, y1), rb, ra], (0.0, 1.0)),
            ([(x0, y0), ra, (x0, y1)], (-1.0, 0.0)),
            ([(x1, y0), rb, (x1, y1)], (1.0, 0.0)),
        ]
    if roof == "gable":  # ridge along y
        return [
            ([(x0, y0), (xm, y0), (xm, y1), (x0, y1)], (-1.0, 0.0)),
            ([(xm, y0), (x1, y0), (x1, y1), (xm, y1)], (1.0, 0.0)),
        ]
    h = min((x1 - x0) / 2, (y1 - y0) / 2)
    ra, rb = (xm, y0 + h), (xm, y1 - h)
    return [
        ([(x0, y0), (x0, y1), rb, ra], (-1.0, 0.0)),
        ([(x1, y0), (x1, y1), rb, ra], (1.0, 0.0)),
        ([(x0, y0), ra, (x1, y0)], (0.0, -1.0)),
        ([(x0, y1), rb, (x1, y1)], (0.0, 1.0)),
    ]


def _ridge(roof: str, part: tuple) -> np.ndarray:
    x0, y0, x1, y1, axis = part
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    if axis == "x":
        h = min((y1 - y0) / 2, (x1 - x0) / 2) if roof == "hip" else 0.0
        return np.array([(x0 + h, ym), (x1 - h, ym)])
    h = min((x1 - x0) / 2, (y1 - y0) / 2) if roof == "hip" else 0.0
    return np.array([(xm, y0 + h), (xm, y1 - h)])


def _roof_faces(b: Building, light: Light) -> list[tuple[np.ndarray, tuple[int, int, int]]]:
    """Polygons (local metres) and colours of the roof faces of one building.

    A pitched face is lit by ``1 + 0.2 * (n . s)``, ``n`` its horizontal normal
    and ``s`` the horizontal direction to the sun.
    """
    a = math.radians(b.angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    sun = light.to_sun
    faces = []
    for part in b.parts:
        x0, y0, x1, y1, _ = part
        if b.roof == "flat":
            faces.append((b.to_world(np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])), b.colour))
            continue
        for poly, normal in _part_faces(b.roof, part):
            k = 1.0 + 0.2 * float((rot @ np.asarray(normal)) @ sun)
            faces.append((b.to_world(np.asarray(poly)), _shade(b.colour, k)))
    return faces


def _roofs(town: Town, step: int, canvas: _Canvas, light: Light) -> tuple[np.ndarray, np.ndarray]:
    """Roof colours ``(n, n, 3) uint8`` and roof mask ``(n, n) bool``."""
    n = town.width_px
    rgb = Image.new("RGB", (n, n), (0, 0, 0))
    d = ImageDraw.Draw(rgb)
    res = town.resolution_m
    for b in town.buildings_at(step):
        brng = np.random.default_rng([town.seed, _RNG_ROOF, int(b.truth_id[1:])])
        # Base colour one pixel wider than the roof (PIL truncates vertices), faces on top.
        under = b.footprint.buffer(res, join_style="mitre")
        d.polygon(canvas.px(np.asarray(under.exterior.coords)), fill=_shade(b.colour, 0.92))
        for poly, colour in _roof_faces(b, light):
            d.polygon(canvas.px(poly), fill=colour)
        if b.roof != "flat":
            for part in b.parts:  # light ridge line
                d.line(
                    canvas.px(b.to_world(_ridge(b.roof, part))),
                    fill=_shade(b.colour, 1.25),
                    width=1,
                )
            continue
        # Flat roofs: darker parapet, metal ribs on warehouses, rooftop units.
        d.line(
            canvas.px(np.asarray(b.footprint.exterior.coords)),
            fill=_shade(b.colour, 0.72),
            width=max(1, round(0.5 / res)),
        )
        x0, y0, x1, y1, _ = b.parts[0]
        if b.category == "warehouse" and brng.random() < 0.6:
            for x in np.arange(x0 + 1.2, x1 - 0.5, 1.2):
                seg = b.to_world(np.array([(x, y0 + 0.6), (x, y1 - 0.6)]))
                d.line(canvas.px(seg), fill=_shade(b.colour, 0.9), width=1)
        if b.category in ("apartment", "commercial", "warehouse"):
            for _ in range(int(brng.integers(1, 5))):
                w, h = brng.uniform(1.2, 3.0, 2)
                cx = brng.uniform(x0 + w / 2 + 1, max(x0 + w / 2 + 1.01, x1 - w / 2 - 1))
                cy = brng.uniform(y0 + h / 2 + 1, max(y0 + h / 2 + 1.01, y1 - h / 2 - 1))
                box_pts = np.array(
                    [
                        (cx - w / 2, cy - h / 2),
                        (cx + w / 2, cy - h / 2),
                        (cx + w / 2, cy + h / 2),
                        (cx - w / 2, cy + h / 2),
                    ]
                )
                world = b.to_world(box_pts)
                d.polygon(canvas.px(world + light.shadow(1.2)), fill=_shade(b.colour, 0.6))
                d.polygon(canvas.px(world), fill=_shade((200, 200, 198), brng.uniform(0.85, 1.1)))
    # The mask follows rasterio's rule (pixel centre inside), so a roof covers
    # exactly the pixels a rasterized true footprint covers.
    standing = [b.footprint for b in town.buildings_at(step)]
    mask = (
        rasterize(
            standing,
            out_shape=(n, n),
            transform=Affine(res, 0.0, 0.0, 0.0, -res, town.size_m),
            dtype="uint8",
        )
        if standing
        else np.zeros((n, n), np.uint8)
    )
    return np.asarray(rgb), mask > 0


def _trees(town: Town, canvas: _Canvas, light: Light) -> tuple[np.ndarray, np.ndarray]:
    """Tree crown index image (0 = none, k + 1 = green k) and highlight mask."""
    n = town.width_px
    crowns = Image.new("L", (n, n), 0)
    hi = Image.new("L", (n, n), 0)
    dc, dh = ImageDraw.Draw(crowns), ImageDraw.Draw(hi)
    sun = light.to_sun
    for t in town.trees:
        xy = np.asarray(t.crown.exterior.coords)
        dc.polygon(canvas.px(xy), fill=t.shade + 1)
        inner = (xy - (t.x, t.y)) * 0.55 + (t.x, t.y) + sun * 0.3 * t.radius_m
        dh.polygon(canvas.px(inner), fill=1)
    return np.asarray(crowns), np.asarray(hi) > 0


# ---------------------------------------------------------------- compose


def render_step(
    town: Town, step: int, world: World | None = None, *, flight: int = 0
) -> np.ndarray:
    """Imagery of step ``0`` or ``1`` as ``(3, n, n) uint8``.

    Pass ``world`` (from :func:`world_textures`) to share the textures between steps.
    ``flight`` > 0 is a later acquisition of the same town state: other sensor noise.
    """
    world = world if world is not None else world_textures(town)
    light = LIGHTS[step]
    canvas = _Canvas(town)
    n = town.width_px
    cls = _ground_classes(town, step, canvas)
    img = _ground_rgb(world, cls)
    del cls
    shadow = _shadows(town, step, canvas, light)
    img *= 1.0 - shadow[..., None] * np.array([0.52, 0.50, 0.42], np.float32)
    del shadow

    roof_rgb, roof_mask = _roofs(town, step, canvas, light)
    img[roof_mask] = (
        roof_rgb[roof_mask].astype(np.float32) * (1.0 + 0.035 * world.grain[roof_mask])[:, None]
    )
    del roof_rgb, roof_mask

    crowns, highlight = _trees(town, canvas, light)
    tmask = crowns > 0
    tree = _TREE_GREENS[crowns[tmask] - 1] * (0.78 + 0.22 * world.clump[tmask])[:, None]
    tree[highlight[tmask]] *= 1.22
    img[tmask] = tree
    del tree, tmask, crowns, highlight

    img *= np.asarray(light.gain, np.float32)
    img += light.offset
    np.clip(img, 0, 255, out=img)
    lut = np.clip(np.rint(255.0 * (np.arange(256) / 255.0) ** light.gamma), 0, 255).astype(np.uint8)
    u8 = lut[img.astype(np.uint8)]
    del img
    blurred = np.asarray(
        Image.fromarray(u8).filter(ImageFilter.GaussianBlur(radius=0.55)), dtype=np.float32
    )
    srng = np.random.default_rng([town.seed, _RNG_SENSOR + step, *([flight] if flight else [])])
    blurred += srng.standard_normal((n, n, 3), dtype=np.float32) * 2.0
    np.clip(np.rint(blurred, out=blurred), 0, 255, out=blurred)
    return np.ascontiguousarray(blurred.astype(np.uint8).transpose(2, 0, 1))


def write_geotiff(path: Path, image: np.ndarray, town: Town, *, step_name: str) -> None:
    """Write ``(3, n, n) uint8`` imagery as a tiled, deflate-compressed GeoTIFF with overviews."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ox, oy = town.origin
    res = town.resolution_m
    transform = Affine(res, 0.0, ox, 0.0, -res, oy + town.size_m)
    profile = {
        "driver": "GTiff",
        "width": image.shape[2],
        "height": image.shape[1],
        "count": 3,
        "dtype": "uint8",
        "crs": town.crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 2,
        "interleave": "pixel",
        "photometric": "RGB",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
        dst.update_tags(GEOAUDIT_SAMPLE_STEP=step_name, GEOAUDIT_SAMPLE_SEED=str(town.seed))
        levels = [f for f in (2, 4, 8) if min(image.shape[1:]) // f >= 128]
        if levels:
            dst.build_overviews(levels, Resampling.average)
            dst.update_tags(ns="rio_overview", resampling="average")
