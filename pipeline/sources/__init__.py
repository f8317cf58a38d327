"""Sources: imagery and open data for one AOI and time step.

``open_imagery(spec)`` / ``open_vector(spec)`` build the source registered for
``spec.kind``; importing this package registers the built-in kinds
(``geotiff``, ``xyz``, ``vector``).
"""

from __future__ import annotations

from pipeline.sources.base import (
    IMAGERY_SOURCES,
    VECTOR_SOURCES,
    ImagerySource,
    ShardImage,
    VectorSource,
    check_coverage,
    open_imagery,
    open_vector,
    register_imagery,
    register_vector,
)
from pipeline.sources.geotiff import GeoTiffSource
from pipeline.sources.specs import GeoTiffSpec, ImagerySpec, OpenDataSpec, VectorSpec, XyzSpec
from pipeline.sources.vector import VectorFileSource
from pipeline.sources.xyz import XyzSource

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
    "open_imagery",
    "open_vector",
    "register_imagery",
    "register_vector",
]
