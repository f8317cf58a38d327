"""Building footprints from a vector file or URL (GeoJSON, GeoPackage, Shapefile, GeoParquet).

Read with pyogrio (GeoParquet with geopandas/pyarrow), reprojected to EPSG:4326, reduced
to polygonal features with a unique string ``feature_id``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError, FieldError, GeometryError
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from pipeline.errors import VectorDataError
from pipeline.sources.base import (
    VectorSource,
    is_remote,
    register_vector,
    resolve_path,
    sha256_files,
)
from pipeline.sources.retry import with_retries
from pipeline.sources.specs import VectorSpec

log = logging.getLogger(__name__)

ID_FIELDS = ("feature_id", "id", "osm_id", "@id")  # looked up in this order without id_field
PARQUET_SUFFIXES = (".parquet", ".geoparquet")
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx")
POLYGONAL = ("Polygon", "MultiPolygon")
_OGR_ERRORS = (DataSourceError, DataLayerError, FieldError, GeometryError)


@register_vector("vector")
class VectorFileSource(VectorSource):
    """Any OGR-readable vector file or URL, plus GeoParquet.

    Ids (``feature_id``): ``spec.id_field``, else the first of ``feature_id``, ``id``,
    ``osm_id``, ``@id`` present, else ``"g" + sha1(normalised WKB)[:16]`` of the geometry
    (``-2``, ``-3``... appended to identical geometries), which is stable across reads.
    Features whose id field is empty get such a geometry id too (logged); duplicate ids
    raise :class:`VectorDataError`.
    """

    def __init__(
        self, spec: VectorSpec, *, step: str | None = None, base_dir: Path | None = None
    ) -> None:
        self.spec = spec
        self.path = resolve_path(spec.path, step=step, base_dir=base_dir)
        self._remote = is_remote(self.path) and not self.path.startswith("/vsi")
        self._bytes: bytes | None = None
        self._fingerprint: str | None = None
        self._read_info: dict[str, Any] = {}
        if not is_remote(self.path) and not Path(self.path).exists():
            raise VectorDataError(f"{self.path}: file not found")
        name = self.path.split("?", 1)[0].lower()
        self._parquet = name.endswith(PARQUET_SUFFIXES)

    def close(self) -> None:
        self._bytes = None

    # -- reading --------------------------------------------------------------------

    def _input(self) -> Any:
        """What pyogrio / pyarrow read: a local path, a /vsi path or the downloaded bytes."""
        return io.BytesIO(self._downloaded()) if self._remote else self.path

    def _downloaded(self) -> bytes:
        if self._bytes is None:
            self._bytes = _download(self.path)
        return self._bytes

    def read(self, bbox: tuple[float, float, float, float] | None = None) -> gpd.GeoDataFrame:
        """Polygons intersecting the WGS84 ``bbox`` (all when None), EPSG:4326, ``feature_id``."""
        gdf = self._read_raw(bbox)
        n_read = len(gdf)
        declared = gdf.crs.to_string() if gdf.crs is not None else None
        gdf = _to_wgs84(gdf, self.path)
        n_before = len(gdf)
        types = gdf.geometry.geom_type.fillna("None")
        gdf = _polygons_only(gdf, self.path)
        dropped = Counter(types[~types.index.isin(gdf.index)]) if len(gdf) < n_before else {}
        self._read_info = {"n_read": n_read, "crs": declared, "dropped": dict(dropped)}
        if bbox is not None and len(gdf):
            gdf = gdf[gdf.intersects(shapely.box(*bbox))]
        if len(gdf) == 0:
            if n_read == 0 and bbox is None:
                raise VectorDataError(f"{self.path}: no features (empty file or layer)")
            if n_read and bbox is None:
                raise VectorDataError(
                    f"{self.path}: no polygon features; footprints must be polygons"
                )
            log.warning("%s: no polygon features within bbox %s", self.path, bbox)
        ids = self._ids(gdf)
        out = gdf.drop(columns=["feature_id"], errors="ignore")
        out.insert(0, "feature_id", ids)
        return out.reset_index(drop=True)

    def _read_raw(self, bbox: tuple[float, float, float, float] | None) -> gpd.GeoDataFrame:
        path, spec = self.path, self.spec
        try:
            if self._parquet:
                gdf = gpd.read_parquet(self._input())
                if spec.where:
                    gdf = _where(gdf, spec.where, path)
                return gdf
            src_bbox = None
            if bbox is not None:
                crs = pyogrio.read_info(self._input(), layer=spec.layer).get("crs")
                src_bbox = _bbox_in(bbox, crs)
            return pyogrio.read_dataframe(
                self._input(),
                layer=spec.layer,
                where=spec.where,
                bbox=src_bbox,
                on_invalid="ignore",
            )
        except VectorDataError:
            raise
        except (*_OGR_ERRORS, ValueError, OSError) as exc:
            raise self._read_error(exc) from exc

    def _read_error(self, exc: Exception) -> VectorDataError:
        """Name the file and the likely culprit: the where filter, the layer or the content."""
        path, spec, text = self.path, self.spec, str(exc)
        if spec.where and (
            isinstance(exc, FieldError) or any(w in text.lower() for w in ("sql", "where"))
        ):
            return VectorDataError(f"{path}: filter where={spec.where!r} is not valid ({text})")
        if isinstance(exc, DataLayerError):
            layers = _layers(self._input())
            return VectorDataError(
                f"{path}: cannot read layer {spec.layer!r} ({text}); layers: {layers}"
            )
        return VectorDataError(f"{path}: cannot read vector data ({_explain(self._input(), exc)})")

    def _ids(self, gdf: gpd.GeoDataFrame) -> pd.Series:
        field = self.spec.id_field
        if field is not None and field not in gdf.columns:
            if len(gdf) == 0:
                return pd.Series([], dtype=object, index=gdf.index)
            cols = ", ".join(c for c in gdf.columns if c != "geometry")
            raise VectorDataError(f"{self.path}: id_field {field!r} not found; columns: {cols}")
        if field is None:
            field = next((f for f in ID_FIELDS if f in gdf.columns), None)
        if field is None:
            return _geometry_ids(gdf.geometry)
        ids = _as_text(gdf[field])
        missing = ids.isna().to_numpy()
        if missing.any():
            log.info(
                "%s: %d features have no %r; using geometry ids for them",
                self.path,
                missing.sum(),
                field,
            )
            ids[missing] = _geometry_ids(gdf.geometry[missing]).to_numpy()
        dup = ids[ids.duplicated(keep=False)]
        if len(dup):
            examples = ", ".join(sorted(set(dup), key=str)[:5])
            raise VectorDataError(
                f"{self.path}: field {field!r} has duplicate ids ({dup.nunique()} values, e.g. "
                f"{examples}); ids must be unique — set 'id_field' to a unique field"
            )
        return ids

    def read_info(self) -> dict[str, Any]:
        """``n_read``, declared ``crs`` and ``dropped`` non-polygons of the last read."""
        return dict(self._read_info)

    # -- identity ---------------------------------------------------------------------

    def fingerprint(self) -> str:
        """sha256 of the file bytes (Shapefile: of all its parts; URL: of the downloaded bytes)."""
        if self._fingerprint is None:
            if self._remote:
                self._fingerprint = hashlib.sha256(self._downloaded()).hexdigest()
            elif self.path.startswith("/vsi"):
                gdf = self.read()
                digest = hashlib.sha256(gdf.drop(columns="geometry").to_json().encode())
                digest.update(b"".join(shapely.to_wkb(gdf.geometry.values)))
                self._fingerprint = digest.hexdigest()
            else:
                self._fingerprint = sha256_files(_files_of(Path(self.path)))
        return self._fingerprint


# --- helpers ------------------------------------------------------------------------


def _download(url: str) -> bytes:
    """Bytes at ``url``: http(s) with urllib, other schemes (s3://, gs://...) with fsspec."""

    def read() -> bytes:
        if url.startswith(("http://", "https://")):
            with urllib.request.urlopen(url, timeout=120) as resp:  # noqa: S310 (user's URL)
                return resp.read()
        import fsspec

        with fsspec.open(url, "rb") as f:
            return f.read()

    try:
        return with_retries(read, url)
    except ImportError as exc:
        raise VectorDataError(
            f"{url}: cannot download ({exc}); install the fsspec backend"
        ) from exc
    except (OSError, ValueError) as exc:
        tries = getattr(exc, "geoaudit_attempts", None)
        after = f" after {tries} attempts" if tries else ""
        raise VectorDataError(f"{url}: cannot download{after} ({exc})") from exc


def _files_of(path: Path) -> list[Path]:
    """The files whose bytes define a local dataset (Shapefile parts, a directory's files)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if path.suffix.lower() == ".shp":
        parts = (path.with_suffix(s) for s in SHAPEFILE_PARTS)
        return [p for p in parts if p.exists()]
    return [path]


def _layers(src: Any) -> str:
    try:
        return ", ".join(str(name) for name, _ in pyogrio.list_layers(src))
    except _OGR_ERRORS:
        return "?"


def _explain(src: Any, exc: Exception) -> str:
    """Pinpoint JSON syntax errors, which GDAL reports only as 'not recognized'."""
    text: bytes | None = None
    if isinstance(src, io.BytesIO):
        text = src.getvalue()
    elif isinstance(src, str) and src.lower().endswith((".geojson", ".json")):
        try:
            text = Path(src).read_bytes()
        except OSError:
            text = None
    if text is not None:
        try:
            json.loads(text)
        except UnicodeDecodeError:
            return f"not UTF-8 text: {exc}"
        except json.JSONDecodeError as jexc:
            return f"invalid JSON: {jexc}"
    return str(exc)


def _bbox_in(bbox: tuple[float, float, float, float], crs: str | None) -> tuple[float, ...]:
    """The WGS84 ``bbox`` expressed in ``crs`` (densified), for OGR's spatial filter."""
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


def _looks_lonlat(gdf: gpd.GeoDataFrame) -> bool:
    geoms = gdf.geometry[~(gdf.geometry.isna() | gdf.geometry.is_empty)]
    if len(geoms) == 0:
        return True
    w, s, e, n = geoms.total_bounds
    return w >= -180.0 and e <= 180.0 and s >= -90.0 and n <= 90.0


def _to_wgs84(gdf: gpd.GeoDataFrame, path: str) -> gpd.GeoDataFrame:
    """Reproject to EPSG:4326; no CRS is accepted only if coordinates look like lon/lat."""
    if gdf.crs is None:
        if not _looks_lonlat(gdf):
            raise VectorDataError(
                f"{path}: data has no CRS and coordinates are not lon/lat "
                f"(bounds {tuple(round(v, 2) for v in gdf.total_bounds)}); "
                "declare the CRS in the file"
            )
        log.info("%s: no CRS; assuming EPSG:4326 (coordinates look like lon/lat)", path)
        return gdf.set_crs(4326)
    if gdf.crs.is_geographic and not _looks_lonlat(gdf):
        raise VectorDataError(
            f"{path}: CRS {gdf.crs.to_string()} is geographic but coordinates are outside lon/lat "
            "range; declare the projected CRS in the file"
        )
    if gdf.crs.equals(CRS.from_epsg(4326)):
        return gdf
    return gdf.to_crs(4326)


def _polygons_only(gdf: gpd.GeoDataFrame, path: str) -> gpd.GeoDataFrame:
    """Keep (Multi)Polygons; collections keep their polygonal parts; count what is dropped."""
    geom = gdf.geometry
    types = geom.geom_type.fillna("None")
    collections = (types == "GeometryCollection").to_numpy()
    if collections.any():
        geom = geom.copy()
        geom[collections] = [_polygonal_part(g) for g in geom[collections]]
        types = geom.geom_type.fillna("None")
    keep = types.isin(POLYGONAL).to_numpy() & ~geom.is_empty.to_numpy()
    if not keep.all():
        dropped = Counter(types[~keep])
        detail = ", ".join(f"{n} {t}" for t, n in sorted(dropped.items()))
        log.info("%s: dropped %d non-polygon features (%s)", path, int((~keep).sum()), detail)
    out = gdf[keep].copy()
    out.geometry = geom[keep]
    return out


def _polygonal_part(geom: shapely.Geometry) -> shapely.Geometry | None:
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in POLYGONAL]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else shapely.union_all(parts)


def _as_text(values: pd.Series) -> pd.Series:
    """Ids as strings; integral floats (ints widened by NaN) lose their ``.0``."""
    if pd.api.types.is_float_dtype(values):
        finite = values.dropna()
        if len(finite) and np.all(np.mod(finite, 1) == 0):
            values = values.astype("Int64")
    text = values.astype("string")
    return text.astype(object).where(text.notna(), None)


def _geometry_ids(geoms: gpd.GeoSeries) -> pd.Series:
    """``"g" + sha1(normalised WKB)[:16]``; ``-2``, ``-3``... for repeated geometries."""
    wkb = shapely.to_wkb(shapely.normalize(geoms.values), hex=False)
    seen: Counter[str] = Counter()
    out = []
    for blob in wkb:
        gid = "g" + hashlib.sha1(blob).hexdigest()[:16]
        seen[gid] += 1
        out.append(gid if seen[gid] == 1 else f"{gid}-{seen[gid]}")
    return pd.Series(out, index=geoms.index, dtype=object)


def _where(gdf: gpd.GeoDataFrame, where: str, path: str) -> gpd.GeoDataFrame:
    """Apply an OGR SQL ``where`` to an in-memory frame (GeoParquet has no OGR driver here)."""
    buf = io.BytesIO()
    pyogrio.write_dataframe(gdf, buf, driver="FlatGeobuf", layer="data")
    try:
        return pyogrio.read_dataframe(buf.getvalue(), layer="data", where=where)
    except (*_OGR_ERRORS,) as exc:
        raise VectorDataError(f"{path}: filter where={where!r} is not valid ({exc})") from exc


__all__ = ["VectorFileSource"]
