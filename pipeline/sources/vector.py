"""Building footprints from a vector file or URL (GeoJSON, GeoPackage, Shapefile, GeoParquet).

Read with pyogrio (GeoParquet with geopandas/pyarrow), reprojected to EPSG:4326, reduced
to polygonal features with a unique string ``feature_id`` (:mod:`pipeline.sources.frames`).

Rules:
- A file with several spatial layers (a GeoPackage, a folder of Shapefiles) needs
  ``layer:``; without it the read fails listing the layers (no silent first layer).
- A URL (``http(s)://``, ``s3://``...) is streamed to a temporary file once, hashed on
  the way, and read from there; ``/vsi...`` paths are GDAL's to read.
- GeoParquet (``.parquet``/``.geoparquet``) is read with geopandas; a bbox is pushed
  down to the file when it has a bbox covering column, in the file's CRS.
- Messages name the path with a URL's query string masked (it may carry a token).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import geopandas as gpd
import pyogrio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError, FieldError, GeometryError

from pipeline.errors import VectorDataError
from pipeline.sources.base import (
    VectorSource,
    is_remote,
    register_vector,
    resolve_path,
    sha256_files,
)
from pipeline.sources.frames import (
    ID_FIELDS,
    bbox_in,
    check_unreferenced,
    describe_dropped,
    feature_ids,
    finish,
)
from pipeline.sources.identity import vector_files
from pipeline.sources.specs import VectorSpec
from pipeline.sources.urls import mask_url, scrub
from pipeline.sources.vector_http import stream_to_file

log = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".geoparquet")
_OGR_ERRORS = (DataSourceError, DataLayerError, FieldError, GeometryError)

__all__ = ["VectorFileSource"]


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
        self._location = resolve_path(spec.path, step=step, base_dir=base_dir)
        self.path = mask_url(self._location) if is_remote(self._location) else self._location
        self._remote = is_remote(self._location) and not self._location.startswith("/vsi")
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._local: str | None = None
        self._download_sha: str | None = None
        self._fingerprint: str | None = None
        self._read_info: dict[str, Any] = {}
        if not is_remote(self._location) and not Path(self._location).exists():
            raise VectorDataError(f"{self.path}: file not found")
        name = urllib.parse.urlsplit(self._location).path if self._remote else self._location
        self._parquet = name.lower().endswith(PARQUET_SUFFIXES)
        self._without_geometry = 0  # null/empty geometries a bbox read counted apart

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
        self._tmp = self._local = None

    # -- reading --------------------------------------------------------------------

    def _input(self) -> str:
        """What pyogrio / pyarrow read: a local path, a /vsi path or the downloaded file."""
        return self._downloaded() if self._remote else self._location

    def _downloaded(self) -> str:
        """The URL streamed once to a temporary file named like the URL's file."""
        if self._local is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="geoaudit-vector-")
            name = Path(urllib.parse.urlsplit(self._location).path).name or "download"
            dest = Path(self._tmp.name) / name
            self._download_sha = stream_to_file(self._location, dest, what=self.path)
            self._local = str(dest)
        return self._local

    def read(self, bbox: tuple[float, float, float, float] | None = None) -> gpd.GeoDataFrame:
        """Polygons intersecting the WGS84 ``bbox`` (all when None), EPSG:4326, ``feature_id``."""
        raw = self._read_raw(bbox)
        field = self.spec.id_field

        def ids(gdf: gpd.GeoDataFrame) -> Any:
            out = feature_ids(gdf, field, self.path)
            used = field or next((f for f in ID_FIELDS if f in gdf.columns), None)
            if used is not None and used in gdf.columns and gdf[used].isna().any():
                log.info(
                    "%s: %d features have no %r; using geometry ids for them",
                    self.path,
                    int(gdf[used].isna().sum()),
                    used,
                )
            return out

        gdf, info = finish(
            raw, name=self.path, bbox=bbox, ids=ids, without_geometry=self._without_geometry
        )
        self._read_info = info
        if info["no_geometry"]:
            log.warning(
                "%s: %d features have no geometry (null or empty) and were left out",
                self.path,
                info["no_geometry"],
            )
        if info["dropped"]:
            n = sum(info["dropped"].values())
            detail = describe_dropped(info["dropped"])
            log.info("%s: dropped %d non-polygon features (%s)", self.path, n, detail)
        if len(gdf) == 0:
            if info["n_read"] == 0 and bbox is None:
                raise VectorDataError(f"{self.path}: no features (empty file or layer)")
            if info["n_read"] and bbox is None:
                raise VectorDataError(
                    f"{self.path}: no polygon features; footprints must be polygons"
                )
            log.warning("%s: no polygon features within bbox %s", self.path, bbox)
        return gdf

    def _read_raw(self, bbox: tuple[float, float, float, float] | None) -> gpd.GeoDataFrame:
        spec = self.spec
        try:
            if self._parquet:
                return self._read_parquet(bbox)
            layer = self._layer()
            src_bbox = None
            self._without_geometry = 0
            if bbox is not None:
                about = pyogrio.read_info(self._input(), layer=layer, force_total_bounds=True)
                if about.get("crs") is None:  # a bbox in lon/lat would match nothing
                    check_unreferenced(about.get("total_bounds"), self.path)
                src_bbox = bbox_in(bbox, about.get("crs"))
                self._without_geometry = self._count_without_geometry(layer)
            return pyogrio.read_dataframe(
                self._input(), layer=layer, where=spec.where, bbox=src_bbox, on_invalid="ignore"
            )
        except VectorDataError:
            raise
        except (*_OGR_ERRORS, ValueError, OSError) as exc:
            raise self._read_error(exc) from exc

    def _count_without_geometry(self, layer: str | None) -> int:
        """Features with a null or empty geometry, which a bbox filter never returns (so
        they are counted apart, not lost uncounted)."""
        geoms = pyogrio.read_dataframe(
            self._input(), layer=layer, where=self.spec.where, columns=[], on_invalid="ignore"
        ).geometry
        return int((geoms.isna() | geoms.is_empty).sum())

    def _layer(self) -> str | None:
        """``spec.layer``; without it the one spatial layer, or an error listing them."""
        if self.spec.layer is not None:
            return self.spec.layer
        layers = pyogrio.list_layers(self._input())
        spatial = [str(name) for name, geom_type in layers if geom_type is not None]
        if len(spatial) > 1:
            raise VectorDataError(
                f"{self.path}: has {len(spatial)} layers ({', '.join(spatial)}); "
                "set 'layer' to the one with the footprints"
            )
        return spatial[0] if spatial else None

    def _read_parquet(self, bbox: tuple[float, float, float, float] | None) -> gpd.GeoDataFrame:
        """GeoParquet: the bbox pushed down when the file has a bbox covering column."""
        src, spec = self._input(), self.spec
        if spec.layer is not None:
            raise VectorDataError(
                f"{self.path}: 'layer' is not used by GeoParquet (one table per file); remove it"
            )
        geo = _geoparquet_metadata(src, self.path)
        primary = geo.get("primary_column", "geometry")
        column = geo.get("columns", {}).get(primary, {})
        pushdown = None
        if bbox is not None and "covering" in column:
            pushdown = bbox_in(bbox, json.dumps(column["crs"]) if column.get("crs") else None)
        gdf = gpd.read_parquet(src, bbox=pushdown)
        if spec.where:
            gdf = _where(gdf, spec.where, self.path)
        return gdf

    def _read_error(self, exc: Exception) -> VectorDataError:
        """Name the file and the likely culprit: the where filter, the layer or the content."""
        path, spec, text = self.path, self.spec, scrub(str(exc), self._location)
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

    def read_info(self) -> dict[str, Any]:
        """``n_read``, declared ``crs`` and ``dropped`` non-polygons of the last read."""
        return dict(self._read_info)

    # -- identity ---------------------------------------------------------------------

    def fingerprint(self) -> str:
        """sha256 of the file bytes (Shapefile: of all its parts; URL: of the downloaded bytes)."""
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        if self._remote:
            self._downloaded()
            return str(self._download_sha)
        if self._location.startswith("/vsi"):
            gdf = self.read()
            digest = hashlib.sha256(gdf.drop(columns="geometry").to_json().encode())
            digest.update(b"".join(shapely.to_wkb(gdf.geometry.values)))
            return digest.hexdigest()
        return sha256_files(vector_files(Path(self._location)))


# --- helpers ------------------------------------------------------------------------


def _geoparquet_metadata(src: str, name: str) -> dict[str, Any]:
    """The ``geo`` metadata of a GeoParquet file; a plain Parquet file is an error."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(src).metadata or {}
    except (OSError, ValueError) as exc:
        raise VectorDataError(f"{name}: cannot read Parquet ({exc})") from exc
    if b"geo" not in metadata:
        raise VectorDataError(
            f"{name}: Parquet file has no 'geo' metadata; write it as GeoParquet "
            "(e.g. GeoDataFrame.to_parquet)"
        )
    try:
        return json.loads(metadata[b"geo"])
    except json.JSONDecodeError as exc:
        raise VectorDataError(f"{name}: GeoParquet 'geo' metadata is not JSON ({exc})") from exc


def _layers(src: Any) -> str:
    try:
        return ", ".join(str(name) for name, _ in pyogrio.list_layers(src))
    except _OGR_ERRORS:
        return "?"


def _explain(src: Any, exc: Exception) -> str:
    """Pinpoint JSON syntax errors, which GDAL reports only as 'not recognized'."""
    text: bytes | None = None
    if isinstance(src, str) and src.lower().endswith((".geojson", ".json")):
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


def _where(gdf: gpd.GeoDataFrame, where: str, path: str) -> gpd.GeoDataFrame:
    """Apply an OGR SQL ``where`` to an in-memory frame (GeoParquet has no OGR driver here)."""
    buf = io.BytesIO()
    pyogrio.write_dataframe(gdf, buf, driver="FlatGeobuf", layer="data")
    try:
        return pyogrio.read_dataframe(buf.getvalue(), layer="data", where=where)
    except (*_OGR_ERRORS,) as exc:
        raise VectorDataError(f"{path}: filter where={where!r} is not valid ({exc})") from exc
