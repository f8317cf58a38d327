"""Building footprints from an ArcGIS REST FeatureServer / MapServer layer.

Rules:
- The layer's description (``<url>?f=json``) gives ``maxRecordCount``, the
  ``objectIdField`` and whether the layer pages (``supportsPagination``).
- Features come from ``<url>/query`` (POST, ``f=geojson``, ``outFields=*``, ``outSR=4326``,
  ``where``, ordered by the object id), with the bbox as an ``esriGeometryEnvelope``
  in EPSG:4326 intersecting the features.
- Paging: ``resultOffset``/``resultRecordCount`` with pages of ``page_size`` (at most the
  layer's ``maxRecordCount``, which is also the default) for as long as the answer says
  ``exceededTransferLimit``. A layer without pagination is read by object ids instead:
  ``returnIdsOnly`` first, then the ids in chunks of ``maxRecordCount``.
- Ids: ``id_field``, else the layer's ``objectIdField``.
- An ``{"error": ...}`` answer (ArcGIS sends it with HTTP 200) is an error quoting the
  server; the URL's query string (e.g. ``token=``) is kept on every request and masked
  in every message.
"""

from __future__ import annotations

import logging
import urllib.parse
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from pipeline.errors import VectorDataError
from pipeline.sources.base import register_vector
from pipeline.sources.frames import Bbox, feature_ids
from pipeline.sources.service import ServiceSource
from pipeline.sources.specs import ArcGisSpec
from pipeline.sources.urls import scrub
from pipeline.sources.vector_http import http_json

log = logging.getLogger(__name__)

DEFAULT_MAX_RECORDS = 1000
MAX_PAGES = 100_000


@register_vector("arcgis")
class ArcGisSource(ServiceSource):
    """An ArcGIS layer read page by page (module docstring for the rules)."""

    def __init__(
        self, spec: ArcGisSpec, *, step: str | None = None, base_dir: Path | None = None
    ) -> None:
        super().__init__(spec, step=step, base_dir=base_dir)
        self.spec: ArcGisSpec = spec
        self.what = f"ArcGIS {self.path}"
        self._info: dict[str, Any] | None = None

    # -- requests ----------------------------------------------------------------------

    def _url(self, suffix: str = "", params: dict[str, Any] | None = None) -> str:
        """The layer URL (plus ``/query``) with the user's query string kept."""
        parts = urllib.parse.urlsplit(self.spec.url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        query += [(k, str(v)) for k, v in (params or {}).items()]
        path = parts.path.rstrip("/") + suffix
        return urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, path, urllib.parse.urlencode(query), "")
        )

    def _call(self, url: str, action: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        body = (
            urllib.parse.urlencode({k: str(v) for k, v in data.items()}).encode() if data else None
        )
        answer = http_json(
            url,
            data=body,
            headers=self.spec.headers,
            timeout=self.spec.timeout_s,
            what=self.what,
            action=f"{action} failed",
        )
        if not isinstance(answer, dict):
            raise VectorDataError(f"{self.what}: {action} answered no JSON object")
        if "error" in answer:
            err = answer["error"] or {}
            details = "; ".join(str(d) for d in err.get("details") or [])
            text = f"{err.get('code', '')} {err.get('message', '')} {details}".strip()
            raise VectorDataError(f"{self.what}: {action} failed: {scrub(text, self.spec.url)}")
        return answer

    def layer_info(self) -> dict[str, Any]:
        """The layer description (``?f=json``), requested once."""
        if self._info is None:
            info = self._call(self._url(params={"f": "json"}), "layer description")
            if "fields" not in info and "objectIdField" not in info:
                raise VectorDataError(
                    f"{self.what}: not a layer description (no 'fields'); the url must end "
                    "in /FeatureServer/<n> or /MapServer/<n>"
                )
            self._info = info
        return self._info

    def object_id_field(self) -> str:
        """The layer's ``objectIdField`` (or its ``esriFieldTypeOID`` field)."""
        info = self.layer_info()
        if info.get("objectIdField"):
            return str(info["objectIdField"])
        for f in info.get("fields") or []:
            if f.get("type") == "esriFieldTypeOID":
                return str(f["name"])
        raise VectorDataError(f"{self.what}: the layer has no object id field; set 'id_field'")

    def page_size(self) -> int:
        """``page_size`` capped at the layer's ``maxRecordCount`` (also the default)."""
        cap = int(self.layer_info().get("maxRecordCount") or DEFAULT_MAX_RECORDS)
        return min(self.spec.page_size or cap, cap)

    # -- features ------------------------------------------------------------------------

    def _query_params(self, bbox: Bbox | None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "where": self.spec.where,
            "outFields": "*",
            "returnGeometry": "true",
            "outSR": 4326,
            "f": "geojson",
        }
        if bbox is not None:
            w, s, e, n = bbox
            params |= {
                "geometry": f"{w!r},{s!r},{e!r},{n!r}",
                "geometryType": "esriGeometryEnvelope",
                "inSR": 4326,
                "spatialRel": "esriSpatialRelIntersects",
            }
        return params

    def _fetch(self, bbox: Bbox | None) -> gpd.GeoDataFrame:
        info = self.layer_info()
        oid = self.object_id_field()
        params = self._query_params(bbox)
        pages = info.get("advancedQueryCapabilities", {}).get("supportsPagination", True)
        features = self._paged(params, oid) if pages else self._by_ids(params, oid)
        if not features:
            return gpd.GeoDataFrame({oid: []}, geometry=[], crs="EPSG:4326")
        return gpd.GeoDataFrame.from_features(features, crs="EPSG:4326")

    def _paged(self, params: dict[str, Any], oid: str) -> list[dict[str, Any]]:
        size, features = self.page_size(), []
        for _ in range(MAX_PAGES):
            page = {
                **params,
                "orderByFields": f"{oid} ASC",
                "resultOffset": len(features),
                "resultRecordCount": size,
            }
            answer = self._call(self._url("/query"), "query", page)
            got = answer.get("features") or []
            features.extend(got)
            exceeded = answer.get("exceededTransferLimit") or (answer.get("properties") or {}).get(
                "exceededTransferLimit"
            )
            log.debug(
                "%s: page of %d (total %d, more: %s)", self.what, len(got), len(features), exceeded
            )
            if not got or not exceeded:
                return features
        raise VectorDataError(f"{self.what}: more than {MAX_PAGES} pages; narrow the area")

    def _by_ids(self, params: dict[str, Any], oid: str) -> list[dict[str, Any]]:
        """For layers without pagination: all object ids, then the features by id chunks."""
        ids_answer = self._call(
            self._url("/query"), "query (ids)", {**params, "returnIdsOnly": "true", "f": "json"}
        )
        ids = sorted(ids_answer.get("objectIds") or [])
        size, features = self.page_size(), []
        for i in range(0, len(ids), size):
            chunk = ",".join(str(v) for v in ids[i : i + size])
            query = {k: v for k, v in params.items() if k != "where"} | {"objectIds": chunk}
            features.extend(self._call(self._url("/query"), "query", query).get("features") or [])
        if len(features) != len(ids):
            raise VectorDataError(
                f"{self.what}: asked for {len(ids)} features by id, got {len(features)}"
            )
        return features

    def _ids(self, gdf: gpd.GeoDataFrame) -> pd.Series:
        """``id_field``, else the layer's object id field."""
        return feature_ids(gdf, self.spec.id_field or self.object_id_field(), self.what)


__all__ = ["ArcGisSource"]
