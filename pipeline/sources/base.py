"""Abstract sources: imagery read shard by shard, open data read as a GeoDataFrame.

A source is opened for one time step and used as a context manager that owns
its handles::

    with open_imagery(spec, step="2024-06", base_dir=aoi_dir) as src:
        image = src.read_shard(shard)      # ShardImage: (3, H, W) uint8 + (H, W) valid
        share = check_coverage(src, aoi)   # raises CoverageError when 0

New kinds plug in by registering a class (``@register_imagery("wms")``); the
callers (``open_imagery`` / ``open_vector``) do not change.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from abc import abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.errors import ConfigError, CoverageError
from pipeline.sources.env import resolve_env
from pipeline.tiles import MAX_LATITUDE, Shard

if TYPE_CHECKING:
    import geopandas as gpd
    from pyproj import Transformer

    from pipeline.sources.specs import ImagerySpec, OpenDataSpec

log = logging.getLogger(__name__)

STEP_PLACEHOLDER = "{step}"
#: source kinds read from files named by their spec's path and dated by ``{step}`` in
#: it (:func:`latest_templated_step`, which :func:`latest_step` applies without
#: importing their modules)
FILE_KINDS = frozenset({"geotiff", "vector"})
_CHUNK = 1 << 20


@dataclass(frozen=True, eq=False)
class ShardImage:
    """Imagery of one shard: ``data`` (3, H, W) uint8 and ``valid`` (H, W) bool."""

    shard: Shard
    data: np.ndarray
    valid: np.ndarray

    @property
    def valid_share(self) -> float:
        """Share of pixels with data, in [0, 1]."""
        return float(self.valid.mean()) if self.valid.size else 0.0


class ImagerySource(AbstractContextManager):
    """Imagery for one time step, read as web-mercator shard mosaics."""

    kind: str = ""
    path: str  # resolved path or URL, used in every error message

    @classmethod
    def latest_step(cls, spec: Any, *, until: str, base_dir: Path | None = None) -> str | None:
        """The newest time step of this source available on ``until`` (an ISO date), or
        None when there is none. A ``{step}``-templated path resolves to the newest
        existing date not after ``until`` (:func:`latest_templated_step`); a source
        without dates (a live service) is what it holds now: ``until``."""
        return latest_templated_step(spec.path, until=until, base_dir=base_dir)

    @abstractmethod
    def read_shard(self, shard: Shard) -> ShardImage:
        """Mosaic of ``shard`` in EPSG:3857 at ``shard_transform(shard)``, ``shard.size`` px."""

    @abstractmethod
    def footprint(self) -> BaseGeometry:
        """Polygon (EPSG:4326) where the imagery has data."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Cheap identity of the input: equal fingerprints mean unchanged imagery."""

    def describe(self) -> dict[str, Any]:
        """What the input is, for validation: ``band_count``, ``dtype`` and ``crs`` where
        known (JSON-able; a kind that cannot tell returns what it knows)."""
        return {}

    def close(self) -> None:
        """Release handles; idempotent."""

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()


class VectorSource(AbstractContextManager):
    """Open data (building footprints) for one time step."""

    kind: str = ""
    path: str
    #: The WGS84 bbox the caller will read (``open_vector(..., bbox=)``): live services
    #: fingerprint what they return there; None: that of the last read, else everything.
    area: tuple[float, float, float, float] | None = None

    @classmethod
    def latest_step(cls, spec: Any, *, until: str, base_dir: Path | None = None) -> str | None:
        """As :meth:`ImagerySource.latest_step`."""
        return latest_templated_step(spec.path, until=until, base_dir=base_dir)

    @abstractmethod
    def read(self, bbox: tuple[float, float, float, float] | None = None) -> gpd.GeoDataFrame:
        """Polygons intersecting a WGS84 bbox (all when ``None``).

        Returns EPSG:4326 with columns ``feature_id`` (str, unique), ``geometry`` and the
        original attributes.
        """

    @abstractmethod
    def fingerprint(self) -> str:
        """sha256 of the input bytes."""

    def read_info(self) -> dict[str, Any]:
        """What the last :meth:`read` saw before filtering, for validation: ``n_read``,
        ``crs`` (as declared, None when absent) and ``dropped`` (count per geometry type
        of the non-polygons left out)."""
        return {}

    def close(self) -> None:
        """Release handles; idempotent."""

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()


# --- registry -----------------------------------------------------------------

IMAGERY_SOURCES: dict[str, type[ImagerySource]] = {}
VECTOR_SOURCES: dict[str, type[VectorSource]] = {}

_I = TypeVar("_I", bound=type[ImagerySource])
_V = TypeVar("_V", bound=type[VectorSource])


def register_imagery(kind: str) -> Callable[[_I], _I]:
    """Class decorator: make ``open_imagery`` build ``cls(spec, step=, base_dir=)`` for ``kind``."""

    def deco(cls: _I) -> _I:
        cls.kind = kind
        IMAGERY_SOURCES[kind] = cls
        return cls

    return deco


def register_vector(kind: str) -> Callable[[_V], _V]:
    """Class decorator: make ``open_vector`` build ``cls(spec, step=, base_dir=)`` for ``kind``."""

    def deco(cls: _V) -> _V:
        cls.kind = kind
        VECTOR_SOURCES[kind] = cls
        return cls

    return deco


def load_builtin_sources() -> None:
    """Import (and so register) the built-in kinds: geotiff, xyz, vector, overpass,
    osm_pbf, wfs, arcgis, postgis.

    Deferred to the first open so that reading AOI files (e.g. while a scheduler
    parses DAGs) does not import rasterio, rio-tiler and geopandas.
    """
    import pipeline.sources.arcgis  # noqa: F401
    import pipeline.sources.geotiff  # noqa: F401
    import pipeline.sources.osm_pbf  # noqa: F401
    import pipeline.sources.overpass  # noqa: F401
    import pipeline.sources.postgis  # noqa: F401
    import pipeline.sources.stac  # noqa: F401
    import pipeline.sources.vector  # noqa: F401
    import pipeline.sources.wfs  # noqa: F401
    import pipeline.sources.wms  # noqa: F401
    import pipeline.sources.wmts  # noqa: F401
    import pipeline.sources.xyz  # noqa: F401


def open_imagery(
    spec: ImagerySpec,
    *,
    step: str | None = None,
    base_dir: Path | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    zoom: int | None = None,
) -> ImagerySource:
    """Open the imagery source described by ``spec`` for time step ``step``. ``bbox``
    (WGS84) and ``zoom`` are the area and zoom the caller reads: a remote service whose
    spec gives no ``bounds`` / ``zoom`` of its own is fingerprinted over them."""
    load_builtin_sources()
    spec = resolve_env(spec)
    fields = type(spec).model_fields
    if bbox is not None and "bounds" in fields and is_remote(str(spec.path)):
        update: dict[str, Any] = {}
        if spec.bounds is None:
            update["bounds"] = tuple(float(v) for v in bbox)
        if zoom is not None and "zoom" in fields and spec.zoom is None:
            update["zoom"] = zoom
        spec = spec.model_copy(update=update)
    try:
        cls = IMAGERY_SOURCES[spec.kind]
    except KeyError:
        known = ", ".join(sorted(IMAGERY_SOURCES))
        raise ConfigError(
            f"imagery kind {spec.kind!r} is not registered (known: {known})"
        ) from None
    return cls(spec, step=step, base_dir=base_dir)


def latest_step(
    spec: Any, *, until: str, base_dir: Path | None = None, imagery: bool
) -> str | None:
    """The newest step of the source ``spec`` describes, available on ``until``."""
    spec = resolve_env(spec)
    if spec.kind in FILE_KINDS:
        return latest_templated_step(spec.path, until=until, base_dir=base_dir)
    load_builtin_sources()
    registry = IMAGERY_SOURCES if imagery else VECTOR_SOURCES
    try:
        cls = registry[spec.kind]
    except KeyError:
        raise ConfigError(f"source kind {spec.kind!r} is not registered") from None
    return cls.latest_step(spec, until=until, base_dir=base_dir)


def latest_templated_step(
    path: str, *, until: str, base_dir: Path | None = None, lookback_days: int = 366
) -> str | None:
    """For a path with ``{step}``: the newest ISO date ``<= until`` for which it exists,
    found by listing a local folder, or by probing a URL day by day back over
    ``lookback_days`` (HTTP HEAD); None when there is none. Without ``{step}``: ``until``."""
    import datetime as dt

    if STEP_PLACEHOLDER not in path:
        return until
    limit = dt.date.fromisoformat(until)
    if is_remote(path):
        for back in range(lookback_days + 1):
            day = (limit - dt.timedelta(days=back)).isoformat()
            if _url_exists(path.replace(STEP_PLACEHOLDER, day)):
                return day
        return None
    local = Path(path).expanduser()
    if not local.is_absolute() and base_dir is not None:
        local = Path(base_dir) / local
    if STEP_PLACEHOLDER in local.parent.as_posix():
        raise ConfigError(f"{path}: {{step}} may only appear in the file or folder name")
    found = []
    for candidate in local.parent.glob(local.name.replace(STEP_PLACEHOLDER, "*")):
        if candidate.name == local.name:
            continue
        prefix, suffix = local.name.split(STEP_PLACEHOLDER, 1)
        text = candidate.name[len(prefix) : len(candidate.name) - len(suffix) or None]
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            continue
        if day <= limit:
            found.append(day)
    return max(found).isoformat() if found else None


def _url_exists(url: str) -> bool:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method="HEAD")  # noqa: S310 (the user's URL)
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:  # noqa: S310
            return 200 <= resp.status < 300
    except urllib.error.HTTPError:
        return False


def open_vector(
    spec: OpenDataSpec,
    *,
    step: str | None = None,
    base_dir: Path | None = None,
    bbox: tuple[float, float, float, float] | None = None,
) -> VectorSource:
    """Open the open-data source described by ``spec`` for time step ``step``; ``bbox``
    (WGS84) is the area the caller will read, which live services fingerprint."""
    load_builtin_sources()
    spec = resolve_env(spec)
    try:
        cls = VECTOR_SOURCES[spec.kind]
    except KeyError:
        known = ", ".join(sorted(VECTOR_SOURCES))
        raise ConfigError(
            f"open-data kind {spec.kind!r} is not registered (known: {known})"
        ) from None
    source = cls(spec, step=step, base_dir=base_dir)
    if bbox is not None:
        source.area = tuple(bbox)  # type: ignore[assignment]
    return source


# --- helpers shared by the sources ----------------------------------------------


def is_remote(path: str) -> bool:
    """True for URLs (``scheme://``) and GDAL virtual paths (``/vsi...``)."""
    return "://" in path or path.startswith("/vsi")


def resolve_path(path: str, *, step: str | None, base_dir: Path | None) -> str:
    """Replace ``{step}`` and resolve a relative local path against ``base_dir``."""
    if STEP_PLACEHOLDER in path:
        if step is None:
            raise ConfigError(f"source path {path!r} contains {{step}} but no time step was given")
        path = path.replace(STEP_PLACEHOLDER, step)
    if is_remote(path):
        return path
    local = Path(path).expanduser()
    if not local.is_absolute() and base_dir is not None:
        local = Path(base_dir) / local
    return os.fspath(local)


def sha256_files(paths: list[Path]) -> str:
    """sha256 over the bytes of ``paths`` in order (name of each file included when several)."""
    digest = hashlib.sha256()
    for p in paths:
        if len(paths) > 1:
            digest.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def _to_3857() -> Transformer:
    """The WGS84 → Web Mercator transformer (pyproj loads when first projected)."""
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)


def to_web_mercator(geom: BaseGeometry) -> BaseGeometry:
    """Project a WGS84 geometry to EPSG:3857 (latitudes clipped to ±MAX_LATITUDE)."""
    geom = shapely.clip_by_rect(geom, -180.0, -MAX_LATITUDE, 180.0, MAX_LATITUDE)
    return shapely.transform(
        geom, lambda xy: np.column_stack(_to_3857().transform(xy[:, 0], xy[:, 1]))
    )


def check_coverage(source: ImagerySource, aoi: BaseGeometry) -> float:
    """Share of the AOI (EPSG:4326) covered by the imagery footprint.

    ``share = area(aoi ∩ footprint) / area(aoi)``, areas in EPSG:3857 (the cos² scale
    factor cancels in the ratio for AOIs of city size). Raises :class:`CoverageError`
    when the share is 0.
    """
    if aoi.is_empty or aoi.area == 0:
        raise CoverageError(f"AOI polygon is empty; cannot check coverage of {source.path}")
    aoi_m = to_web_mercator(aoi)
    footprint = source.footprint()
    if footprint.is_empty:
        raise CoverageError(
            f"{source.path}: imagery has no valid pixels (every pixel is nodata or masked)"
        )
    covered = to_web_mercator(footprint).intersection(aoi_m).area
    share = min(1.0, covered / aoi_m.area)
    if share <= 0.0:
        bounds = ", ".join(f"{v:.5f}" for v in aoi.bounds)
        raise CoverageError(
            f"{source.path}: imagery does not cover the AOI (AOI bounds {bounds}); "
            "check the path, time step and AOI"
        )
    log.debug("%s covers %.1f%% of the AOI", source.path, 100 * share)
    return share
