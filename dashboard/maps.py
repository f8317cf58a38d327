"""pydeck maps that work offline.

The AOI's own imagery is the backdrop; a configured basemap is fetched by the server
and drawn under it. Tiles (or cells) are coloured by error; findings and changes are
polygons; hotspots are outlined cells.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

import geopandas as gpd
import httpx
import mercantile
import numpy as np
import pandas as pd
import pydeck as pdk

from pipeline.results.export import geojson_bytes
from pipeline.results.map_cells import QOD_MOVED_POINTS

# colours (RGBA) of the map layers and their legend; none is green, the colour of
# vegetation in the imagery underneath
FINDING_COLOURS: dict[str, list[int]] = {
    "missing_in_opendata": [255, 0, 255, 170],
    "unsupported_by_imagery": [30, 110, 255, 170],
    "misaligned": [255, 165, 0, 170],
}
CHANGE_COLOURS: dict[str, list[int]] = {
    "appeared": [0, 220, 255, 150],
    "disappeared": [255, 60, 60, 150],
    "stale_opendata": [255, 140, 0, 170],
    "added": [120, 120, 255, 150],
    "removed": [140, 70, 20, 150],
}
OTHER = [200, 200, 200, 150]
HOTSPOT_LINE = [255, 255, 0, 255]


def _ring(b: mercantile.LngLatBbox) -> list[list[float]]:
    """A cell's lng/lat box as the ring pydeck's PolygonLayer draws."""
    return [[b.west, b.south], [b.east, b.south], [b.east, b.north], [b.west, b.north]]


def error_colour(qod: float | None) -> list[int]:
    """Clear at QoD 100, then yellow to red and more opaque as QoD falls to 0, so good
    tiles leave the imagery visible; grey without a score."""
    if qod is None or not np.isfinite(qod):
        return [128, 128, 128, 60]
    err = float(np.clip(1.0 - qod / 100.0, 0.0, 1.0))
    green = int(220 * (1.0 - min(err * 2, 1.0)))
    alpha = int(150 * min(err * 2.5, 1.0))
    return [255, green, 0, alpha]


def cells_layer(cells: pd.DataFrame, zoom: int) -> pdk.Layer:
    """Tiles or aggregated cells (``cell_x``, ``cell_y`` at ``zoom``) coloured by error."""
    records = []
    for row in cells.itertuples(index=False):
        b = mercantile.bounds(int(row.cell_x), int(row.cell_y), zoom)
        records.append(
            {
                "polygon": _ring(b),
                "fill": error_colour(None if pd.isna(row.qod) else float(row.qod)),
                "cell": f"{zoom}/{int(row.cell_x)}/{int(row.cell_y)}",
                "qod": None if pd.isna(row.qod) else round(float(row.qod), 1),
                "n_tiles": int(row.n_tiles),
                "n_findings": int(row.n_findings or 0),
                "n_flagged": int(row.n_flagged or 0),
            }
        )
    return pdk.Layer(
        "PolygonLayer",
        records,
        id="tiles",
        get_polygon="polygon",
        get_fill_color="fill",
        get_line_color=[40, 40, 40, 120],
        line_width_min_pixels=1,
        pickable=True,
    )


def change_colour(delta: float | None) -> list[int]:
    """Blue where QoD rose, red where it fell, clear where it held (|Δ| below
    ``QOD_MOVED_POINTS``); the more it moved (up to 25 points), the stronger."""
    if delta is None or not np.isfinite(delta) or abs(delta) < QOD_MOVED_POINTS:
        return [0, 0, 0, 0]
    strength = float(np.clip(abs(delta) / 25.0, 0.15, 1.0))
    base = [30, 110, 255] if delta > 0 else [230, 30, 30]
    return [*base, int(40 + 150 * strength)]


def qod_change_layer(cells: pd.DataFrame, zoom: int) -> pdk.Layer:
    """Cells of :func:`pipeline.results.map_cells.qod_change` coloured by ``delta``."""
    records = []
    for row in cells.itertuples(index=False):
        b = mercantile.bounds(int(row.cell_x), int(row.cell_y), zoom)
        delta = None if pd.isna(row.delta) else float(row.delta)
        records.append(
            {
                "polygon": _ring(b),
                "fill": change_colour(delta),
                "cell": f"{zoom}/{int(row.cell_x)}/{int(row.cell_y)}",
                "qod": None if delta is None else f"ΔQoD {delta:+.1f}",
            }
        )
    return pdk.Layer(
        "PolygonLayer",
        records,
        id="qod_change",
        get_polygon="polygon",
        get_fill_color="fill",
        get_line_color=[40, 40, 40, 60],
        line_width_min_pixels=1,
        pickable=True,
    )


def vector_layer(
    frame: gpd.GeoDataFrame, colours: dict[str, list[int]], *, layer_id: str
) -> pdk.Layer:
    """Polygons of findings or changes, filled by ``kind``."""
    keep = [c for c in ("kind", "feature_id", "area_m2", "confidence", "geometry") if c in frame]
    collection = json.loads(geojson_bytes(frame[keep]))
    for feature in collection["features"]:
        feature["properties"]["fill"] = colours.get(feature["properties"].get("kind"), OTHER)
    return pdk.Layer(
        "GeoJsonLayer",
        collection,
        id=layer_id,
        get_fill_color="properties.fill",
        get_line_color=[20, 20, 20, 220],
        line_width_min_pixels=1,
        pickable=True,
    )


def hotspot_layer(hotspots: gpd.GeoDataFrame) -> pdk.Layer:
    """Outlines of the significant hotspot cells (clipped to the AOI)."""
    keep = [c for c in ("rank", "gi_star", "q_value", "n_findings", "geometry") if c in hotspots]
    return pdk.Layer(
        "GeoJsonLayer",
        json.loads(geojson_bytes(hotspots[keep])),
        id="hotspots",
        filled=False,
        get_line_color=HOTSPOT_LINE,
        line_width_min_pixels=3,
        pickable=True,
    )


class BasemapError(OSError):
    """The configured basemap did not deliver a tile."""


def basemap_tiles(
    url: str, bounds: Sequence[float], *, max_tiles: int = 36, timeout_s: float = 3.0
) -> list[tuple[tuple[float, float, float, float], bytes]]:
    """The basemap's XYZ tiles over lon/lat ``bounds`` at the finest zoom with at most
    ``max_tiles`` tiles, fetched by the server (the browser needs no internet or CORS)."""
    west, south, east, north = bounds
    zoom = 0
    for z in range(19, -1, -1):
        if len(list(mercantile.tiles(west, south, east, north, z))) <= max_tiles:
            zoom = z
            break
    tiles = list(mercantile.tiles(west, south, east, north, zoom))
    out = []
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        for t in tiles:
            tile_url = url.format(z=t.z, x=t.x, y=t.y)
            try:
                response = client.get(tile_url)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise BasemapError(f"basemap tile {tile_url} failed: {exc}") from exc
            b = mercantile.bounds(t)
            out.append(((b.west, b.south, b.east, b.north), response.content))
    return out


def bitmap_layers(
    images: Sequence[tuple[Sequence[float], bytes]], *, prefix: str, mime: str = "image/png"
) -> list[pdk.Layer]:
    """One BitmapLayer per ``(lon/lat bounds, encoded image)``."""
    return [
        pdk.Layer(
            "BitmapLayer",
            id=f"{prefix}-{i}",
            # a plain string, not a pydeck expression
            image=pdk.types.String(f"data:{mime};base64," + base64.b64encode(data).decode("ascii")),
            bounds=list(bounds),
        )
        for i, (bounds, data) in enumerate(images)
    ]


def deck(layers: list[pdk.Layer], bounds: Sequence[float]) -> pdk.Deck:
    """A deck framed on lon/lat ``bounds`` with no map provider: it works offline."""
    west, south, east, north = bounds
    view = pdk.data_utils.compute_view([[west, south], [east, north]])
    view.zoom = float(min(view.zoom + 0.6, 20))
    return pdk.Deck(
        layers=layers,
        initial_view_state=view,
        map_provider=None,
        map_style=None,
        tooltip={"html": "{cell}{kind}{rank} {qod} {n_findings} {area_m2}"},
    )
