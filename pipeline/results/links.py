"""Links from a finding to the places where open data is read and fixed."""

from __future__ import annotations

from urllib.parse import urlencode

from shapely.geometry.base import BaseGeometry

OSM_WEBSITE = "https://www.openstreetmap.org"
JOSM_REMOTE = "http://127.0.0.1:8111"  # JOSM's remote control listens here
_OSM_TYPES = ("node", "way", "relation")
_MARGIN_DEG = 0.0003  # about 30 m around a finding in JOSM


def osm_url(feature_id: object) -> str | None:
    """The OpenStreetMap page of ``way/123``-style feature ids; None for other sources."""
    if not isinstance(feature_id, str) or "/" not in feature_id:
        return None
    kind, _, number = feature_id.partition("/")
    if kind not in _OSM_TYPES or not number.isdigit():
        return None
    return f"{OSM_WEBSITE}/{kind}/{number}"


def josm_url(geometry: BaseGeometry, feature_id: object = None) -> str:
    """JOSM remote control ``load_and_zoom`` around ``geometry``; selects the OSM object
    of ``feature_id`` (``way/123``) when there is one."""
    west, south, east, north = geometry.bounds
    params = {
        "left": f"{west - _MARGIN_DEG:.7f}",
        "right": f"{east + _MARGIN_DEG:.7f}",
        "bottom": f"{south - _MARGIN_DEG:.7f}",
        "top": f"{north + _MARGIN_DEG:.7f}",
    }
    if osm_url(feature_id) is not None:
        kind, _, number = str(feature_id).partition("/")
        params["select"] = f"{kind}{number}"
    return f"{JOSM_REMOTE}/load_and_zoom?{urlencode(params)}"
