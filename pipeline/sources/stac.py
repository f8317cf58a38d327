"""STAC API imagery: the COG assets of the items dated in the step's window, mosaicked.

Rules:

* a search (pystac-client) asks for items of ``collections`` with a datetime in
  ``(step - window_days, step]`` (whole UTC days) intersecting the shard (or ``bounds``,
  once, when it covers the shard); ``max_cloud_cover`` is sent as a CQL2 filter
  ``eo:cloud_cover <= max or isNull(eo:cloud_cover)`` when the API supports filter
  (a ``query`` when it supports that) and is checked on the items again (items without
  ``eo:cloud_cover`` are kept);
* the items are sorted newest first (datetime, else end/start datetime; then id) and
  read one after the other with :class:`GeoTiffSource` (warped to the shard grid):
  the newest valid pixel wins, and reading stops when every pixel is valid;
* footprint: the union of the item geometries over ``bounds`` (or over the whole window
  without it); fingerprint: sha256 of the sorted item ids with their ``updated`` /
  ``created`` timestamps (item or asset), asset href and ``file:checksum``, plus the
  bands/nodata/rescale read; an asset with neither timestamp adds its HTTP ETag (or a
  local file's size and mtime);
* a search finding more than ``max_items`` items is an error (set ``bounds`` or a
  smaller ``window_days``), never a silent truncation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.errors import ConfigError, ImageryError
from pipeline.sources.base import ImagerySource, ShardImage, register_imagery
from pipeline.sources.imagery_http import user_agent
from pipeline.sources.retry import attempts
from pipeline.sources.specs import GeoTiffSpec, StacSpec
from pipeline.sources.urls import mask_url, scrub
from pipeline.tiles import Shard, lnglat_bounds

log = logging.getLogger(__name__)

Bounds = tuple[float, float, float, float]


@register_imagery("stac")
class StacSource(ImagerySource):
    """Items of a STAC API for the time step ``step`` (an ISO date); module docstring."""

    def __init__(
        self, spec: StacSpec, *, step: str | None = None, base_dir: Path | None = None
    ) -> None:
        self.spec = spec
        self.url = spec.url
        self.path = mask_url(spec.url)
        self.service = f"STAC {self.path}"
        if step is None:
            raise ConfigError(f"{self.service}: a STAC source needs a time step (ISO date)")
        self.step = _day(step, self.service)
        start = self.step - dt.timedelta(days=spec.window_days - 1)
        self.datetime = f"{start.isoformat()}T00:00:00Z/{self.step.isoformat()}T23:59:59Z"
        self._client = open_client(spec, self.service)
        self._readers: dict[str, Any] = {}
        self._searches: dict[Bounds | None, list[Any]] = {}
        self._fingerprint: str | None = None

    @classmethod
    def latest_step(cls, spec: Any, *, until: str, base_dir: Path | None = None) -> str | None:
        """The UTC date of the newest item on or before ``until`` (over ``bounds`` when
        given, passing ``max_cloud_cover``), or None when there is none."""
        service = f"STAC {mask_url(spec.url)}"
        day = _day(until, service)
        client = open_client(spec, service)
        # newest first from the server, unless a cloud limit could only be checked here
        sort = client.conforms_to("SORT") and (
            spec.max_cloud_cover is None
            or client.conforms_to("FILTER")
            or client.conforms_to("QUERY")
        )
        items = _search(
            client,
            spec,
            service,
            bbox=spec.bounds,
            datetime=f"../{day.isoformat()}T23:59:59Z",
            sortby="-properties.datetime" if sort else None,
            limit=1 if sort else None,
        )
        return max(_when(item) for item in items).date().isoformat() if items else None

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    # -- items ---------------------------------------------------------------------------

    def items(self, bbox: Bounds | None) -> list[Any]:
        """Items of the window over ``bbox`` (None: the whole window), newest first."""
        if bbox not in self._searches:
            found = _search(
                self._client, self.spec, self.service, bbox=bbox, datetime=self.datetime
            )
            self._searches[bbox] = sorted(found, key=lambda i: (_when(i), i.id), reverse=True)
        return self._searches[bbox]

    def _items_for(self, shard: Shard) -> list[Any]:
        box = lnglat_bounds(shard.tile)
        bounds = self.spec.bounds
        if bounds is not None and (
            bounds[0] <= box[0]
            and bounds[1] <= box[1]
            and box[2] <= bounds[2]
            and box[3] <= bounds[3]
        ):
            area = shapely.box(*box)
            return [i for i in self.items(tuple(bounds)) if _geometry(i).intersects(area)]
        return self.items(box)

    def _reader(self, item: Any) -> Any:
        from pipeline.sources.geotiff import GeoTiffSource

        href = self._href(item)
        if href not in self._readers:
            spec = GeoTiffSpec(
                path=href, bands=self.spec.bands, nodata=self.spec.nodata, rescale=self.spec.rescale
            )
            self._readers[href] = GeoTiffSource(spec)
        return self._readers[href]

    def _href(self, item: Any) -> str:
        asset = item.assets.get(self.spec.asset)
        if asset is None:
            raise ImageryError(
                f"{self.service}: item {item.id!r} has no asset {self.spec.asset!r} "
                f"(assets: {', '.join(sorted(item.assets))})"
            )
        # an absolute path or URL as it is; a relative one against the item's location
        absolute = "://" in asset.href or asset.href.startswith("/")
        href = asset.href if absolute else (asset.get_absolute_href() or asset.href)
        return href[len("file://") :] if href.startswith("file://") else href

    # -- pixels --------------------------------------------------------------------------

    def read_shard(self, shard: Shard) -> ShardImage:
        """The newest valid pixel of the window's items, item by item (newest first)."""
        size = shard.size
        data = np.zeros((3, size, size), np.uint8)
        valid = np.zeros((size, size), bool)
        for item in self._items_for(shard):
            image = self._reader(item).read_shard(shard)
            take = image.valid & ~valid
            if take.any():
                data[:, take] = image.data[:, take]
                valid |= take
                if valid.all():
                    break
        return ShardImage(shard, data, valid)

    def describe(self) -> dict[str, Any]:
        """The newest item's asset as :class:`GeoTiffSource` describes it (``{}`` when no
        item was searched yet)."""
        searched = [items for items in self._searches.values() if items]
        if not searched:
            return {}
        newest = max((i for items in searched for i in items), key=lambda i: (_when(i), i.id))
        return self._reader(newest).describe()

    # -- footprint / fingerprint ---------------------------------------------------------

    def _all(self) -> list[Any]:
        return self.items(tuple(self.spec.bounds) if self.spec.bounds is not None else None)

    def footprint(self) -> BaseGeometry:
        """Union of the item geometries (EPSG:4326) over ``bounds`` / the whole window."""
        geoms = [_geometry(i) for i in self._all()]
        return shapely.union_all(geoms) if geoms else shapely.Polygon()

    def fingerprint(self) -> str:
        """sha256 of the sorted item identities (module docstring)."""
        if self._fingerprint is None:
            rows = sorted(self._identity(item) for item in self._all())
            rule = {"bands": self.spec.bands, "nodata": self.spec.nodata}
            rule["rescale"] = self.spec.rescale
            text = json.dumps({"rule": rule, "items": rows}, sort_keys=True, default=str)
            self._fingerprint = hashlib.sha256(text.encode()).hexdigest()
        return self._fingerprint

    def _identity(self, item: Any) -> list[str]:
        href = self._href(item)
        asset = item.assets[self.spec.asset]
        props, extra = item.properties, asset.extra_fields
        stamp = (
            extra.get("updated")
            or props.get("updated")
            or extra.get("created")
            or props.get("created")
        )
        checksum = extra.get("file:checksum") or ""
        if not stamp:  # unknowable: never equal, so a snapshot is never wrongly re-used
            stamp = _file_identity(href) or f"unknown-{uuid.uuid4().hex}"
        return [str(item.collection_id), item.id, str(stamp), href, str(checksum)]


def open_client(spec: Any, service: str) -> Any:
    """A pystac-client ``Client`` with the GeoAudit User-Agent, the spec's headers and
    retries of 429/5xx (urllib3 ``Retry``, ``GEOAUDIT_SOURCE_ATTEMPTS`` in all)."""
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    retry = Retry(
        total=attempts() - 1,
        backoff_factor=0.5,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,
    )
    io = StacApiIO(
        headers={"User-Agent": user_agent(), **spec.headers}, timeout=30, max_retries=retry
    )
    try:
        return Client.open(spec.url, stac_io=io)
    except Exception as exc:  # APIError, requests' errors, JSON errors
        raise ImageryError(
            f"{service}: cannot open the STAC API ({_reason(exc, spec.url)})"
        ) from None


def _search(
    client: Any,
    spec: Any,
    service: str,
    *,
    bbox: Bounds | None,
    datetime: str,
    sortby: str | None = None,
    limit: int | None = None,
) -> list[Any]:
    """Items of a search (more than ``spec.max_items`` is an error), cloud cover checked."""
    kwargs: dict[str, Any] = {
        "collections": spec.collections,
        "datetime": datetime,
        "max_items": limit or spec.max_items + 1,
    }
    if bbox is not None:
        kwargs["bbox"] = list(bbox)
    if sortby:
        kwargs["sortby"] = sortby
    cloud = spec.max_cloud_cover
    if cloud is not None:
        if client.conforms_to("FILTER"):
            kwargs["filter_lang"] = "cql2-json"
            kwargs["filter"] = {
                "op": "or",
                "args": [
                    {"op": "<=", "args": [{"property": "eo:cloud_cover"}, cloud]},
                    {"op": "isNull", "args": [{"property": "eo:cloud_cover"}]},
                ],
            }
        elif client.conforms_to("QUERY"):
            kwargs["query"] = {"eo:cloud_cover": {"lte": cloud}}
    try:
        items = list(client.search(**kwargs).items())
    except Exception as exc:  # APIError, requests' errors
        raise ImageryError(f"{service}: item search failed ({_reason(exc, spec.url)})") from None
    if limit is None and len(items) > spec.max_items:
        raise ImageryError(
            f"{service}: more than {spec.max_items} items in {datetime}"
            + (f" over {list(bbox)}" if bbox else "")
            + "; set 'bounds' to the AOI's bbox, a smaller 'window_days' or a larger 'max_items'"
        )
    if cloud is not None:
        items = [
            i
            for i in items
            if i.properties.get("eo:cloud_cover") is None
            or float(i.properties["eo:cloud_cover"]) <= cloud
        ]
    return items


def _when(item: Any) -> dt.datetime:
    """The item's datetime (else end, else start datetime), UTC."""
    when = item.datetime
    if when is None:
        text = item.properties.get("end_datetime") or item.properties.get("start_datetime")
        when = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _geometry(item: Any) -> BaseGeometry:
    if item.geometry:
        return shapely.geometry.shape(item.geometry)
    return shapely.box(*item.bbox) if item.bbox else shapely.Polygon()


def _day(text: str, service: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        raise ConfigError(f"{service}: time step must be an ISO date, got {text!r}") from None


def _file_identity(href: str) -> str:
    """``size|mtime`` of a local file, the HTTP validators of a URL, else ``""``."""
    if "://" not in href:
        try:
            st = Path(href).stat()
        except OSError:
            return "missing"
        return f"{st.st_size}|{st.st_mtime_ns}"
    if href.startswith(("http://", "https://")):
        from pipeline.sources.geotiff import _http_identity

        return _http_identity(href) or ""
    return ""


def _reason(exc: BaseException, url: str) -> str:
    return scrub(str(exc) or type(exc).__name__, url)[:300]


__all__ = ["StacSource", "open_client"]
