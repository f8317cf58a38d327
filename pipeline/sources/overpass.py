"""OSM buildings from an Overpass API, as they were on the time step.

One query per bbox (Overpass QL, ``out meta geom`` JSON)::

    [out:json][timeout:180][date:"2024-03-01T00:00:00Z"];
    (
      way["building"]["building"!="no"](27.62,85.53,27.63,85.54);
      relation["building"]["building"!="no"]["type"="multipolygon"](27.62,85.53,27.63,85.54);
    );
    out meta geom;

Rules:
- ``[date:"<step>T00:00:00Z"]`` is added when the step is a date before today (UTC):
  a run for date D sees OSM as it was at the start of D; today's or a later step reads
  the current data.
- Closed ways become polygons; multipolygon relations are assembled from their member
  ways (rings merged from pieces, inner rings by nesting); open ways are dropped and
  counted as ``LineString``.
- ``feature_id`` = ``way/<id>`` or ``relation/<id>``; attributes: ``osm_type``,
  ``osm_id``, ``osm_version``, ``osm_timestamp`` and every tag (a tag named like those
  is left out).
- A ``remark`` reporting a runtime error (timeout, out of memory) means a partial
  answer: it is an error, never a smaller snapshot.
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.parse
from pathlib import Path
from typing import Any

import geopandas as gpd
import shapely

from pipeline.errors import ConfigError, VectorDataError
from pipeline.sources.base import register_vector
from pipeline.sources.frames import Bbox
from pipeline.sources.service import ServiceSource
from pipeline.sources.specs import OsmTags, OverpassSpec
from pipeline.sources.vector_http import http_json

log = logging.getLogger(__name__)

META_COLUMNS = ("feature_id", "osm_type", "osm_id", "osm_version", "osm_timestamp")


def as_of(step: str | None, *, today: dt.date | None = None) -> str | None:
    """``"<step>T00:00:00Z"`` when ``step`` is a date before ``today`` (UTC), else None."""
    if step is None:
        return None
    try:
        day = dt.date.fromisoformat(step)
    except ValueError:
        raise ConfigError(
            f"overpass: time step must be an ISO date YYYY-MM-DD, got {step!r}"
        ) from None
    today = today or dt.datetime.now(dt.UTC).date()
    return f"{day.isoformat()}T00:00:00Z" if day < today else None


def tag_filters(tags: OsmTags) -> str:
    """Overpass QL tag filters: ``["key"="value"]``, or ``["key"]`` for a None value."""
    out = []
    for key, value in tags.items():
        if value is None:
            out.append(f'["{key}"]')
        else:
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'["{key}"="{escaped}"]')
    return "".join(out)


def build_query(
    bbox: Bbox, *, date: str | None, tags: OsmTags | None = None, timeout_s: int = 180
) -> str:
    """The ``buildings`` query for a WGS84 bbox ``(west, south, east, north)``; Overpass
    wants ``(south, west, north, east)``."""
    w, s, e, n = bbox
    area = f"({s:.7f},{w:.7f},{n:.7f},{e:.7f})"
    header = f"[out:json][timeout:{timeout_s}]" + (f'[date:"{date}"]' if date else "")
    extra = tag_filters(tags or {})
    building = '["building"]["building"!="no"]'
    return (
        f"{header};\n(\n"
        f"  way{building}{extra}{area};\n"
        f'  relation{building}["type"="multipolygon"]{extra}{area};\n'
        ");\nout meta geom;\n"
    )


def elements_frame(elements: list[dict[str, Any]]) -> gpd.GeoDataFrame:
    """``out geom`` elements as an EPSG:4326 frame; ways/relations whose geometry cannot
    be built get None (dropped later and counted)."""
    rows: list[dict[str, Any]] = []
    geoms: list[shapely.Geometry | None] = []
    for el in elements:
        kind = el.get("type")
        if kind not in ("way", "relation"):
            continue
        row = {
            "feature_id": f"{kind}/{el['id']}",
            "osm_type": kind,
            "osm_id": int(el["id"]),
            "osm_version": el.get("version"),
            "osm_timestamp": el.get("timestamp"),
        }
        for key, value in (el.get("tags") or {}).items():
            if key not in row and key != "geometry":
                row[key] = value
        rows.append(row)
        geoms.append(_way_geometry(el) if kind == "way" else _relation_geometry(el))
    return gpd.GeoDataFrame(rows, geometry=geoms, crs="EPSG:4326")


def _coords(points: list[dict[str, float] | None] | None) -> list[tuple[float, float]] | None:
    if not points or any(p is None for p in points):
        return None  # a member outside the data (attic gaps) leaves no usable line
    return [(p["lon"], p["lat"]) for p in points]  # type: ignore[index]


def _way_geometry(el: dict[str, Any]) -> shapely.Geometry | None:
    """A closed way (first node = last node, 4+ points) is a polygon; an open one a line."""
    coords = _coords(el.get("geometry"))
    if coords is None or len(coords) < 2:
        return None
    nodes = el.get("nodes")
    closed = nodes[0] == nodes[-1] if nodes else coords[0] == coords[-1]
    if closed and len(coords) >= 4:
        return shapely.Polygon(coords)
    return shapely.LineString(coords)


def _relation_geometry(el: dict[str, Any]) -> shapely.Geometry | None:
    """A multipolygon from its way members: pieces merged into rings, holes by nesting
    (GEOS ``build_area``); None when no area can be built."""
    lines = [
        shapely.LineString(c)
        for m in el.get("members", [])
        if m.get("type") == "way" and m.get("role", "outer") in ("outer", "inner", "")
        for c in [_coords(m.get("geometry"))]
        if c is not None and len(c) >= 2
    ]
    if not lines:
        return None
    area = shapely.build_area(shapely.union_all(lines))
    if area.is_empty:
        return None
    return area


@register_vector("overpass")
class OverpassSource(ServiceSource):
    """Buildings from an Overpass API as of the time step (module docstring for the rules)."""

    serves_everything = False

    def __init__(
        self, spec: OverpassSpec, *, step: str | None = None, base_dir: Path | None = None
    ) -> None:
        super().__init__(spec, step=step, base_dir=base_dir)
        self.spec: OverpassSpec = spec
        self.date = as_of(step)

    def query(self, bbox: Bbox) -> str:
        """The Overpass QL sent for ``bbox``."""
        spec = self.spec
        return build_query(bbox, date=self.date, tags=spec.tags, timeout_s=spec.timeout_s)

    def _fetch(self, bbox: Bbox | None) -> gpd.GeoDataFrame:
        if bbox is None:  # guarded by serves_everything; kept for direct calls
            raise VectorDataError(f"overpass {self.path}: a bbox is needed")
        what = f"overpass {self.path}"
        body = urllib.parse.urlencode({"data": self.query(bbox)}).encode()
        answer = http_json(
            self.spec.url,
            data=body,
            headers=self.spec.headers,
            timeout=self.spec.timeout_s + 30,
            what=what,
            action="query failed",
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("elements"), list):
            raise VectorDataError(f"{what}: the answer has no 'elements' list; is it Overpass?")
        remark = str(answer.get("remark") or "")
        if "error" in remark.lower():
            raise VectorDataError(
                f"{what}: the server stopped the query ({remark.strip()}); the answer is "
                "incomplete: raise timeout_s or read a smaller area"
            )
        log.debug("%s: %d elements as of %s", what, len(answer["elements"]), self.date or "now")
        return elements_frame(answer["elements"])


__all__ = ["OverpassSource", "as_of", "build_query", "elements_frame"]
