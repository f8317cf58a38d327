"""Sources: imagery and open data for one AOI and time step.

``open_imagery(spec)`` / ``open_vector(spec)`` build the source registered for
``spec.kind``; the built-in kinds (``geotiff``, ``xyz``, ``vector``) are imported and
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
    load_builtin_sources,
    open_imagery,
    open_vector,
    register_imagery,
    register_vector,
)
from pipeline.sources.specs import GeoTiffSpec, ImagerySpec, OpenDataSpec, VectorSpec, XyzSpec

_LAZY = {
    "GeoTiffSource": "pipeline.sources.geotiff",
    "VectorFileSource": "pipeline.sources.vector",
    "XyzSource": "pipeline.sources.xyz",
}


def __getattr__(name: str):
    """The source classes, imported on first access (they pull in rasterio/geopandas)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IMAGERY_SOURCES",
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
    "load_builtin_sources",
    "open_imagery",
    "open_vector",
    "register_imagery",
    "register_vector",
]
