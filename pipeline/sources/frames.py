"""The rules every open-data source applies to what it read, whatever the kind.

A source reads a raw GeoDataFrame (any CRS, any geometry) and hands it to
:func:`finish`, which makes the engine's form: EPSG:4326, (Multi)Polygons only,
features intersecting the requested bbox, a unique string ``feature_id`` first,
the original attributes kept; plus the ``read_info`` of what was seen::

    frame, info = finish(raw, name=source.path, bbox=bbox, ids=lambda g: feature_ids(g, None, name))
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from pipeline.errors import VectorDataError

ID_FIELDS = ("feature_id", "id", "osm_id", "@id")  # looked up in this order without id_field
POLYGONAL = ("Polygon", "MultiPolygon")

Bbox = tuple[float, float, float, float]


def finish(
    raw: gpd.GeoDataFrame,
    *,
    name: str,
    bbox: Bbox | None,
    ids: Callable[[gpd.GeoDataFrame], pd.Series],
    without_geometry: int = 0,
) -> tuple[gpd.GeoDataFrame, dict[str, Any]]:
    """``raw`` in the engine's form and its read info: ``n_read`` (features read before
    filtering, ``without_geometry`` included), ``crs`` (as declared, None when absent),
    ``dropped`` (count per geometry type of the non-polygons left out) and
    ``no_geometry`` (features with a null or empty geometry, left out: those in ``raw``
    plus ``without_geometry`` that the reader counted apart, e.g. outside a bbox filter).

    Steps: name the geometry column ``geometry``, reproject to EPSG:4326
    (:func:`to_wgs84`), keep polygons (:func:`polygons_only`), keep features intersecting
    ``bbox`` (WGS84), then put ``ids(frame)`` first as ``feature_id`` (an existing
    ``feature_id`` column is replaced).
    """
    n_read = len(raw) + without_geometry
    declared = raw.crs.to_string() if raw.crs is not None else None
    if raw.geometry.name != "geometry":  # e.g. PostGIS "geom": the engine reads "geometry"
        raw = raw.drop(columns=["geometry"], errors="ignore").rename_geometry("geometry")
    located = ~(raw.geometry.isna() | raw.geometry.is_empty).to_numpy()
    no_geometry = int((~located).sum()) + without_geometry
    gdf = to_wgs84(raw[located], name)
    gdf, dropped = polygons_only(gdf)
    info = {"n_read": n_read, "crs": declared, "dropped": dict(dropped), "no_geometry": no_geometry}
    if bbox is not None and len(gdf):
        gdf = gdf[gdf.intersects(shapely.box(*bbox))]
    out = gdf.drop(columns=["feature_id"], errors="ignore")
    out.insert(0, "feature_id", ids(gdf).to_numpy() if len(gdf) else [])
    return out.reset_index(drop=True), info


# --- geometry ---------------------------------------------------------------------------


def looks_lonlat(gdf: gpd.GeoDataFrame) -> bool:
    """True when every coordinate lies within lon/lat range (or there is none)."""
    geoms = gdf.geometry[~(gdf.geometry.isna() | gdf.geometry.is_empty)]
    if len(geoms) == 0:
        return True
    w, s, e, n = geoms.total_bounds
    return w >= -180.0 and e <= 180.0 and s >= -90.0 and n <= 90.0


def check_unreferenced(bounds: Any, name: str) -> None:
    """Data without a CRS is read as lon/lat only when its ``bounds`` (west, south, east,
    north) are within lon/lat range; otherwise :class:`VectorDataError` naming the
    missing CRS (a Shapefile without its ``.prj``, say)."""
    if bounds is None or not np.all(np.isfinite(bounds)):
        return
    w, s, e, n = (float(v) for v in bounds)
    if not (w >= -180.0 and e <= 180.0 and s >= -90.0 and n <= 90.0):
        raise VectorDataError(
            f"{name}: data has no CRS and coordinates are not lon/lat "
            f"(bounds {tuple(round(v, 2) for v in (w, s, e, n))}); declare the CRS in the "
            "file (a Shapefile needs its .prj)"
        )


def to_wgs84(gdf: gpd.GeoDataFrame, name: str) -> gpd.GeoDataFrame:
    """Reproject to EPSG:4326; no CRS is accepted only if coordinates look like lon/lat."""
    if gdf.crs is None:
        if not looks_lonlat(gdf):
            check_unreferenced(gdf.geometry.dropna().total_bounds, name)
        return gdf.set_crs(4326)
    if gdf.crs.is_geographic and not looks_lonlat(gdf):
        raise VectorDataError(
            f"{name}: CRS {gdf.crs.to_string()} is geographic but coordinates are outside "
            "lon/lat range; declare the projected CRS in the file"
        )
    if gdf.crs.equals(CRS.from_epsg(4326)):
        return gdf
    return gdf.to_crs(4326)


def polygons_only(gdf: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, Counter[str]]:
    """Keep (Multi)Polygons; collections keep their polygonal parts. Returns the kept rows
    and the count per geometry type of the rows dropped (``"None"`` for no geometry)."""
    geom = gdf.geometry
    types = geom.geom_type.fillna("None")
    collections = (types == "GeometryCollection").to_numpy()
    if collections.any():
        geom = geom.copy()
        geom[collections] = [_polygonal_part(g) for g in geom[collections]]
        types = geom.geom_type.fillna("None")
    keep = types.isin(POLYGONAL).to_numpy() & ~geom.is_empty.to_numpy()
    dropped: Counter[str] = Counter(gdf.geometry.geom_type.fillna("None")[~keep])
    out = gdf[keep].copy()
    out.geometry = geom[keep]
    return out, dropped


def describe_dropped(dropped: Counter[str] | dict[str, int]) -> str:
    """``"1 LineString, 2 Point"``: the dropped counts for a log line."""
    return ", ".join(f"{n} {t}" for t, n in sorted(dropped.items()))


def _polygonal_part(geom: shapely.Geometry) -> shapely.Geometry | None:
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in POLYGONAL]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else shapely.union_all(parts)


def bbox_in(bbox: Bbox, crs: Any) -> tuple[float, ...]:
    """The WGS84 ``bbox`` expressed in ``crs`` (densified edges, x/y order), e.g. for
    OGR's spatial filter; unchanged when ``crs`` is None, unknown or WGS84."""
    if crs is None:
        return tuple(bbox)
    try:
        target = CRS.from_user_input(crs)
    except CRSError:
        return tuple(bbox)
    if target.equals(CRS.from_epsg(4326), ignore_axis_order=True):
        return tuple(bbox)
    t = Transformer.from_crs("EPSG:4326", target, always_xy=True)
    return tuple(t.transform_bounds(*bbox, densify_pts=21))


# --- ids ---------------------------------------------------------------------------------


def feature_ids(
    gdf: gpd.GeoDataFrame,
    id_field: str | None,
    name: str,
    *,
    candidates: tuple[str, ...] = ID_FIELDS,
) -> pd.Series:
    """Unique string ids for ``gdf``.

    ``id_field`` when given (an error naming the columns when absent), else the first of
    ``candidates`` present, else ``"g" + sha1(normalised WKB)[:16]`` of the geometry
    (:func:`geometry_ids`). Features whose id is empty get a geometry id; duplicate ids
    raise :class:`VectorDataError`.
    """
    if id_field is not None and id_field not in gdf.columns:
        if len(gdf) == 0:
            return pd.Series([], dtype=object, index=gdf.index)
        cols = ", ".join(c for c in gdf.columns if c != gdf.geometry.name)
        raise VectorDataError(f"{name}: id_field {id_field!r} not found; columns: {cols}")
    field = id_field or next((f for f in candidates if f in gdf.columns), None)
    if field is None:
        return geometry_ids(gdf.geometry)
    ids = as_text(gdf[field])
    missing = ids.isna().to_numpy()
    if missing.any():
        ids[missing] = geometry_ids(gdf.geometry[missing]).to_numpy()
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        examples = ", ".join(sorted(set(dup), key=str)[:5])
        raise VectorDataError(
            f"{name}: field {field!r} has duplicate ids ({dup.nunique()} values, e.g. "
            f"{examples}); ids must be unique — set 'id_field' to a unique field"
        )
    return ids


def as_text(values: pd.Series) -> pd.Series:
    """Ids as strings; integral floats (ints widened by NaN) lose their ``.0``."""
    if pd.api.types.is_float_dtype(values):
        finite = values.dropna()
        if len(finite) and np.all(np.mod(finite, 1) == 0):
            values = values.astype("Int64")
    text = values.astype("string")
    return text.astype(object).where(text.notna(), None)


def geometry_ids(geoms: gpd.GeoSeries) -> pd.Series:
    """``"g" + sha1(normalised WKB)[:16]``; ``-2``, ``-3``... for repeated geometries."""
    wkb = shapely.to_wkb(shapely.normalize(geoms.values), hex=False)
    seen: Counter[str] = Counter()
    out = []
    for blob in wkb:
        gid = "g" + hashlib.sha1(blob).hexdigest()[:16]
        seen[gid] += 1
        out.append(gid if seen[gid] == 1 else f"{gid}-{seen[gid]}")
    return pd.Series(out, index=geoms.index, dtype=object)


# --- identity ----------------------------------------------------------------------------


def frame_fingerprint(gdf: gpd.GeoDataFrame, *, extra: str = "") -> str:
    """sha256 of features, independent of their order:
    ``sha256(extra ‖ for each feature by feature_id: id, attributes as sorted JSON, WKB)``."""
    digest = hashlib.sha256(extra.encode() + b"\0")
    if len(gdf) == 0:
        return digest.hexdigest()
    ordered = gdf.sort_values("feature_id", kind="stable")
    attrs = ordered.drop(columns=["feature_id", ordered.geometry.name])
    wkb = shapely.to_wkb(ordered.geometry.values, hex=False)
    for fid, row, blob in zip(
        ordered["feature_id"], attrs.to_dict(orient="records"), wkb, strict=True
    ):
        digest.update(str(fid).encode() + b"\0")
        digest.update(json.dumps(row, sort_keys=True, default=str).encode() + b"\0")
        digest.update(blob or b"")
    return digest.hexdigest()
