"""OGC WMS 1.1.1 / 1.3.0 imagery: one GetMap per shard, in EPSG:3857 by default.

Rules:

* on open, GetCapabilities (parsed by OWSLib) must list every layer of the spec, offer
  its CRS on each and its image format; GetMap goes to the spec's URL (servers often
  advertise an unreachable one), keeping the URL's own query parameters;
* a shard is requested as its own extent at its pixel size (``shard.size``), in
  blocks of at most ``max_size`` px when larger; WMS 1.3.0 uses the CRS's axis order
  (latitude first for EPSG:4326), 1.1.1 always x/y; another CRS than EPSG:3857 is
  requested over the shard's extent in it and warped to the shard grid;
* alpha (``transparent``) and ``nodata_colour`` become invalid pixels; an exception
  report (even with HTTP 200) is an :class:`ImageryError` naming the service and the
  server's message;
* footprint and fingerprint as for tile services: with ``bounds`` + ``zoom`` one pass of
  GetMap requests over the bounds at that zoom's resolution (blocks of ``max_size`` px
  aligned to the tile grid) gives the valid area and the sha256 of the served bytes;
  without ``bounds`` the footprint is what the shards read so far show and the
  fingerprint is new at every open.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.errors import ImageryError
from pipeline.sources.base import ImagerySource, ShardImage, register_imagery, resolve_path
from pipeline.sources.imagery_http import (
    HttpClient,
    raise_for_service_exception,
    valid_area,
    web_mercator_to_wgs84,
)
from pipeline.sources.specs import WmsSpec
from pipeline.sources.urls import mask_url, with_params
from pipeline.sources.xyz import Decoded, decode_image
from pipeline.tiles import TILE_SIZE, Shard, Tile, cover, xy_bounds

log = logging.getLogger(__name__)

WEB_MERCATOR_CODES = {"EPSG:3857", "EPSG:900913", "EPSG:102100", "EPSG:102113"}
Bounds = tuple[float, float, float, float]


@register_imagery("wms")
class WmsSource(ImagerySource):
    """A WMS layer list read shard by shard (module docstring for the rules)."""

    def __init__(
        self, spec: WmsSpec, *, step: str | None = None, base_dir: Path | None = None
    ) -> None:
        self.spec = spec
        self.url = resolve_path(spec.url, step=step, base_dir=None)
        self.path = mask_url(self.url)
        self.service = f"WMS {self.path}"
        if not self.url.startswith(("http://", "https://")):
            raise ImageryError(f"{self.service}: a WMS URL must be http(s)")
        self.crs = spec.crs.upper()
        self._client = HttpClient(
            self.service,
            headers=spec.headers,
            max_connections=spec.max_concurrency,
            rate_limit=spec.rate_limit,
        )
        self._pool = ThreadPoolExecutor(spec.max_concurrency, thread_name_prefix="wms")
        self._areas: list[BaseGeometry] = []
        self._lock = threading.Lock()
        self._scanned: tuple[str, BaseGeometry] | None = None
        self._fingerprint: str | None = None
        try:
            self._check_capabilities()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def _check_capabilities(self) -> None:
        from owslib.wms import WebMapService

        spec = self.spec
        url = with_params(
            self.url, {"SERVICE": "WMS", "REQUEST": "GetCapabilities", "VERSION": spec.version}
        )
        body = self._client.get_ok(url).content
        try:
            wms = WebMapService(self.url, version=spec.version, xml=body)
        except Exception as exc:  # OWSLib raises whatever its parser meets
            raise ImageryError(
                f"{self.service}: GetCapabilities is not a WMS {spec.version} document ({exc})"
            ) from exc
        missing = [name for name in spec.layers if name not in wms.contents]
        if missing:
            known = ", ".join(list(wms.contents)[:20])
            raise ImageryError(f"{self.service}: no layer {missing} (layers: {known})")
        for name in spec.layers:
            offered = {c.upper() for c in (wms.contents[name].crsOptions or [])}
            if offered and self.crs not in offered:
                raise ImageryError(
                    f"{self.service}: layer {name!r} does not offer {spec.crs} "
                    f"(offers {', '.join(sorted(offered)[:12])}); set 'crs'"
                )
        try:
            formats = wms.getOperationByName("GetMap").formatOptions
        except KeyError:
            formats = []
        if formats and spec.format not in formats:
            raise ImageryError(
                f"{self.service}: GetMap does not offer format {spec.format!r} "
                f"(offers {', '.join(formats)})"
            )
        self._flip_axes = spec.version == "1.3.0" and _north_first(self.crs)

    def describe(self) -> dict[str, Any]:
        """GetMap images are 8-bit RGB(A), read in EPSG:3857."""
        return {"band_count": 3, "dtype": "uint8", "crs": "EPSG:3857"}

    # -- pixels ------------------------------------------------------------------------

    def read_shard(self, shard: Shard) -> ShardImage:
        """GetMap of the shard extent at ``shard.size`` px (blocks of ``max_size`` px)."""
        size, block = shard.size, min(shard.size, self.spec.max_size)
        n = size // block
        left, bottom, right, top = xy_bounds(shard.tile)
        step = (right - left) / n
        jobs = [
            (r, c, (left + c * step, top - (r + 1) * step, left + (c + 1) * step, top - r * step))
            for r in range(n)
            for c in range(n)
        ]
        data = np.zeros((3, size, size), np.uint8)
        valid = np.zeros((size, size), bool)
        for (r, c, _b), (_body, rgb, ok) in zip(
            jobs, self._pool.map(lambda job: self._get_map(job[2], block), jobs), strict=True
        ):
            rows, cols = slice(r * block, (r + 1) * block), slice(c * block, (c + 1) * block)
            data[:, rows, cols] = rgb.transpose(2, 0, 1)
            valid[rows, cols] = ok
        data[:, ~valid] = 0
        with self._lock:
            self._areas.append(valid_area(valid, (left, bottom, right, top)))
        return ShardImage(shard, data, valid)

    def getmap_url(self, bounds: Bounds, width: int, height: int) -> str:
        """The GetMap URL for EPSG:3857 ``bounds`` (in the spec's CRS, axis order of the
        version) at ``width x height`` px."""
        spec = self.spec
        minx, miny, maxx, maxy = bounds
        bbox = (miny, minx, maxy, maxx) if self._flip_axes else (minx, miny, maxx, maxy)
        params: dict[str, str | int | float] = {
            "SERVICE": "WMS",
            "VERSION": spec.version,
            "REQUEST": "GetMap",
            "LAYERS": ",".join(spec.layers),
            "STYLES": ",".join(spec.styles),
            "CRS" if spec.version == "1.3.0" else "SRS": spec.crs,
            "BBOX": ",".join(repr(float(v)) for v in bbox),
            "WIDTH": width,
            "HEIGHT": height,
            "FORMAT": spec.format,
            "TRANSPARENT": "TRUE" if spec.transparent else "FALSE",
        }
        return with_params(self.url, params)

    def _get_map(self, bounds: Bounds, px: int) -> tuple[bytes, np.ndarray, np.ndarray]:
        """``(body, rgb (px, px, 3), valid (px, px))`` of the EPSG:3857 square ``bounds``."""
        if self.crs in WEB_MERCATOR_CODES:
            body, (rgb, valid) = self._fetch(bounds, px, px)
            return body, rgb, valid
        from rasterio.warp import transform_bounds

        src_bounds = transform_bounds("EPSG:3857", self.crs, *bounds, densify_pts=21)
        body, (rgb, valid) = self._fetch(src_bounds, px, px)
        rgb, valid = _warp(rgb, valid, self.crs, src_bounds, bounds, px)
        return body, rgb, valid

    def _fetch(self, bounds: Bounds, width: int, height: int) -> tuple[bytes, Decoded]:
        url = self.getmap_url(bounds, width, height)
        response = self._client.get_ok(url)
        body = response.content
        raise_for_service_exception(self.service, body, url)
        label = f"{self.service}: GetMap {mask_url(url)}"
        rgb, valid = decode_image(body, label, self.spec.nodata_colour, self.spec.nodata_tolerance)
        if rgb.shape[:2] != (height, width):
            raise ImageryError(
                f"{label}: answered a {rgb.shape[1]}x{rgb.shape[0]} image for {width}x{height}"
            )
        return body, (rgb, valid)

    # -- footprint / fingerprint -----------------------------------------------------------

    def footprint(self) -> BaseGeometry:
        """EPSG:4326 valid area: over ``bounds`` at ``zoom`` when given, else of the shards
        read so far (ImageryError when none was)."""
        if self.spec.bounds is not None:
            return self._scan()[1]
        with self._lock:
            areas = list(self._areas)
        if not areas:
            raise ImageryError(
                f"{self.service}: a WMS cannot be listed and no shard was read yet; set "
                "'bounds' (the AOI's bbox) and 'zoom' in the source to know its footprint"
            )
        return web_mercator_to_wgs84(shapely.union_all(areas))

    def fingerprint(self) -> str:
        """sha256 of the GetMap bytes over ``bounds`` at ``zoom`` (and of the nodata
        rule); without ``bounds``: new at every open."""
        if self._fingerprint is None:
            if self.spec.bounds is not None:
                self._fingerprint = self._scan()[0]
            else:
                log.info(
                    "%s: no 'bounds', so the content cannot be hashed before reading; "
                    "the snapshot will not be re-used",
                    self.service,
                )
                self._fingerprint = f"unbounded-{uuid.uuid4().hex}"
        return self._fingerprint

    def _scan(self) -> tuple[str, BaseGeometry]:
        if self._scanned is None:
            zoom = self.spec.zoom if self.spec.zoom is not None else 0
            levels = max(self.spec.max_size // TILE_SIZE, 1).bit_length() - 1
            block_zoom = max(zoom - levels, 0)
            px = TILE_SIZE << (zoom - block_zoom)
            west, south, east, north = self.spec.bounds or (0.0, 0.0, 0.0, 0.0)
            blocks = cover((west, south, east, north), block_zoom)
            log.info("%s: checking %d GetMap blocks over the bounds", self.service, len(blocks))

            def one(tile: Tile) -> tuple[str, BaseGeometry]:
                bounds = xy_bounds(tile)
                body, _rgb, valid = self._get_map(bounds, px)
                return hashlib.sha256(body).hexdigest(), valid_area(valid, bounds)

            results = list(self._pool.map(one, blocks))
            digest = hashlib.sha256(
                json.dumps(
                    {"nodata": self.spec.nodata_colour, "tolerance": self.spec.nodata_tolerance}
                ).encode()
            )
            for tile, (sha, _area) in zip(blocks, results, strict=True):
                digest.update(f"{tile}\t{sha}\n".encode())
            footprint = web_mercator_to_wgs84(shapely.union_all([a for _s, a in results]))
            self._scanned = (digest.hexdigest(), footprint)
        return self._scanned


def _north_first(crs: str) -> bool:
    """True when the CRS's first axis points north or south (EPSG:4326 and most
    geographic CRSs): WMS 1.3.0 then wants ``BBOX=miny,minx,maxy,maxx``."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        axes = CRS.from_user_input(crs).axis_info
    except CRSError as exc:
        raise ImageryError(f"crs {crs!r} is not a known CRS ({exc})") from exc
    return bool(axes) and axes[0].direction.lower() in ("north", "south")


def _warp(
    rgb: np.ndarray, valid: np.ndarray, crs: str, src_bounds: Bounds, dst_bounds: Bounds, px: int
) -> Decoded:
    """Reproject a north-up image over ``src_bounds`` (``crs``) onto the EPSG:3857 square
    ``dst_bounds`` at ``px``: bilinear colours, nearest validity."""
    from rasterio.enums import Resampling
    from rasterio.transform import from_bounds
    from rasterio.warp import reproject

    h, w = valid.shape
    src_transform = from_bounds(*src_bounds, w, h)
    dst_transform = from_bounds(*dst_bounds, px, px)
    out = np.zeros((3, px, px), np.uint8)
    mask = np.zeros((px, px), np.uint8)
    common = {
        "src_transform": src_transform,
        "src_crs": crs,
        "dst_transform": dst_transform,
        "dst_crs": "EPSG:3857",
    }
    reproject(rgb.transpose(2, 0, 1).copy(), out, resampling=Resampling.bilinear, **common)
    reproject(valid.astype(np.uint8), mask, resampling=Resampling.nearest, **common)
    return out.transpose(1, 2, 0), mask > 0


__all__ = ["WmsSource"]
