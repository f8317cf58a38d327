"""What the live open-data services (Overpass, WFS, ArcGIS, PostGIS) share; osm_pbf
uses it too (a file parsed once, cut per bbox).

A service is read per bbox; the raw answer is kept for the life of the source, so
``fingerprint()`` and ``read()`` of the same area cost one request sequence::

    with open_vector(spec, step="2024-06-01", bbox=aoi_bbox) as src:
        fp = src.fingerprint()      # fetches aoi_bbox once ...
        frame = src.read(aoi_bbox)  # ... and reads it from memory

The fingerprint is :func:`~pipeline.sources.frames.frame_fingerprint` of the features
returned over ``area`` (``open_vector(bbox=)``), else over the bbox of the last read,
else over everything (a service that cannot serve everything says so).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd

from pipeline.errors import VectorDataError
from pipeline.sources.base import VectorSource
from pipeline.sources.frames import Bbox, describe_dropped, feature_ids, finish, frame_fingerprint

log = logging.getLogger(__name__)

_UNREAD = object()


class ServiceSource(VectorSource):
    """A live service read per bbox. Subclasses implement :meth:`_fetch`; ids come from
    :meth:`_ids` (``spec.id_field`` / ``id_column``, else the usual id fields, else
    geometry ids) unless the raw frame carries a ``feature_id`` column."""

    #: False for services that cannot answer "everything" (Overpass: the planet).
    serves_everything: bool = True

    def __init__(self, spec: Any, *, step: str | None = None, base_dir: Path | None = None) -> None:
        self.spec = spec
        self.step = step
        self.path = spec.path
        self._raw: dict[Bbox | None, gpd.GeoDataFrame] = {}
        self._last_bbox: Any = _UNREAD
        self._read_info: dict[str, Any] = {}

    @classmethod
    def latest_step(cls, spec: Any, *, until: str, base_dir: Path | None = None) -> str | None:
        """A live service holds its content now: ``until``."""
        return until

    @abstractmethod
    def _fetch(self, bbox: Bbox | None) -> gpd.GeoDataFrame:
        """The raw features intersecting the WGS84 ``bbox`` (all when None), with a CRS."""

    def _id_field(self) -> str | None:
        return getattr(self.spec, "id_field", None)

    def _ids(self, gdf: gpd.GeoDataFrame) -> pd.Series:
        if "feature_id" in gdf.columns and self._id_field() is None:
            return feature_ids(gdf, "feature_id", self.path)
        return feature_ids(gdf, self._id_field(), self.path)

    def _raw_for(self, bbox: Bbox | None) -> gpd.GeoDataFrame:
        """The raw answer for ``bbox``: cached, or cut from a cached answer for everything."""
        key = tuple(float(v) for v in bbox) if bbox is not None else None
        if key in self._raw:
            return self._raw[key]
        if None in self._raw:
            return self._raw[None]  # finish() keeps what intersects the bbox
        if key is None and not self.serves_everything:
            raise VectorDataError(
                f"{self.kind} {self.path}: cannot read everything; give the area to read "
                "(read(bbox) or open_vector(..., bbox=))"
            )
        raw = self._fetch(key)
        if raw.crs is None:
            raw = raw.set_crs(4326)
        self._raw[key] = raw
        return raw

    def read(self, bbox: Bbox | None = None) -> gpd.GeoDataFrame:
        """Polygons intersecting the WGS84 ``bbox`` (all when None), EPSG:4326, ``feature_id``."""
        raw = self._raw_for(bbox)
        gdf, info = finish(raw, name=f"{self.kind} {self.path}", bbox=bbox, ids=self._ids)
        self._read_info = info
        self._last_bbox = bbox
        if info["dropped"]:
            log.info(
                "%s %s: dropped %d non-polygon features (%s)",
                self.kind,
                self.path,
                sum(info["dropped"].values()),
                describe_dropped(info["dropped"]),
            )
        if len(gdf) == 0:
            log.warning("%s %s: no polygon features within bbox %s", self.kind, self.path, bbox)
        return gdf

    def read_info(self) -> dict[str, Any]:
        """``n_read``, declared ``crs`` and ``dropped`` non-polygons of the last read."""
        return dict(self._read_info)

    def fingerprint_area(self) -> Bbox | None:
        """The area fingerprinted: ``area``, else the last read's bbox, else None (all)."""
        if self.area is not None:
            return tuple(self.area)  # type: ignore[return-value]
        return None if self._last_bbox is _UNREAD else self._last_bbox

    def fingerprint(self) -> str:
        """sha256 of the features returned over :meth:`fingerprint_area` (ids, attributes
        such as versions and timestamps, geometry), whatever their order."""
        area = self.fingerprint_area()
        raw = self._raw_for(area)
        gdf, _ = finish(raw, name=f"{self.kind} {self.path}", bbox=area, ids=self._ids)
        return frame_fingerprint(gdf, extra=self.kind)
