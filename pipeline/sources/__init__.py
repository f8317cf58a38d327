"""Sources: imagery and open data for one AOI and time step.

``open_imagery(spec)`` / ``open_vector(spec)`` build the source registered for
``spec.kind``; the built-in kinds (``geotiff``, ``xyz``, ``vector``, ``overpass``,
``osm_pbf``, ``wfs``, ``arcgis``, ``postgis``) are imported and
registered on first use, so importing the specs stays cheap.
"""

from __future__ import annotations

from pipeline.sources.base import (
    IMAGERY_SOURCES,
    VECTOR_SOURCES,
    ImagerySource,
    ShardImage,
    VectorSource,
    check_coverage,
    latest_step,
    load_builtin_sources,
    open_imagery,
    open_vector,
    register_imagery,
    register_vector,
)
from pipeline.sources.specs import (
    ArcGisSpec,
    GeoTiffSpec,
    ImagerySpec,
    OpenDataSpec,
    OsmPbfSpec,
    OverpassSpec,
    PostGisSpec,
    VectorSpec,
    WfsSpec,
    XyzSpec,
)

_LAZY = {
    "GeoTiffSource": "pipeline.sources.geotiff",
    "VectorFileSource": "pipeline.sources.vector",
    "XyzSource": "pipeline.sources.xyz",
    "ArcGisSource": "pipeline.sources.arcgis",
    "OsmPbfSource": "pipeline.sources.osm_pbf",
    "OverpassSource": "pipeline.sources.overpass",
    "PostGisSource": "pipeline.sources.postgis",
    "WfsSource": "pipeline.sources.wfs",
}


def __getattr__(name: str):
    """The source classes, imported on first access (they pull in rasterio/geopandas)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IMAGERY_SOURCES",
    "ArcGisSource",
    "ArcGisSpec",
    "OsmPbfSource",
    "OsmPbfSpec",
    "OverpassSource",
    "OverpassSpec",
    "PostGisSource",
    "PostGisSpec",
    "WfsSource",
    "WfsSpec",
    "VECTOR_SOURCES",
    "GeoTiffSource",
    "GeoTiffSpec",
    "ImagerySource",
    "ImagerySpec",
    "OpenDataSpec",
    "ShardImage",
    "VectorFileSource",
    "VectorSource",
    "VectorSpec",
    "XyzSource",
    "XyzSpec",
    "check_coverage",
    "latest_step",
    "load_builtin_sources",
    "open_imagery",
    "open_vector",
    "register_imagery",
    "register_vector",
]
