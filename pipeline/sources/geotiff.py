"""GeoTIFF / COG / VRT imagery, local or remote, read per shard with rio-tiler.

A GDAL WMS/WMTS service description (``<GDAL_WMS>`` XML, ``WMS:`` connection string) is
refused: such services are the ``wms``, ``wmts`` and ``xyz`` kinds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import urllib.parse
import urllib.request
import uuid
import warnings
import xml.etree.ElementTree as ET
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from rasterio.errors import RasterioError
from rasterio.features import shapes
from rasterio.io import DatasetReader
from rasterio.warp import transform_bounds
from rio_tiler.errors import RioTilerError
from rio_tiler.io import Reader
from shapely.geometry.base import BaseGeometry

from pipeline.errors import ImageryError
from pipeline.sources.base import (
    ImagerySource,
    ShardImage,
    is_remote,
    register_imagery,
    resolve_path,
    sha256_files,
)
from pipeline.sources.identity import raster_files
from pipeline.sources.retry import attempts
from pipeline.sources.specs import GeoTiffSpec
from pipeline.sources.urls import mask_url
from pipeline.tiles import Shard, xy_bounds

log = logging.getLogger(__name__)

WEB_MERCATOR = "EPSG:3857"
STRETCH_PERCENTILES = (0.5, 99.5)  # mild: bright roofs must not saturate
CLIPPED_WARN_SHARE = 0.02  # warn when more valid pixels than this clip at 0 or 255
FOOTPRINT_MAX_SIZE = 512  # px of the low-resolution mask the footprint is traced from
PREVIEW_MAX_SIZE = 1024  # px of the overview the default stretch is computed from


@register_imagery("geotiff")
class GeoTiffSource(ImagerySource):
    """A GeoTIFF/COG (any raster GDAL opens) warped to EPSG:3857 shard by shard.

    Pixels: bands ``spec.bands`` (one band is replicated to grey RGB); non-uint8 data,
    or any data when ``spec.rescale`` is set, maps ``[lo, hi]`` linearly to ``0..255``
    (``v8 = clip((v - lo) / (hi - lo), 0, 1) * 255``), with ``(lo, hi)`` the 0.5th/99.5th
    percentile of all selected bands over the overview unless ``spec.rescale`` is given;
    a warning names the share of pixels clipped when it exceeds 2 %.
    Valid mask: rio-tiler's mask (nodata / internal mask / alpha band) — a pixel is
    valid where any selected band is.

    ``dataset``: an already-open rasterio dataset to read instead of opening ``spec.path``
    (it stays open on close; the caller owns it).
    """

    reproject_method = "bilinear"
    resampling_method = "bilinear"

    def __init__(
        self,
        spec: GeoTiffSpec,
        *,
        step: str | None = None,
        base_dir: Path | None = None,
        dataset: DatasetReader | None = None,
    ) -> None:
        self.spec = spec
        self.path = (
            dataset.name
            if dataset is not None
            else resolve_path(spec.path, step=step, base_dir=base_dir)
        )
        self._stack = ExitStack()
        self._stretch: tuple[float, float] | None = spec.rescale
        self._stretch_checked = False
        self._footprint: BaseGeometry | None = None
        self._fingerprint: str | None = None
        try:
            self._open(dataset)
        except BaseException:
            self._stack.close()
            raise

    def _open(self, dataset: DatasetReader | None) -> None:
        path = self.path
        if dataset is None:
            if not is_remote(path) and not Path(path).exists():
                raise ImageryError(f"{path}: file not found")
            _refuse_service_description(path)
            # remote: no directory listing / sidecar probing (a COG carries its overviews)
            # GDAL retries HTTP 429/5xx itself (GEOAUDIT_SOURCE_ATTEMPTS in all)
            env = (
                {
                    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
                    "GDAL_HTTP_MAX_RETRY": str(attempts() - 1),
                    "GDAL_HTTP_RETRY_DELAY": "1",
                }
                if is_remote(path)
                else {}
            )
            try:
                with rasterio.Env(**env):
                    dataset = self._stack.enter_context(rasterio.open(path))
            except RasterioError as exc:
                raise ImageryError(f"{path}: not a readable raster ({_detail(exc)})") from exc
        if dataset.driver in SERVICE_DRIVERS:
            raise ImageryError(_service_message(path, dataset.driver))
        if dataset.crs is None and not dataset.gcps[0]:
            raise ImageryError(
                f"{path}: raster has no CRS; georeference it (e.g. gdal_edit.py -a_srs EPSG:xxxx)"
            )
        count = dataset.count
        missing = [b for b in self.spec.bands if b > count]
        if missing:
            hint = "; set 'bands: [1]' for a single grey band" if count < 3 else ""
            raise ImageryError(
                f"{path}: raster has {count} band{'s' if count != 1 else ''}, spec asks for "
                f"bands {self.spec.bands}{hint}"
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NoOverviewWarning: fine for small files
            try:
                self._reader = self._stack.enter_context(Reader(path, dataset=dataset))
            except (RasterioError, RioTilerError) as exc:
                raise ImageryError(f"{path}: not a readable raster ({_detail(exc)})") from exc
        self._dtype = np.dtype(dataset.dtypes[self.spec.bands[0] - 1])
        ds = self._reader.dataset
        self._bounds_3857 = transform_bounds(ds.crs, WEB_MERCATOR, *ds.bounds, densify_pts=21)

    def close(self) -> None:
        self._stack.close()

    # -- pixels -----------------------------------------------------------------

    def read_shard(self, shard: Shard) -> ShardImage:
        """Warp the selected bands onto the shard grid (``shard_transform(shard)``)."""
        size = shard.size
        bounds = xy_bounds(shard.tile)
        if not _overlaps(bounds, self._bounds_3857):
            return _empty(shard)
        try:
            img = self._reader.part(
                bounds,
                dst_crs=WEB_MERCATOR,
                bounds_crs=WEB_MERCATOR,
                width=size,
                height=size,
                indexes=self.spec.bands,
                nodata=self.spec.nodata,
                reproject_method=self.reproject_method,
                resampling_method=self.resampling_method,
            )
        except (RasterioError, RioTilerError) as exc:
            raise ImageryError(
                f"{self.path}: cannot read pixels of shard {shard.id} ({_detail(exc)})"
            ) from exc
        masked = img.array
        valid = ~np.ma.getmaskarray(masked).all(axis=0)
        data = self._to_uint8(np.ma.getdata(masked))
        data[:, ~valid] = 0
        if data.shape[0] == 1:
            data = np.repeat(data, 3, axis=0)
        return ShardImage(shard, np.ascontiguousarray(data), valid)

    def _to_uint8(self, data: np.ndarray) -> np.ndarray:
        if self._dtype == np.uint8 and self.spec.rescale is None:
            return data.astype(np.uint8, copy=True)
        lo, hi = self.stretch()
        scaled = (data.astype(np.float32) - lo) * (255.0 / (hi - lo))
        return np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).round().astype(np.uint8)

    def stretch(self) -> tuple[float, float]:
        """``(lo, hi)`` mapped to 0..255: ``spec.rescale`` or the 0.5–99.5 % percentiles
        of the overview; a warning when more than 2 % of its pixels clip either way."""
        if not self._stretch_checked:
            self._stretch_checked = True
            values = self._overview_values()
            if self._stretch is None:
                lo, hi = (float(v) for v in np.percentile(values, STRETCH_PERCENTILES))
                self._stretch = (lo, hi if hi > lo else lo + 1.0)
                log.info("%s: stretching %s..%s to 0..255", self.path, *self._stretch)
            lo, hi = self._stretch
            low, high = float((values < lo).mean()), float((values > hi).mean())
            if max(low, high) > CLIPPED_WARN_SHARE:
                log.warning(
                    "%s: the %s..%s stretch to 0..255 clips %.1f %% of the pixels to black and "
                    "%.1f %% to white (detail lost there); set 'rescale: [min, max]' to the "
                    "range of the data",
                    self.path,
                    lo,
                    hi,
                    100 * low,
                    100 * high,
                )
        assert self._stretch is not None
        return self._stretch

    def _overview_values(self) -> np.ndarray:
        """The valid values of the selected bands over the overview, as float64."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = self._reader.preview(
                    indexes=self.spec.bands, max_size=PREVIEW_MAX_SIZE, nodata=self.spec.nodata
                )
        except (RasterioError, RioTilerError) as exc:
            raise ImageryError(f"{self.path}: cannot read the overview ({_detail(exc)})") from exc
        values = img.array.compressed().astype(np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ImageryError(f"{self.path}: raster has no valid pixel (all nodata)")
        return values

    # -- footprint / fingerprint ---------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Band count, dtype of the bands read, and CRS of the raster."""
        ds = self._reader.dataset
        return {
            "band_count": int(ds.count),
            "dtype": str(self._dtype),
            "crs": ds.crs.to_string() if ds.crs else None,
        }

    def footprint(self) -> BaseGeometry:
        """Valid-data area in EPSG:4326, traced from the mask at <= 512 px resolution."""
        if self._footprint is None:
            ds = self._reader.dataset
            scale = max(ds.width, ds.height) / FOOTPRINT_MAX_SIZE
            if scale > 1:
                shape = (max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
            else:
                shape = (ds.height, ds.width)
            try:
                mask = ds.dataset_mask(out_shape=shape) > 0
            except RasterioError as exc:
                raise ImageryError(
                    f"{self.path}: cannot read the data mask ({_detail(exc)})"
                ) from exc
            transform = ds.transform @ Affine.scale(ds.width / shape[1], ds.height / shape[0])
            if mask.all():
                geom: BaseGeometry = shapely.box(*ds.bounds)
            else:
                parts = [
                    shapely.geometry.shape(g)
                    for g, _ in shapes(mask.astype(np.uint8), mask=mask, transform=transform)
                ]
                geom = shapely.union_all(parts) if parts else shapely.Polygon()
            self._footprint = _to_wgs84(geom, ds.crs, step=abs(transform.a))
        return self._footprint

    def fingerprint(self) -> str:
        """Local: sha256 of the file bytes (+ .ovr/.msk sidecars); remote: of ETag/size/date.
        A VRT: of its own bytes and of every file it references (:func:`vrt_fingerprint`),
        so new or changed files behind an unchanged VRT change it."""
        if self._fingerprint is None:
            if self._reader.dataset.driver == "VRT" or self.path.lower().endswith(".vrt"):
                self._fingerprint = vrt_fingerprint(self.path)
            elif not is_remote(self.path):
                self._fingerprint = sha256_files(raster_files(Path(self.path)))
            else:
                self._fingerprint = self._remote_fingerprint()
        return self._fingerprint

    def _remote_fingerprint(self) -> str:
        ident = _http_identity(self.path) if self.path.startswith(("http://", "https://")) else None
        if ident is None:  # no HTTP validators: identity from what GDAL sees
            ds = self._reader.dataset
            preview = self._reader.preview(max_size=256).array
            ident = (
                json.dumps(
                    {
                        "profile": {k: str(v) for k, v in ds.profile.items()},
                        "bounds": list(ds.bounds),
                    },
                    sort_keys=True,
                )
                + hashlib.sha256(np.ma.getdata(preview).tobytes()).hexdigest()
            )
        return hashlib.sha256(f"{self.path}\0{ident}".encode()).hexdigest()


def _http_identity(url: str) -> str | None:
    """``ETag|Last-Modified|Content-Length`` of a HEAD request, or None if none is sent."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 (user's URL)
            headers = resp.headers
    except OSError as exc:
        log.debug("HEAD %s failed: %s", url, exc)
        return None
    values = [headers.get(k, "") for k in ("ETag", "Last-Modified", "Content-Length")]
    return "|".join(values) if any(values[:2]) else None


SERVICE_DRIVERS = ("WMS", "WMTS")


def _service_message(path: str, driver: str = "WMS") -> str:
    return (
        f"{path}: a GDAL {driver} service description, not a raster file; describe the "
        "service with 'kind: wms' (url, layers), 'kind: wmts' (url, layer) or 'kind: xyz' "
        "(a tile URL template)"
    )


def _refuse_service_description(path: str) -> None:
    """:class:`ImageryError` for a GDAL WMS/WMTS description given as a raster: an inline
    ``<GDAL_WMS>``/``<GDAL_WMTS>`` XML, a ``WMS:``/``WMTS:`` connection string, or a local
    file starting with such XML."""
    head = path.lstrip()[:16].upper()
    if head.startswith(("WMS:", "WMTS:")):
        raise ImageryError(_service_message(path, head.split(":", 1)[0]))
    if head.startswith(("<GDAL_WMS", "<GDAL_WMTS")):
        raise ImageryError(_service_message("<inline XML>", "WMTS" if "WMTS" in head else "WMS"))
    if not is_remote(path) and Path(path).is_file():
        with open(path, "rb") as f:
            start = f.read(4096)
        for driver in ("WMTS", "WMS"):
            if f"<GDAL_{driver}".encode() in start:
                raise ImageryError(_service_message(path, driver))


def vrt_sources(text: str | bytes, vrt_path: str) -> list[str]:
    """The files a VRT references, in document order without repeats: every
    ``SourceFilename`` (also in overviews and masks), joined to the VRT's folder when
    ``relativeToVRT="1"`` (a URL is joined as a URL)."""
    try:
        root = ET.fromstring(text)  # noqa: S314 (expat refuses entity expansion bombs)
    except ET.ParseError as exc:
        raise ImageryError(f"{vrt_path}: VRT is not readable XML ({exc})") from exc
    found: list[str] = []
    for element in root.iter("SourceFilename"):
        name = (element.text or "").strip()
        if not name:
            continue
        if element.get("relativeToVRT") == "1":
            if vrt_path.startswith(("http://", "https://")):
                name = urllib.parse.urljoin(vrt_path, name)
            else:
                name = posixpath.normpath(posixpath.join(posixpath.dirname(vrt_path), name))
        if name not in found:
            found.append(name)
    return found


def vrt_fingerprint(path: str, _depth: int = 0) -> str:
    """sha256 of a VRT's bytes and, per referenced file in order, its name and identity:
    sha256 of a local file's bytes (a nested VRT recursively, sidecars included), the
    HTTP validators of a URL, ``missing`` for an absent file; a source whose identity
    cannot be known gives a value new at every call (never a stale match)."""
    if _depth > 8:
        raise ImageryError(f"{path}: VRTs nested more than 8 deep")
    text = _read_text(path)
    digest = hashlib.sha256(text)
    for source in vrt_sources(text, path):
        digest.update(f"\0{source}\0{_source_identity(source, _depth)}".encode())
    return digest.hexdigest()


def _read_text(path: str) -> bytes:
    url = path.removeprefix("/vsicurl/")
    try:
        if url.startswith(("http://", "https://")):
            with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 (user's URL)
                return resp.read()
        return Path(path).read_bytes()
    except OSError as exc:
        raise ImageryError(f"{mask_url(path)}: cannot read the VRT ({exc})") from exc


def _source_identity(source: str, depth: int) -> str:
    url = source.removeprefix("/vsicurl/")
    if url.startswith(("http://", "https://")):
        if url.lower().endswith(".vrt"):
            return vrt_fingerprint(url, depth + 1)
        return _http_identity(url) or f"unknown-{uuid.uuid4().hex}"
    if is_remote(source):  # other GDAL virtual paths: no cheap identity
        return f"unknown-{uuid.uuid4().hex}"
    local = Path(source)
    if not local.is_file():
        return "missing"
    if local.suffix.lower() == ".vrt":
        return vrt_fingerprint(source, depth + 1)
    return sha256_files(raster_files(local))


def _detail(exc: BaseException) -> str:
    """The GDAL message behind rasterio's "See previous exception for details"."""
    cause = exc.__cause__ or exc.__context__
    return f"{exc}: {cause}" if cause is not None and "previous exception" in str(exc) else str(exc)


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _empty(shard: Shard) -> ShardImage:
    size = shard.size
    return ShardImage(
        shard, np.zeros((3, size, size), np.uint8), np.zeros((size, size), dtype=bool)
    )


def _to_wgs84(geom: BaseGeometry, crs: rasterio.crs.CRS, *, step: float) -> BaseGeometry:
    """Reproject a polygon to EPSG:4326, densified every ``step`` source units."""
    if geom.is_empty:
        return geom
    src = ProjCRS.from_user_input(crs.to_wkt())
    if src.equals(ProjCRS.from_epsg(4326)):
        return geom
    transformer = Transformer.from_crs(src, "EPSG:4326", always_xy=True)
    dense = shapely.segmentize(geom, max(step, 1e-9) * 8)
    out = shapely.transform(
        dense, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
    )
    return shapely.make_valid(out) if not out.is_valid else out


__all__ = ["GeoTiffSource"]
