"""HTTP for the remote imagery sources (tile services, WMS, WMTS, STAC): one client with
the GeoAudit User-Agent, the spec's headers, a bounded connection pool, an optional rate
limit and retries (:mod:`pipeline.sources.retry`), plus the rules they share:

* messages name a URL by :func:`pipeline.sources.urls.mask_url` (whole query string
  and any password masked: keys and tokens often ride in the query string);
* an OGC exception report (WMS ``ServiceExceptionReport``, OWS ``ExceptionReport``)
  answered with HTTP 200 is an error naming the service and the server's message;
* a valid-pixel mask becomes a footprint polygon (EPSG:3857) at cell resolution.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

import httpx
import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.errors import ImageryError
from pipeline.redact import redact
from pipeline.sources.retry import attempts, with_retries
from pipeline.sources.urls import mask_url, scrub

PROJECT_URL = "https://github.com/geoaudit"
TIMEOUT_S = 30.0
FOOTPRINT_CELL = 32  # px: a footprint cell is valid when at least half its pixels are
_EXCEPTION_ROOTS = {"ServiceExceptionReport", "ExceptionReport"}
_EXCEPTION_TEXT = {"ServiceException", "ExceptionText"}


def user_agent() -> str:
    """``GeoAudit/<version> (+https://github.com/geoaudit)``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("geoaudit")
    except PackageNotFoundError:
        ours = "0"
    return f"GeoAudit/{ours} (+{PROJECT_URL})"


class RateLimiter:
    """At most ``rate`` calls per second across threads: call ``i`` may start at
    ``t0 + i / rate`` (no burst); ``rate=None`` never waits."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until this caller's slot comes."""
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


class HttpClient:
    """A thread-safe httpx client for one source.

    ``headers`` are sent as given (``${ENV_VAR}`` values are substituted upstream, not
    here); ``max_connections`` bounds the pool; ``rate_limit`` is in requests/s.
    ``get`` retries transient failures (connection errors, timeouts, 429, 5xx) and
    raises :class:`ImageryError` naming ``service`` and the masked URL when they persist.
    """

    def __init__(
        self,
        service: str,
        *,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 8,
        rate_limit: float | None = None,
        timeout: float = TIMEOUT_S,
    ) -> None:
        self.service = service
        self._limiter = RateLimiter(rate_limit)
        self._client = httpx.Client(
            headers={"User-Agent": user_agent(), **dict(headers or {})},
            timeout=timeout,
            follow_redirects=True,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    def get(self, url: str, *, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """GET ``url``; any status below 500 but 429 is returned for the caller to judge."""
        shown = mask_url(url)

        def once() -> httpx.Response:
            self._limiter.wait()
            response = self._client.get(url, headers=dict(headers or {}))
            if response.status_code == 429 or response.status_code >= 500:
                response.raise_for_status()
            return response

        try:
            return with_retries(once, f"{self.service}: GET {shown}")
        except httpx.HTTPStatusError as exc:
            code = exc.response.status_code
            raise ImageryError(
                f"{self.service}: GET {shown} answered HTTP {code} "
                f"{exc.response.reason_phrase} (after {attempts()} attempts)"
            ) from None
        except httpx.HTTPError as exc:
            detail = scrub(str(exc), url) or type(exc).__name__
            raise ImageryError(f"{self.service}: GET {shown} failed ({detail})") from None

    def get_ok(self, url: str) -> httpx.Response:
        """GET ``url`` and insist on a 2xx answer that is not an OGC exception report."""
        response = self.get(url)
        if not response.is_success:
            raise ImageryError(
                f"{self.service}: GET {mask_url(url)} answered HTTP {response.status_code} "
                f"{response.reason_phrase}"
            )
        raise_for_service_exception(self.service, response.content, url)
        return response

    def close(self) -> None:
        """Close the connection pool; idempotent."""
        self._client.close()


def service_exception(body: bytes) -> str | None:
    """The message of an OGC exception report in ``body`` (``code: text; ...``), or None
    when ``body`` is not one."""
    if body.lstrip()[:1] != b"<":
        return None
    try:
        root = ET.fromstring(body)  # noqa: S314 (expat refuses entity expansion bombs)
    except ET.ParseError:
        return None
    if _local(root.tag) not in _EXCEPTION_ROOTS:
        return None
    messages = []
    for element in root.iter():
        name = _local(element.tag)
        if name == "ServiceException" or name == "Exception":
            code = element.get("code") or element.get("exceptionCode")
            text = " ".join((element.text or "").split())
            if name == "Exception":  # OWS: the text sits in ExceptionText children
                text = " ".join(
                    " ".join((c.text or "").split())
                    for c in element
                    if _local(c.tag) in _EXCEPTION_TEXT
                )
            messages.append(f"{code}: {text}" if code and text else code or text)
    return "; ".join(m for m in messages if m) or _local(root.tag)


def raise_for_service_exception(service: str, body: bytes, url: str) -> None:
    """Raise :class:`ImageryError` naming ``service`` when ``body`` is an exception report."""
    message = service_exception(body)
    if message is not None:
        raise ImageryError(
            f"{service}: service exception for {mask_url(url)}: {redact(message)[:500]}"
        )


def _local(tag: Any) -> str:
    return str(tag).rsplit("}", 1)[-1]


def valid_area(valid: np.ndarray, bounds: tuple[float, float, float, float]) -> BaseGeometry:
    """Polygon (in the CRS of ``bounds``, north-up) of the valid part of a mask covering
    ``bounds``, at ``FOOTPRINT_CELL``-px cells: a cell counts when at least half of its
    pixels are valid."""
    if not valid.any():
        return shapely.Polygon()
    left, bottom, right, top = bounds
    if valid.all():
        return shapely.box(left, bottom, right, top)
    h, w = valid.shape
    cell = max(1, min(FOOTPRINT_CELL, h, w))
    ch, cw = h // cell, w // cell
    cells = valid[: ch * cell, : cw * cell].reshape(ch, cell, cw, cell).mean(axis=(1, 3)) >= 0.5
    # one box per run of valid cells in a row, then their union
    padded = np.zeros((ch, cw + 2), np.int8)
    padded[:, 1:-1] = cells
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    _rows, stops = np.nonzero(edges == -1)
    if rows.size == 0:
        return shapely.Polygon()
    sx, sy = (right - left) / cw, (top - bottom) / ch
    boxes = shapely.box(
        left + starts * sx, top - (rows + 1) * sy, left + stops * sx, top - rows * sy
    )
    return shapely.union_all(boxes)


def web_mercator_to_wgs84(geom: BaseGeometry) -> BaseGeometry:
    """Unproject an EPSG:3857 geometry to EPSG:4326 (exact for axis-aligned edges, which
    stay meridians and parallels)."""
    from pyproj import Transformer

    if geom.is_empty:
        return geom
    to_wgs84 = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    out = shapely.transform(
        geom, lambda xy: np.column_stack(to_wgs84.transform(xy[:, 0], xy[:, 1]))
    )
    return shapely.orient_polygons(out)


__all__ = [
    "HttpClient",
    "RateLimiter",
    "raise_for_service_exception",
    "service_exception",
    "user_agent",
    "valid_area",
    "web_mercator_to_wgs84",
]
