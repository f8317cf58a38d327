"""XYZ/TMS tile services: a URL template read tile by tile through an on-disk cache.

The template holds ``{z}``, ``{x}``, ``{y}`` or ``{-y}`` (the TMS row ``2**z - 1 - y``)
and optionally ``{s}``, one of the spec's subdomains picked by ``(x + y) % n``. Rules:

* tiles are fetched by a pool of ``max_concurrency`` threads, at most ``rate_limit``
  requests/s, with the GeoAudit User-Agent and the spec's headers; transient failures
  are retried (:mod:`pipeline.sources.retry`);
* HTTP 404 or 204, or an empty body, is a missing tile: invalid pixels, not an error;
  any other failure is an :class:`ImageryError` naming the service and the tile URL
  with its query string masked; an OGC exception report is an error with its message;
* the cache lives in ``$GEOAUDIT_HOME/cache/tiles/<sha256 of the template>/z/x/y``
  (or ``cache_dir``) with each tile's ETag and sha256; a cached tile is revalidated
  (``If-None-Match``) once per opened source, so what is read is what the server
  serves now, and a 304 costs no download;
* the service cannot be listed: with ``bounds`` (+ ``zoom``) the footprint is where the
  tiles covering the bounds have valid pixels and the fingerprint is the sha256 of
  their bytes (one pass of requests, which later shard reads re-use); without bounds
  the footprint is what the shards read so far show, and the fingerprint is new at
  every open (a snapshot is never re-used, the safe side).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.errors import ConfigError, ImageryError
from pipeline.sources.base import STEP_PLACEHOLDER, latest_templated_step, resolve_path
from pipeline.sources.imagery_http import (
    HttpClient,
    raise_for_service_exception,
    valid_area,
    web_mercator_to_wgs84,
)
from pipeline.sources.specs import Bbox
from pipeline.sources.urls import mask_url
from pipeline.sources.xyz import BlockTile, TiledSource, decode_tile
from pipeline.tiles import Tile, cover, xy_bounds

log = logging.getLogger(__name__)

MISSING_STATUS = (204, 404)
UrlFor = Callable[[int, int, int], str]


def xyz_url(template: str, z: int, x: int, y: int, subdomains: Sequence[str] = ()) -> str:
    """The URL of tile ``z/x/y``: ``{z} {x} {y}``, ``{-y} = 2**z - 1 - y`` and
    ``{s} = subdomains[(x + y) % len(subdomains)]``."""
    url = template.replace("{z}", str(z)).replace("{x}", str(x))
    url = url.replace("{-y}", str((1 << z) - 1 - y)).replace("{y}", str(y))
    if "{s}" in url:
        url = url.replace("{s}", subdomains[(x + y) % len(subdomains)])
    return url


def default_cache_root() -> Path:
    """``$GEOAUDIT_HOME/cache/tiles`` (settings read when first needed)."""
    from pipeline.settings import load_settings

    return load_settings().home / "cache" / "tiles"


def cache_folder(cache_dir: str | None, template: str, base_dir: Path | None) -> Path:
    """``<cache root>/<sha256 of template>``: ``cache_dir`` (relative to ``base_dir``) or
    :func:`default_cache_root`."""
    if cache_dir is None:
        root = default_cache_root()
    else:
        root = Path(cache_dir).expanduser()
        if not root.is_absolute() and base_dir is not None:
            root = Path(base_dir) / root
    return root / hashlib.sha256(template.encode()).hexdigest()


@dataclass(frozen=True)
class TileRecord:
    """A tile as the service serves it now: ``sha256`` of its bytes and the cache file
    holding them, both None when the tile is missing (404/204/empty)."""

    z: int
    x: int
    y: int
    sha256: str | None
    file: Path | None

    def line(self) -> str:
        """``z/x/y<TAB>sha256`` (or ``missing``), one line of a fingerprint."""
        return f"{self.z}/{self.x}/{self.y}\t{self.sha256 or 'missing'}\n"


class TileFetcher:
    """Tiles of one service through the on-disk cache, each revalidated once per fetcher.

    Cache layout: ``<folder>/<z>/<x>/<y>`` (the bytes) and ``<y>.json`` (``etag``,
    ``sha256``; ``sha256`` null for a missing tile). Thread-safe.
    """

    def __init__(self, service: str, url_for: UrlFor, folder: Path, client: HttpClient) -> None:
        self.service = service
        self.url_for = url_for
        self.folder = folder
        self.client = client
        self._seen: dict[tuple[int, int, int], TileRecord] = {}
        self._lock = threading.Lock()

    def record(self, z: int, x: int, y: int) -> TileRecord:
        """The tile as served now (fetched, or revalidated, at most once per fetcher)."""
        key = (z, x, y)
        with self._lock:
            seen = self._seen.get(key)
        if seen is not None:
            return seen
        record = self._fetch(z, x, y)
        with self._lock:
            self._seen[key] = record
        return record

    def read(self, record: TileRecord) -> bytes | None:
        """The bytes of a tile record (None for a missing tile)."""
        if record.file is None:
            return None
        try:
            return record.file.read_bytes()
        except OSError as exc:
            raise ImageryError(
                f"{self.service}: cached tile {record.z}/{record.x}/{record.y} unreadable "
                f"({exc}); delete {self.folder} to start the cache afresh"
            ) from exc

    def _fetch(self, z: int, x: int, y: int) -> TileRecord:
        url = self.url_for(z, x, y)
        body_path = self.folder / str(z) / str(x) / str(y)
        meta_path = body_path.with_name(f"{y}.json")
        meta = _read_meta(meta_path)
        conditional = (
            {"If-None-Match": meta["etag"]}
            if meta.get("etag") and meta.get("sha256") and body_path.is_file()
            else None
        )
        response = self.client.get(url, headers=conditional)
        status = response.status_code
        if status == 304 and conditional:
            return TileRecord(z, x, y, meta["sha256"], body_path)
        if status in MISSING_STATUS or (response.is_success and not response.content):
            _write_meta(meta_path, {"etag": None, "sha256": None})
            return TileRecord(z, x, y, None, None)
        if not response.is_success:
            raise ImageryError(
                f"{self.service}: tile {z}/{x}/{y} GET {mask_url(url)} answered HTTP "
                f"{status} {response.reason_phrase}"
            )
        body = response.content
        raise_for_service_exception(self.service, body, url)
        digest = hashlib.sha256(body).hexdigest()
        _atomic_write(body_path, body)
        _write_meta(meta_path, {"etag": response.headers.get("ETag"), "sha256": digest})
        return TileRecord(z, x, y, digest, body_path)


class TileServiceSource(TiledSource):
    """A remote XYZ/TMS tile service (``kind: xyz`` with a URL template); the module
    docstring says the rules. ``spec.zoom``: the zoom tiles are requested at (default:
    the work zoom). Subclasses (WMTS) pass their own ``url_for`` and ``template`` (the
    cache key)."""

    def __init__(
        self,
        spec: Any,
        *,
        step: str | None = None,
        base_dir: Path | None = None,
        url_for: UrlFor | None = None,
        template: str | None = None,
        service: str | None = None,
    ) -> None:
        self.spec = spec
        if template is None:
            template = resolve_path(spec.path, step=step, base_dir=base_dir)
        self.template = template
        self.path = mask_url(template)
        self.service = service or f"tile service {self.path}"
        if not template.startswith(("http://", "https://")):
            raise ImageryError(f"{self.path}: a tile service URL must be http(s)")
        subdomains = tuple(getattr(spec, "subdomains", ()) or ())
        self._url_for = url_for or (lambda z, x, y: xyz_url(template, z, x, y, subdomains))
        self._client = HttpClient(
            self.service,
            headers=spec.headers,
            max_connections=spec.max_concurrency,
            rate_limit=spec.rate_limit,
        )
        self._pool = ThreadPoolExecutor(spec.max_concurrency, thread_name_prefix="tiles")
        self.fetcher = TileFetcher(
            self.service,
            self._url_for,
            cache_folder(spec.cache_dir, template, base_dir),
            self._client,
        )
        self._areas: dict[tuple[int, int, int], BaseGeometry] = {}
        self._areas_lock = threading.Lock()
        self._scanned: tuple[str, BaseGeometry] | None = None
        self._fingerprint: str | None = None

    @classmethod
    def latest_step(cls, spec: Any, *, until: str, base_dir: Path | None = None) -> str | None:
        """Without ``{step}``: ``until`` (a live service). With it: the newest date whose
        centre tile of ``bounds`` at ``zoom`` exists (HEAD, day by day back)."""
        if STEP_PLACEHOLDER not in spec.path:
            return until
        if spec.bounds is None or spec.zoom is None:
            raise ConfigError(
                f"{mask_url(spec.path)}: a {{step}} tile template needs 'bounds' and 'zoom' "
                "to probe which dates exist"
            )
        import mercantile

        west, south, east, north = spec.bounds
        tile = mercantile.tile((west + east) / 2, (south + north) / 2, spec.zoom)
        subdomains = tuple(getattr(spec, "subdomains", ()) or ())
        probe = xyz_url(spec.path, tile.z, tile.x, tile.y, subdomains)
        return latest_templated_step(probe, until=until, base_dir=base_dir)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    # -- pixels --------------------------------------------------------------------------

    def native_zoom(self, work_zoom: int) -> int:
        """``spec.zoom`` or the work zoom."""
        return self.spec.zoom if self.spec.zoom is not None else work_zoom

    def block_tiles(self, zoom: int, x0: int, y0: int, side: int) -> Iterator[BlockTile]:
        """Fetch (or revalidate) and decode the block's tiles on the thread pool."""
        n = 1 << zoom
        keys = [
            (x0 + c, y0 + r)
            for r in range(side)
            for c in range(side)
            if 0 <= x0 + c < n and 0 <= y0 + r < n
        ]
        for item in self._pool.map(lambda key: self._decoded(zoom, *key), keys):
            if item is not None:
                yield item

    def _decoded(self, z: int, x: int, y: int) -> BlockTile | None:
        record = self.fetcher.record(z, x, y)
        body = self.fetcher.read(record)
        label = f"{self.service}: tile {z}/{x}/{y}"
        if body is None:
            self._note_area(record, None)
            return None
        rgb, valid = decode_tile(body, label, self.spec.nodata_colour, self.spec.nodata_tolerance)
        self._note_area(record, valid)
        return (x, y), rgb, valid, label

    def _note_area(self, record: TileRecord, valid: Any) -> None:
        bounds = xy_bounds(Tile(record.x, record.y, record.z))
        area = shapely.Polygon() if valid is None else valid_area(valid, bounds)
        with self._areas_lock:
            self._areas[(record.z, record.x, record.y)] = area

    # -- footprint / fingerprint -----------------------------------------------------------

    def footprint(self) -> BaseGeometry:
        """EPSG:4326 area where tiles have valid pixels (32-px cells): the tiles covering
        ``bounds`` at ``zoom`` when given, else the tiles read so far (ImageryError when
        none was: the service cannot be listed)."""
        if self.spec.bounds is not None:
            return self._scan()[1]
        with self._areas_lock:
            areas = list(self._areas.values())
        if not areas:
            raise ImageryError(
                f"{self.service}: a tile service cannot be listed and no shard was read yet; "
                "set 'bounds' (the AOI's bbox) and 'zoom' in the source to know its footprint"
            )
        return web_mercator_to_wgs84(shapely.union_all(areas))

    def fingerprint(self) -> str:
        """sha256 of the bytes served for the tiles covering ``bounds`` at ``zoom`` (and
        of the nodata rule); without ``bounds``: new at every open."""
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
        """One pass over the tiles covering ``bounds``: (fingerprint, footprint)."""
        if self._scanned is None:
            tiles = cover(_as_bbox(self.spec.bounds), self.spec.zoom)
            log.info("%s: checking %d tiles over the bounds", self.service, len(tiles))
            list(self._pool.map(lambda t: self._decoded(t.z, t.x, t.y), tiles))
            digest = hashlib.sha256(self._pixel_rule().encode())
            for t in tiles:
                digest.update(self.fetcher.record(t.z, t.x, t.y).line().encode())
            with self._areas_lock:
                areas = [self._areas[(t.z, t.x, t.y)] for t in tiles]
            footprint = web_mercator_to_wgs84(shapely.union_all(areas))
            self._scanned = (digest.hexdigest(), footprint)
        return self._scanned

    def _pixel_rule(self) -> str:
        """The spec settings that change pixels without changing tile bytes."""
        return json.dumps(
            {"nodata": self.spec.nodata_colour, "tolerance": self.spec.nodata_tolerance}
        )


def _as_bbox(bounds: Bbox | None) -> tuple[float, float, float, float]:
    if bounds is None:  # callers check first
        raise ConfigError("bounds are required here")
    west, south, east, north = bounds
    return (west, south, east, north)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    _atomic_write(path, json.dumps(meta).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


__all__ = ["TileFetcher", "TileRecord", "TileServiceSource", "cache_folder", "xyz_url"]
