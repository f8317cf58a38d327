"""Source specifications as they appear in an AOI YAML file (pydantic v2).

Imagery specs are discriminated by ``kind``::

    imagery: {kind: geotiff, path: "s3://bucket/{step}/ortho.tif", bands: [1, 2, 3]}
    imagery: {kind: xyz, path: tiles/{step}, zoom: 20}
    imagery: {kind: xyz, path: "https://{s}.example.org/{z}/{x}/{y}.jpg", subdomains: [a, b]}
    imagery: {kind: wms, url: "https://example.org/wms", layers: [ortho]}
    imagery: {kind: wmts, url: "https://example.org/WMTSCapabilities.xml", layer: ortho}
    imagery: {kind: stac, url: "https://example.org/stac", collections: [drone]}
    opendata: {kind: vector, path: buildings.gpkg, layer: buildings, id_field: osm_id}
    opendata: {kind: overpass, tags: {building: house}}
    opendata: {kind: osm_pbf, path: nepal.osh.pbf}
    opendata: {kind: wfs, url: "https://example.org/wfs", type_name: buildings}
    opendata: {kind: arcgis, url: "https://example.org/arcgis/rest/services/B/FeatureServer/0"}
    opendata: {kind: postgis, url: "postgresql+psycopg://gis@db/osm", table: public.buildings}

``path`` may contain ``{step}``, replaced by the audit's time step when the
source is opened; relative paths are resolved against the AOI file's folder.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from pipeline.sources.urls import mask_url
from pipeline.tiles import check_bbox

#: An RGB colour, 0..255 per channel.
RGB = tuple[
    Annotated[int, Field(ge=0, le=255)],
    Annotated[int, Field(ge=0, le=255)],
    Annotated[int, Field(ge=0, le=255)],
]
#: A WGS84 bbox ``(west, south, east, north)``.
Bbox = tuple[float, float, float, float]


class GeoTiffSpec(BaseModel):
    """A GeoTIFF / COG, local or remote (anything rasterio/GDAL opens)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["geotiff"] = "geotiff"
    path: str = Field(min_length=1)
    bands: list[int] = Field(default_factory=lambda: [1, 2, 3])
    nodata: float | None = None
    rescale: tuple[float, float] | None = None

    @field_validator("bands")
    @classmethod
    def _check_bands(cls, bands: list[int]) -> list[int]:
        if len(bands) not in (1, 3):
            raise ValueError(f"bands must list 1 or 3 band numbers, got {bands}")
        if any(b < 1 for b in bands):
            raise ValueError(f"band numbers are 1-based, got {bands}")
        return bands

    @field_validator("rescale")
    @classmethod
    def _check_rescale(cls, rescale: tuple[float, float] | None) -> tuple[float, float] | None:
        if rescale is not None and not rescale[0] < rescale[1]:
            raise ValueError(f"rescale must be (min, max) with min < max, got {rescale}")
        return rescale


class XyzSpec(BaseModel):
    """XYZ tiles: a local directory ``{z}/{x}/{y}.{png,jpg,jpeg,webp}``, or a tile service
    URL template with ``{z}``, ``{x}``, ``{y}`` (or ``{-y}``, the TMS row ``2**z - 1 - y``)
    and optionally ``{s}`` (one of ``subdomains``, picked by ``(x + y) % len``).

    ``zoom``: the tiles' native zoom (default: the work zoom). The remaining fields apply
    to a URL template only, except ``nodata_colour``/``nodata_tolerance``: a pixel whose
    every channel is within ``nodata_tolerance`` of ``nodata_colour`` is invalid (for
    JPEG tiles filled black or white outside the image, use a tolerance of ~10).
    ``bounds`` (WGS84 ``[west, south, east, north]``, usually the AOI's bbox, needs
    ``zoom``) is the area the footprint and fingerprint are computed over; a service
    cannot be listed, so without it neither is known before shards are read.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["xyz"] = "xyz"
    path: str = Field(min_length=1)
    zoom: int | None = Field(default=None, ge=0, le=24)
    nodata_colour: RGB | None = None
    nodata_tolerance: int = Field(default=0, ge=0, le=255)
    subdomains: list[str] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    max_concurrency: int = Field(default=8, ge=1, le=64)
    rate_limit: float | None = Field(default=None, gt=0)
    bounds: Bbox | None = None
    cache_dir: str | None = None

    @field_validator("bounds")
    @classmethod
    def _check_bounds(cls, bounds: Bbox | None) -> Bbox | None:
        return _bbox(bounds)

    @model_validator(mode="after")
    def _check_template(self) -> XyzSpec:
        if "://" not in self.path:
            remote_only = {"subdomains", "headers", "max_concurrency", "rate_limit", "bounds"}
            fields = type(self).model_fields
            # set to something other than the default (a stored config lists every field)
            given = sorted(
                name
                for name in remote_only | {"cache_dir"}
                if getattr(self, name) != fields[name].get_default(call_default_factory=True)
            )
            if given:
                raise ValueError(
                    f"{', '.join(given)} only apply to a tile service URL template; "
                    f"path {self.path!r} is a local directory"
                )
            return self
        missing = [p for p in ("{z}", "{x}") if p not in self.path]
        if "{y}" not in self.path and "{-y}" not in self.path:
            missing.append("{y} or {-y}")
        if missing:
            raise ValueError(
                f"tile URL template {self.path!r} lacks {', '.join(missing)} "
                "(e.g. https://tiles.example.org/{z}/{x}/{y}.png)"
            )
        if "{s}" in self.path and not self.subdomains:
            raise ValueError("tile URL template has {s}: list the subdomains, e.g. [a, b, c]")
        _needs_zoom(self.bounds, self.zoom)
        return self


class WmsSpec(BaseModel):
    """An OGC WMS 1.1.1 / 1.3.0 service, read with one GetMap per shard.

    ``url``: the service endpoint (its query string, e.g. ``map=`` or a key, is kept);
    ``layers`` are drawn in order with ``styles`` (none, or one per layer); ``crs`` is
    requested (EPSG:3857 by default; another CRS is warped to the shard grid);
    ``max_size``: largest GetMap side in px (bigger shards are requested in blocks).
    Alpha (``transparent``) and ``nodata_colour`` give invalid pixels. ``bounds`` +
    ``zoom``: the area and resolution of the footprint/fingerprint pass (see XyzSpec).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["wms"] = "wms"
    url: str = Field(min_length=1)
    layers: list[str] = Field(min_length=1)
    styles: list[str] = Field(default_factory=list)
    format: str = "image/png"
    version: Literal["1.1.1", "1.3.0"] = "1.3.0"
    crs: str = "EPSG:3857"
    transparent: bool = True
    nodata_colour: RGB | None = None
    nodata_tolerance: int = Field(default=0, ge=0, le=255)
    headers: dict[str, str] = Field(default_factory=dict)
    max_concurrency: int = Field(default=4, ge=1, le=64)
    rate_limit: float | None = Field(default=None, gt=0)
    max_size: int = Field(default=2048, ge=256, le=8192)
    bounds: Bbox | None = None
    zoom: int | None = Field(default=None, ge=0, le=24)

    @property
    def path(self) -> str:
        """The service URL (what every source names in messages)."""
        return self.url

    @field_validator("bounds")
    @classmethod
    def _check_bounds(cls, bounds: Bbox | None) -> Bbox | None:
        return _bbox(bounds)

    @field_validator("max_size")
    @classmethod
    def _check_max_size(cls, size: int) -> int:
        if size & (size - 1):
            raise ValueError(f"max_size must be a power of two (256 ... 8192), got {size}")
        return size

    @model_validator(mode="after")
    def _check(self) -> WmsSpec:
        if self.styles and len(self.styles) != len(self.layers):
            raise ValueError(
                f"styles must be empty or one per layer ({len(self.layers)}), got {self.styles}"
            )
        if not self.format.startswith("image/"):
            raise ValueError(f"format must be an image MIME type, got {self.format!r}")
        _needs_zoom(self.bounds, self.zoom)
        return self


class WmtsSpec(BaseModel):
    """An OGC WMTS layer, read as the web-mercator tiles of the work zoom (``zoom``
    overrides) from a GoogleMapsCompatible / WebMercatorQuad tile matrix set.

    ``url``: the GetCapabilities URL (KVP or RESTful ``WMTSCapabilities.xml``), or a
    RESTful tile template with ``{TileMatrix}``, ``{TileRow}``, ``{TileCol}`` (and
    optionally ``{TileMatrixSet}``, ``{Style}``, ``{Layer}``), whose matrices are then
    named by zoom level. ``tile_matrix_set``/``style``/``format`` default to the
    web-mercator set, the layer's default style and its first image format. The other
    fields are as in XyzSpec.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["wmts"] = "wmts"
    url: str = Field(min_length=1)
    layer: str = Field(min_length=1)
    tile_matrix_set: str | None = None
    style: str | None = None
    format: str | None = None
    zoom: int | None = Field(default=None, ge=0, le=24)
    nodata_colour: RGB | None = None
    nodata_tolerance: int = Field(default=0, ge=0, le=255)
    headers: dict[str, str] = Field(default_factory=dict)
    max_concurrency: int = Field(default=8, ge=1, le=64)
    rate_limit: float | None = Field(default=None, gt=0)
    bounds: Bbox | None = None
    cache_dir: str | None = None

    @property
    def path(self) -> str:
        """The service URL (what every source names in messages)."""
        return self.url

    @field_validator("bounds")
    @classmethod
    def _check_bounds(cls, bounds: Bbox | None) -> Bbox | None:
        return _bbox(bounds)

    @model_validator(mode="after")
    def _check(self) -> WmtsSpec:
        if "{TileMatrix}" in self.url and not all(
            p in self.url for p in ("{TileRow}", "{TileCol}")
        ):
            raise ValueError(
                f"WMTS tile template {self.url!r} needs {{TileMatrix}}, {{TileRow}} and {{TileCol}}"
            )
        _needs_zoom(self.bounds, self.zoom)
        return self


class StacSpec(BaseModel):
    """A STAC API: items of ``collections`` dated in ``(step - window_days, step]``,
    newest first, mosaicked from their ``asset`` COGs (the newest valid pixel wins).

    ``bands``/``nodata``/``rescale`` are as in GeoTiffSpec. ``max_cloud_cover`` (percent)
    filters on ``eo:cloud_cover`` (items without it are kept). ``bounds``: the WGS84 bbox
    searched for the footprint and fingerprint (usually the AOI's); without it the whole
    window is searched, at most ``max_items`` items.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["stac"] = "stac"
    url: str = Field(min_length=1)
    collections: list[str] = Field(min_length=1)
    asset: str = Field(default="visual", min_length=1)
    bands: list[int] = Field(default_factory=lambda: [1, 2, 3])
    nodata: float | None = None
    rescale: tuple[float, float] | None = None
    window_days: int = Field(default=365, ge=1, le=36600)
    max_cloud_cover: float | None = Field(default=None, ge=0, le=100)
    bounds: Bbox | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    max_items: int = Field(default=500, ge=1, le=10000)

    @property
    def path(self) -> str:
        """The API URL (what every source names in messages)."""
        return self.url

    @field_validator("bands")
    @classmethod
    def _check_bands(cls, bands: list[int]) -> list[int]:
        return GeoTiffSpec._check_bands(bands)

    @field_validator("rescale")
    @classmethod
    def _check_rescale(cls, rescale: tuple[float, float] | None) -> tuple[float, float] | None:
        return GeoTiffSpec._check_rescale(rescale)

    @field_validator("bounds")
    @classmethod
    def _check_bounds(cls, bounds: Bbox | None) -> Bbox | None:
        return _bbox(bounds)


def _bbox(bounds: Bbox | None) -> Bbox | None:
    """``bounds`` checked by :func:`pipeline.tiles.check_bbox` (ConfigError is a ValueError)."""
    return None if bounds is None else tuple(check_bbox(bounds))  # type: ignore[return-value]


def _needs_zoom(bounds: Bbox | None, zoom: int | None) -> None:
    if bounds is not None and zoom is None:
        raise ValueError(
            "bounds needs zoom: the footprint and fingerprint are computed at that zoom "
            "(the AOI's work zoom, or the service's native zoom)"
        )


ImagerySpec = Annotated[
    GeoTiffSpec | XyzSpec | WmsSpec | WmtsSpec | StacSpec, Field(discriminator="kind")
]


class VectorSpec(BaseModel):
    """A vector file or URL: GeoJSON, GeoPackage, Shapefile, GeoParquet (or any OGR format)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["vector"] = "vector"
    path: str = Field(min_length=1)
    layer: str | None = None
    id_field: str | None = None
    where: str | None = None


#: OSM tag filter: key -> required value, or None for "key present".
OsmTags = dict[str, str | None]


def _check_osm_tags(tags: OsmTags) -> OsmTags:
    for key, value in tags.items():
        if not key or any(ch in key for ch in '\n\r"\\'):
            raise ValueError(f"tag keys must be non-empty without quotes or newlines, got {key!r}")
        if value is not None and any(ch in value for ch in "\n\r"):
            raise ValueError(f"tag values must be one line, got {value!r} for {key!r}")
    return tags


def _service_name(url: str, suffix: str = "") -> str:
    """A service as named in messages and snapshots: the URL with query string and password
    masked; always with ``://`` so that AOI path resolution leaves it alone."""
    masked = mask_url(url)
    if "://" not in masked:  # e.g. a whole "${ENV_VAR}" URL
        masked = f"url://{masked}"
    return masked + (f"#{suffix}" if suffix else "")


class OverpassSpec(BaseModel):
    """OSM buildings from an Overpass API, as they were on the time step.

    The query covers the bbox read; a step in the past adds ``[date:"<step>T00:00:00Z"]``
    (Overpass's attic data), so a run for date D sees OSM as it was at the start of D.
    ``preset: buildings``: ways and multipolygon relations with ``building=*`` (not
    ``building=no``); ``tags`` narrows it (``{"building": "house"}`` for a value,
    ``{"name": null}`` for a key present). ``timeout_s``: the server-side query timeout.
    ``headers`` are sent as given (e.g. a key for a commercial instance) and never logged.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["overpass"] = "overpass"
    url: str = Field(default="https://overpass-api.de/api/interpreter", min_length=1)
    preset: Literal["buildings"] = "buildings"
    tags: OsmTags = Field(default_factory=dict)
    timeout_s: int = Field(default=180, ge=1, le=3600)
    headers: dict[str, str] = Field(default_factory=dict)

    @property
    def path(self) -> str:
        """The service URL, query string masked (what messages and snapshots name)."""
        return _service_name(self.url)

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, tags: OsmTags) -> OsmTags:
        return _check_osm_tags(tags)


class OsmPbfSpec(BaseModel):
    """An OSM extract (``.osm.pbf``) or history file (``.osh.pbf``) read with pyosmium.

    ``preset: buildings``: closed ways and multipolygon relations with ``building=*`` (not
    ``building=no``), narrowed by ``tags`` as in :class:`OverpassSpec`. A history file
    (``history: true``, or a ``.osh``/``.osh.pbf`` name, or a header saying so) is read as
    it was on the time step: each object's newest version with a timestamp before
    ``<step>T00:00:00Z``, objects deleted by then left out. ``path`` may contain ``{step}``.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["osm_pbf"] = "osm_pbf"
    path: str = Field(min_length=1)
    preset: Literal["buildings"] = "buildings"
    tags: OsmTags = Field(default_factory=dict)
    history: bool | None = None

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, tags: OsmTags) -> OsmTags:
        return _check_osm_tags(tags)


class WfsSpec(BaseModel):
    """An OGC WFS 2.0.0 / 1.1.0 feature type, read with paged GetFeature requests.

    ``url``: the endpoint (its query string, e.g. ``map=`` or a key, is kept);
    ``type_name``: the feature type (with or without its namespace prefix);
    ``srs_name``: the CRS requested (the bbox filter is sent in it, in its axis order);
    ``output_format``: None picks GeoJSON when the server offers it, else GML;
    ``page_size``: features per request (default: the server's CountDefault, else 1000);
    ``id_field``: the id attribute (default: the service's feature ids, else as ``vector``).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["wfs"] = "wfs"
    url: str = Field(min_length=1)
    type_name: str = Field(min_length=1)
    version: Literal["2.0.0", "1.1.0"] = "2.0.0"
    srs_name: str = "EPSG:4326"
    output_format: str | None = None
    page_size: int | None = Field(default=None, ge=1, le=100_000)
    id_field: str | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)

    @property
    def path(self) -> str:
        """The service URL, query string masked, ``#type_name``."""
        return _service_name(self.url, self.type_name)


class ArcGisSpec(BaseModel):
    """An ArcGIS REST FeatureServer / MapServer layer (``.../FeatureServer/0``), read with
    paged ``query`` requests (``f=geojson``, ``outFields=*``, bbox envelope filter).

    ``where``: the layer's SQL where clause; ``page_size``: records per request (at most,
    and by default, the layer's maxRecordCount); ``id_field``: the id attribute
    (default: the layer's objectIdField). A ``?token=`` in ``url`` is kept and masked.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["arcgis"] = "arcgis"
    url: str = Field(min_length=1)
    where: str = Field(default="1=1", min_length=1)
    id_field: str | None = None
    page_size: int | None = Field(default=None, ge=1, le=100_000)
    timeout_s: float = Field(default=120.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)

    @property
    def path(self) -> str:
        """The layer URL, query string masked."""
        return _service_name(self.url)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        layer_path = urllib.parse.urlsplit(url).path.rstrip("/") if "://" in url else url
        if "://" in url and not re.search(r"/(FeatureServer|MapServer)/\d+$", layer_path):
            raise ValueError(
                "url must be a layer of a FeatureServer or MapServer, ending in "
                f"'/FeatureServer/<n>' or '/MapServer/<n>', got path {layer_path!r}"
            )
        return url


#: A PostgreSQL identifier the source accepts (quoted when used; 63 characters at most).
_IDENTIFIER = r"^[^\W\d][\w$-]{0,62}$"


class PostGisSpec(BaseModel):
    """A PostGIS table or SQL query, read through an SQLAlchemy URL.

    ``table`` (``name`` or ``schema.name``) or ``query`` (one SELECT / WITH statement, run
    in a read-only transaction); ``geometry_column``; ``id_column`` (default: as
    ``vector``, then geometry ids). Identifiers are checked against the database and
    quoted; the bbox is a bound parameter; no other user text becomes SQL.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["postgis"] = "postgis"
    url: str = Field(min_length=1)
    table: str | None = None
    query: str | None = None
    geometry_column: str = Field(default="geom", pattern=_IDENTIFIER)
    id_column: str | None = Field(default=None, pattern=_IDENTIFIER)

    @property
    def path(self) -> str:
        """The database URL, password and query string masked, ``#table`` or ``#query``."""
        return _service_name(self.url, self.table or "query")

    @field_validator("table")
    @classmethod
    def _check_table(cls, table: str | None) -> str | None:
        if table is not None:
            parts = table.split(".")
            if len(parts) > 2 or not all(re.match(_IDENTIFIER, p) for p in parts):
                raise ValueError(
                    "table must be 'name' or 'schema.name' of letters, digits, '_', '$' or "
                    f"'-' (at most 63 each, not starting with a digit), got {table!r}"
                )
        return table

    @field_validator("query")
    @classmethod
    def _check_query(cls, query: str | None) -> str | None:
        if query is None:
            return None
        text = query.strip().rstrip(";").strip()
        if ";" in text:
            raise ValueError("query must be one statement (no ';' inside)")
        first = text.split(None, 1)[0].lower() if text else ""
        if first not in ("select", "with"):
            raise ValueError(f"query must be a SELECT or WITH statement, got {query[:40]!r}")
        return text

    @model_validator(mode="after")
    def _one_of_table_or_query(self) -> PostGisSpec:
        if (self.table is None) == (self.query is None):
            raise ValueError("set exactly one of 'table' or 'query'")
        return self


def _opendata_kind(value: object) -> str:
    """The ``kind`` of an open-data spec; ``vector`` when absent (as before the union)."""
    if isinstance(value, dict):
        return str(value.get("kind", "vector"))
    return str(getattr(value, "kind", "vector"))


OpenDataSpec = Annotated[
    Annotated[VectorSpec, Tag("vector")]
    | Annotated[OverpassSpec, Tag("overpass")]
    | Annotated[OsmPbfSpec, Tag("osm_pbf")]
    | Annotated[WfsSpec, Tag("wfs")]
    | Annotated[ArcGisSpec, Tag("arcgis")]
    | Annotated[PostGisSpec, Tag("postgis")],
    Discriminator(_opendata_kind),
]
