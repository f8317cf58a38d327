"""Building footprints from an OGC WFS 2.0.0 / 1.1.0 feature type.

Rules:
- GetCapabilities (read with the standard library's ElementTree) gives the feature
  type's qualified name, the output formats and ``CountDefault``. ``type_name`` may
  omit the namespace prefix when only one type has that local name.
- Output: ``output_format`` when set; else a GeoJSON format the server lists (for the
  type, else for GetFeature); else GML (3.2 for 2.0.0, 3.1.1 for 1.1.0), read with
  pyogrio/GDAL (schemas are not downloaded; ``gml:id`` kept).
- Paging: ``COUNT``/``STARTINDEX`` (``MAXFEATURES``/``STARTINDEX`` for 1.1.0), the page
  size ``page_size`` or the server's ``CountDefault`` or 1000. Pages are requested until
  ``numberMatched`` (GML attribute, or GeoJSON ``numberMatched``/``totalFeatures``) is
  reached, or, when the server does not say, until a page comes back empty. A server
  that answers the same page again ignores ``STARTINDEX``: an error, not a loop.
- CRS: ``srs_name`` is sent as ``urn:ogc:def:crs:EPSG::<code>`` and the bbox filter in
  that CRS's axis order (latitude first for EPSG:4326) with the CRS appended. GeoJSON is
  read in x/y (lon/lat) order as RFC 7946 says; GDAL puts GML in x/y order.
- Ids: ``id_field``; else the service's feature ids (GeoJSON ``id``, ``gml:id``) kept as
  the attribute ``wfs_id`` when every feature has a distinct one; else as ``vector``.
- An OWS ``ExceptionReport`` (with any HTTP status) is an error quoting the server.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
from pyogrio.errors import DataLayerError, DataSourceError
from pyproj import CRS
from pyproj.exceptions import CRSError

from pipeline.errors import ConfigError, VectorDataError
from pipeline.sources.base import register_vector
from pipeline.sources.frames import Bbox, bbox_in, feature_ids
from pipeline.sources.service import ServiceSource
from pipeline.sources.specs import WfsSpec
from pipeline.sources.urls import with_params
from pipeline.sources.vector_http import http_bytes, snippet

log = logging.getLogger(__name__)

DEFAULT_PAGE = 1000
MAX_PAGES = 100_000
GML_FORMATS = {
    "2.0.0": ("application/gml+xml; version=3.2", "text/xml; subtype=gml/3.2.1"),
    "1.1.0": ("text/xml; subtype=gml/3.1.1", "GML3"),
}
_NUMBER = re.compile(rb'\b(numberMatched|numberReturned)="(\d+)"')
_MEMBER = re.compile(rb"<[\w.-]+:(member|featureMembers?)\b")  # wfs:member, gml:featureMember(s)


@dataclass(frozen=True)
class Capabilities:
    """What a WFS GetCapabilities says about feature types and GetFeature."""

    types: dict[str, list[str]]  # qualified name -> output formats listed for it
    getfeature_formats: list[str] = field(default_factory=list)
    count_default: int | None = None


def parse_capabilities(body: bytes, what: str, url: str) -> Capabilities:
    """Parse a WFS 1.1.0 / 2.0.0 capabilities document (namespaces ignored)."""
    root = _xml(body, what, url, "GetCapabilities")
    if not root.tag.endswith("WFS_Capabilities"):
        raise VectorDataError(
            f"{what}: GetCapabilities did not answer WFS capabilities (root "
            f"{root.tag.split('}')[-1]!r}); is the URL a WFS endpoint?"
        )
    types: dict[str, list[str]] = {}
    for ft in root.iterfind(".//{*}FeatureType"):
        name = (ft.findtext("{*}Name") or "").strip()
        if name:
            types[name] = [f.text.strip() for f in ft.iterfind(".//{*}Format") if f.text]
    formats: list[str] = []
    count_default = None
    for op in root.iterfind(".//{*}Operation"):
        if op.get("name") != "GetFeature":
            continue
        for param in op.iterfind(".//{*}Parameter"):
            if param.get("name", "").lower() == "outputformat":
                formats = [v.text.strip() for v in param.iterfind(".//{*}Value") if v.text]
    for constraint in root.iterfind(".//{*}Constraint"):
        if constraint.get("name") == "CountDefault":
            text = constraint.findtext("{*}DefaultValue") or ""
            count_default = int(text) if text.strip().isdigit() else None
    return Capabilities(types, formats, count_default)


def _xml(body: bytes, what: str, url: str, request: str) -> ET.Element:
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise VectorDataError(
            f"{what}: {request} answer is not XML ({exc}); it starts {snippet(body, url)!r}"
        ) from exc
    _raise_exception_report(root, what, url, request)
    return root


def _raise_exception_report(root: ET.Element, what: str, url: str, request: str) -> None:
    if root.tag.endswith("ExceptionReport"):
        texts = [t.text.strip() for t in root.iter() if t.text and t.text.strip()]
        codes = [e.get("exceptionCode") or e.get("code") for e in root.iterfind(".//{*}Exception")]
        code = next((c for c in codes if c), "")
        detail = snippet(" ".join(texts).encode(), url)
        raise VectorDataError(f"{what}: {request} failed: {code} {detail}".rstrip())


def srs_of(srs_name: str) -> tuple[str, CRS, bool]:
    """``(srsName sent, CRS, lat-first)`` for a spec's ``srs_name``."""
    try:
        crs = CRS.from_user_input(srs_name)
    except CRSError as exc:
        raise ConfigError(f"wfs srs_name {srs_name!r} is not a known CRS ({exc})") from exc
    epsg = crs.to_epsg()
    sent = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else srs_name
    first = crs.axis_info[0].direction.lower() if crs.axis_info else "east"
    return sent, crs, first in ("north", "south")


def bbox_param(bbox: Bbox, srs_name: str) -> str:
    """The ``BBOX`` value: the WGS84 bbox in ``srs_name``, in its axis order, CRS appended."""
    sent, crs, lat_first = srs_of(srs_name)
    x0, y0, x1, y1 = bbox_in(bbox, crs)
    corners = (y0, x0, y1, x1) if lat_first else (x0, y0, x1, y1)
    return ",".join(f"{v:.9g}" for v in corners) + f",{sent}"


@register_vector("wfs")
class WfsSource(ServiceSource):
    """A WFS feature type read page by page (module docstring for the rules)."""

    def __init__(
        self, spec: WfsSpec, *, step: str | None = None, base_dir: Path | None = None
    ) -> None:
        super().__init__(spec, step=step, base_dir=base_dir)
        self.spec: WfsSpec = spec
        self.what = f"WFS {self.path}"
        self._caps: Capabilities | None = None
        srs_of(spec.srs_name)  # fail early on an unknown CRS

    # -- capabilities ----------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        """The parsed GetCapabilities (requested once)."""
        if self._caps is None:
            params = {"SERVICE": "WFS", "REQUEST": "GetCapabilities"}
            params["ACCEPTVERSIONS" if self.spec.version == "2.0.0" else "VERSION"] = (
                self.spec.version
            )
            body = self._get(params, "GetCapabilities")
            self._caps = parse_capabilities(body, self.what, self.spec.url)
        return self._caps

    def type_name(self) -> str:
        """The qualified name of ``spec.type_name`` in the capabilities."""
        caps, wanted = self.capabilities(), self.spec.type_name
        if wanted in caps.types:
            return wanted
        local = [n for n in caps.types if n.split(":")[-1] == wanted.split(":")[-1]]
        if len(local) == 1:
            return local[0]
        listed = ", ".join(sorted(caps.types)) or "none"
        if local:
            raise VectorDataError(
                f"{self.what}: type_name {wanted!r} is ambiguous ({', '.join(local)}); "
                "give the prefix"
            )
        raise VectorDataError(f"{self.what}: no feature type {wanted!r}; types: {listed}")

    def output_format(self, type_name: str) -> str | None:
        """``spec.output_format``, else a GeoJSON format offered, else GML for the version."""
        if self.spec.output_format:
            return self.spec.output_format
        caps = self.capabilities()
        offered = caps.types.get(type_name) or caps.getfeature_formats
        json_formats = [f for f in offered if "json" in f.lower()]
        if json_formats:
            return min(json_formats, key=lambda f: ("geo" not in f.lower(), len(f)))
        for candidate in GML_FORMATS[self.spec.version]:
            if candidate in offered:
                return candidate
        return None  # the server's default (GML)

    # -- features --------------------------------------------------------------------

    def _fetch(self, bbox: Bbox | None) -> gpd.GeoDataFrame:
        spec = self.spec
        name = self.type_name()
        fmt = self.output_format(name)
        page = spec.page_size or self.capabilities().count_default or DEFAULT_PAGE
        base: dict[str, str | int] = {
            "SERVICE": "WFS",
            "VERSION": spec.version,
            "REQUEST": "GetFeature",
            ("TYPENAMES" if spec.version == "2.0.0" else "TYPENAME"): name,
            "SRSNAME": srs_of(spec.srs_name)[0],
        }
        if fmt:
            base["OUTPUTFORMAT"] = fmt
        if bbox is not None:
            base["BBOX"] = bbox_param(bbox, spec.srs_name)
        frames: list[gpd.GeoDataFrame] = []
        start, matched, previous = 0, None, None
        for _ in range(MAX_PAGES):
            params = {**base, ("COUNT" if spec.version == "2.0.0" else "MAXFEATURES"): page}
            params["STARTINDEX"] = start
            body = self._get(params, "GetFeature")
            digest = hashlib.sha256(body).hexdigest()
            frame, numbers = self._parse_page(body, fmt)
            if len(frame) and digest == previous:
                raise VectorDataError(
                    f"{self.what}: GetFeature answered the same page for STARTINDEX={start}; "
                    "the server ignores paging: set page_size above the feature count"
                )
            previous = digest
            matched = numbers.get("numberMatched", matched)
            frames.append(frame)
            start += len(frame)
            log.debug(
                "%s: page of %d features (total %d of %s)", self.what, len(frame), start, matched
            )
            if len(frame) == 0 or (matched is not None and start >= matched):
                break
        else:
            raise VectorDataError(f"{self.what}: more than {MAX_PAGES} pages; narrow the area")
        frames = [f for f in frames if len(f)] or frames[:1]
        out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return gpd.GeoDataFrame(out, geometry="geometry", crs=frames[0].crs)

    def _parse_page(self, body: bytes, fmt: str | None) -> tuple[gpd.GeoDataFrame, dict[str, int]]:
        head = body.lstrip()[:1]
        if head == b"<":  # XML: GML, or an exception report
            if b"ExceptionReport" in body[:2000]:
                _xml(body, self.what, self.spec.url, "GetFeature")
            return self._gml_page(body)
        if fmt is not None and "json" not in fmt.lower():
            raise VectorDataError(
                f"{self.what}: GetFeature answered {snippet(body, self.spec.url)!r}, not {fmt}"
            )
        return self._geojson_page(body)

    def _geojson_page(self, body: bytes) -> tuple[gpd.GeoDataFrame, dict[str, int]]:
        _, crs, _ = srs_of(self.spec.srs_name)
        try:
            doc = json.loads(body)
            features = doc["features"]
        except (ValueError, KeyError, TypeError) as exc:
            raise VectorDataError(
                f"{self.what}: GetFeature answer is not GeoJSON ({exc}); it starts "
                f"{snippet(body, self.spec.url)!r}"
            ) from exc
        numbers = {}
        for key in ("numberMatched", "totalFeatures"):
            if isinstance(doc.get(key), int):
                numbers["numberMatched"] = doc[key]
                break
        if not features:
            return gpd.GeoDataFrame({"geometry": []}, geometry="geometry", crs=crs), numbers
        frame = gpd.GeoDataFrame.from_features(features, crs=crs)
        ids = [f.get("id") for f in features]
        if any(i is not None for i in ids):
            frame.insert(0, "wfs_id", [None if i is None else str(i) for i in ids])
        return frame, numbers

    def _gml_page(self, body: bytes) -> tuple[gpd.GeoDataFrame, dict[str, int]]:
        numbers = {k.decode(): int(v) for k, v in _NUMBER.findall(body[:4000])}
        if numbers.get("numberReturned") == 0 or not _MEMBER.search(body):
            return gpd.GeoDataFrame({"geometry": []}, geometry="geometry"), numbers
        with tempfile.TemporaryDirectory(prefix="geoaudit-wfs-") as tmp:
            path = Path(tmp) / "page.gml"
            path.write_bytes(body)
            try:
                frame = pyogrio.read_dataframe(
                    path,
                    DOWNLOAD_SCHEMA="NO",  # no request GeoAudit does not make itself
                    EXPOSE_GML_ID="YES",
                    CONSIDER_EPSG_AS_URN="YES",  # the URN was asked for: EPSG axis order
                    on_invalid="ignore",
                )
            except (DataSourceError, DataLayerError) as exc:
                raise VectorDataError(f"{self.what}: cannot read the GML answer ({exc})") from exc
        # gml:boundedBy read as text fields, not attributes of the feature
        frame = frame.drop(columns=["lowerCorner", "upperCorner"], errors="ignore")
        if "gml_id" in frame.columns:
            frame = frame.rename(columns={"gml_id": "wfs_id"})
        return frame, numbers

    def _get(self, params: dict[str, str | int], request: str) -> bytes:
        url = with_params(self.spec.url, params)
        return http_bytes(
            url,
            headers=self.spec.headers,
            timeout=self.spec.timeout_s,
            what=self.what,
            action=f"{request} failed",
        )

    def _ids(self, gdf: gpd.GeoDataFrame) -> pd.Series:
        """``id_field``; else ``wfs_id`` when complete and distinct; else as ``vector``."""
        if self.spec.id_field is None and "wfs_id" in gdf.columns:
            ids = gdf["wfs_id"]
            if ids.notna().all() and ids.is_unique:
                return ids.astype(str)
            return feature_ids(gdf.drop(columns="wfs_id"), None, self.what)
        return feature_ids(gdf, self.spec.id_field, self.what)


__all__ = ["WfsSource", "bbox_param", "parse_capabilities"]
