"""Area-of-interest configuration: one YAML file per AOI, validated with pydantic.

Example::

    name: sample-town
    bbox: [8.54, 47.36, 8.56, 47.38]       # or polygon: <GeoJSON (Multi)Polygon>
    work_zoom: 18
    shard_zoom: 16
    imagery: {kind: geotiff, path: imagery/{step}.tif}
    opendata: {kind: vector, path: opendata/{step}.geojson}
    steps: ["2025-06-01", "2026-06-01"]
    schedule: "@weekly"
    dates: {imagery: latest, opendata: latest}   # each source's date rule

A run audits an AOI at an audit date. Each source resolves its own date by its rule:
``latest`` (default), the newest snapshot it has on or before the audit date (the
newest ``{step}`` file, the STAC items of the window, a live service's content now);
``audit``, exactly the audit date; or a fixed ISO date.

Relative source paths are resolved against the folder of the YAML file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from shapely.geometry import Polygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry

from pipeline.aoi.steps import check_date_rule, check_step
from pipeline.errors import ConfigError
from pipeline.sources.specs import ImagerySpec, OpenDataSpec
from pipeline.tiles import (
    MAX_LATITUDE,
    TILE_SIZE,
    Shard,
    Tile,
    check_bbox,
    check_zooms,
    cover,
    group_into_shards,
    lnglat_bounds,
    resolution,
)

#: beyond this latitude (degrees) an AOI is warned about its tile count
HIGH_LATITUDE = 60.0

#: default side of a hotspot cell (metres): Gi*'s 3 x 3 neighbourhood is then ~90 m
HOTSPOT_CELL_M = 30.0

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Thresholds(BaseModel):
    """Decision thresholds of the scoring stages."""

    model_config = ConfigDict(extra="forbid")

    qod_flag: float = Field(80.0, ge=0, le=100, description="Tiles below this QoD are flagged.")
    iou_match: float = Field(0.4, gt=0, le=1, description="IoU for a predicted/open-data match.")
    min_model_iou: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Below this out-of-sample IoU the model is not trusted: the run says so "
        "and its findings are marked low-confidence.",
    )
    min_model_tiles: int = Field(
        8, ge=0, description="A model validated on fewer tiles is not trusted either."
    )
    min_building_m2: float | None = Field(
        None,
        ge=0,
        description="Smaller buildings are not judged; default: what the imagery resolves.",
    )
    min_offset_m: float = Field(1.5, ge=0, description="Smallest shift reported as misaligned.")
    hotspot_cell_zoom: int | None = Field(
        None,
        ge=0,
        le=24,
        description="Zoom of the hotspot cells; default: the zoom whose tiles are closest "
        "to 30 m across at the AOI's latitude.",
    )
    hotspot_alpha: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="False discovery rate of the hotspot test: a cell is a hotspot when "
        "its Benjamini-Hochberg adjusted p-value is at most this.",
    )
    hotspot_permutations: int | None = Field(
        None,
        ge=99,
        le=10_000_000,
        description="Random draws behind each cell's p-value; default: enough for the "
        "strongest cell to pass the FDR test (20 x cells / alpha, at least 9,999).",
    )
    hotspot_top_k: int | None = Field(
        None, ge=1, description="Keep at most this many hotspots; default: every one."
    )
    change_min_m2: float = Field(20.0, ge=0)


class TrainSettings(BaseModel):
    """Training knobs of the AOI's model (defaults train in minutes on CPU). A step budget
    makes training repeatable; the time cap only guards a slow machine."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(1000, ge=1, description="Optimiser steps of each fold model.")
    max_seconds: float | None = Field(None, gt=0, description="Cap on the whole training.")
    chip_size: int | None = Field(None, ge=64)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    geometric_augment: bool = Field(
        True,
        description="Random right-angle rotations and flips of the training chips. On by "
        "default: on the real OpenAerialMap areas with planted errors it found more of "
        "them, with better precision (README, 'How well it finds errors'). The synthetic "
        "sample town turns it off: its documented figures are measured without.",
    )
    heldout_share: float = Field(0.15, gt=0, lt=1, description="Without folds only.")
    folds: int = Field(
        3,
        ge=1,
        le=10,
        description="Spatially blocked folds; every tile is judged by the fold model that "
        "did not train on it. 1: one model with a held-out share (it audits labels it "
        "learned).",
    )
    seed: int = 0


#: The network an AOI trains unless it names one (:attr:`ModelSettings.encoder`).
DEFAULT_AOI_ENCODER = "tu-tf_efficientnet_lite0"


class ModelSettings(BaseModel):
    """Which model serves the AOI and how it is trained."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        None,
        pattern=NAME_PATTERN.pattern,
        description="Model lineage; default: the AOI's name (each AOI its own champion).",
    )
    base: str | None = Field(
        None,
        pattern=NAME_PATTERN.pattern,
        description="Start each training from this model's production version "
        "(a base model shared by AOIs); default: random initialisation.",
    )
    arch: str | None = None
    encoder: str = Field(
        DEFAULT_AOI_ENCODER,
        description="Encoder of the network (an smp name or 'tu-<timm name>'). Default: "
        "EfficientNet-Lite0 from the ImageNet weights its package ships: on the real "
        "OpenAerialMap areas with planted errors it found more of them than MobileNetV3-"
        "small from random init (README, 'Model choice'), at 0.4x its prediction speed. "
        "tu-mobilenetv3_small_100 is the fast choice (the synthetic sample town's).",
    )
    train: TrainSettings = Field(default_factory=TrainSettings)


class ValidationSettings(BaseModel):
    """Thresholds of the validation suites (``pipeline/validate/suites``) for this AOI."""

    model_config = ConfigDict(extra="forbid")

    opendata_crs: str | None = Field(
        None, description="CRS the open data must declare (e.g. EPSG:4326); None: any."
    )
    required_attributes: list[str] = Field(
        default_factory=list, description="Attributes every footprint must have."
    )
    min_area_m2: float = Field(2.0, ge=0, description="Smallest plausible footprint.")
    max_area_m2: float = Field(100_000.0, gt=0, description="Largest plausible footprint.")
    area_mostly: float = Field(0.99, gt=0, le=1, description="Share that must be plausible.")
    max_vertices: int = Field(100_000, ge=4, description="Most vertices of one footprint.")
    max_repaired_share: float = Field(0.05, ge=0, le=1, description="Invalid share tolerated.")
    count_change_band: float = Field(
        0.25, ge=0, description="Feature count vs the previous step may move by this share."
    )
    imagery_band_counts: list[int] | None = Field(
        None, description="Allowed band counts of the imagery source; None: any."
    )
    imagery_dtypes: list[str] | None = Field(
        None, description="Allowed data types of the imagery bands; None: any."
    )
    max_nodata_share: float = Field(0.5, ge=0, le=1, description="Per shard, within the AOI.")
    min_coverage: float = Field(0.9, ge=0, le=1, description="Share of the AOI with imagery.")
    brightness_band: float = Field(
        0.3, ge=0, description="Brightness may move by this share of the AOI's history."
    )
    max_colour_shift: float = Field(
        0.08, ge=0, le=1, description="Largest change of a band's share of the colour."
    )

    @model_validator(mode="after")
    def _check_areas(self) -> ValidationSettings:
        if self.min_area_m2 >= self.max_area_m2:
            raise ValueError(
                f"min_area_m2 ({self.min_area_m2}) must be below max_area_m2 ({self.max_area_m2})"
            )
        return self


class SourceDates(BaseModel):
    """Each source's date rule (:func:`pipeline.aoi.steps.check_date_rule`)."""

    model_config = ConfigDict(extra="forbid")

    imagery: str = Field("latest", description="latest | audit | YYYY-MM-DD")
    opendata: str = Field("latest", description="latest | audit | YYYY-MM-DD")

    @field_validator("imagery", "opendata")
    @classmethod
    def _check_rule(cls, value: str) -> str:
        return check_date_rule(value)


class AoiConfig(BaseModel):
    """One AOI: where, at which zooms, from which sources, how often."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    bbox: tuple[float, float, float, float] | None = None
    polygon: dict[str, Any] | None = None  # GeoJSON Polygon or MultiPolygon, holes allowed
    work_zoom: int = Field(18, ge=10, le=22)
    shard_zoom: int = Field(16, ge=4, le=22)
    imagery: ImagerySpec
    opendata: OpenDataSpec
    steps: list[str] = Field(default_factory=list)
    schedule: str | None = "@weekly"
    dates: SourceDates = Field(default_factory=SourceDates)
    owner: str = "geoaudit"
    tags: list[str] = Field(default_factory=list)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    model: ModelSettings = Field(default_factory=ModelSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    base_dir: Path | None = Field(None, exclude=True, description="Folder of the YAML file.")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(
                "must be 1-63 characters of lowercase letters, digits, '-' or '_', "
                f"starting with a letter or digit (no paths), got {value!r}"
            )
        return value

    @field_validator("steps")
    @classmethod
    def _check_steps(cls, value: list[str]) -> list[str]:
        for step in value:
            check_step(step)
        return value

    @model_validator(mode="after")
    def _check_area(self) -> AoiConfig:
        if (self.bbox is None) == (self.polygon is None):
            raise ValueError("give exactly one of 'bbox' or 'polygon'")
        if self.bbox is not None:
            check_bbox(self.bbox)
        else:
            geom = self.geometry
            if geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
                raise ValueError("polygon must be a GeoJSON Polygon or MultiPolygon")
            if not np.isfinite(shapely.get_coordinates(geom)).all():
                raise ValueError("polygon has coordinates that are not finite (NaN or infinity)")
            if crosses_antimeridian(geom):
                raise ValueError(
                    "polygon crosses the antimeridian (an edge spans more than 180° of "
                    "longitude, so it would be read as a band around the globe); give it as a "
                    "MultiPolygon with one part on each side of ±180°"
                )
            if not geom.is_valid:
                reason = shapely.is_valid_reason(geom)
                raise ValueError(f"polygon is not a valid (Multi)Polygon: {reason}")
            w, s, e, n = geom.bounds
            if not (w >= -180 and e <= 180 and s >= -MAX_LATITUDE and n <= MAX_LATITUDE):
                raise ValueError(f"polygon must be in WGS84 degrees, bounds are {geom.bounds}")
        check_zooms(self.work_zoom, self.shard_zoom)
        if self.work_zoom - self.shard_zoom > 5:
            raise ValueError(
                f"shard_zoom {self.shard_zoom} is more than 5 zooms above work_zoom "
                f"{self.work_zoom}: shards would exceed 32x32 tiles (8192 px)"
            )
        return self

    @property
    def geometry(self) -> BaseGeometry:
        """AOI outline in EPSG:4326."""
        if self.bbox is not None:
            return box(*self.bbox)
        try:
            return shape(self.polygon)
        except Exception as exc:  # shapely raises several types for bad GeoJSON
            raise ValueError(f"polygon is not a GeoJSON geometry: {exc}") from exc

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """WGS84 ``(west, south, east, north)``."""
        return tuple(self.geometry.bounds)  # type: ignore[return-value]

    def scale_warning(self) -> str | None:
        """A warning for an AOI far from the equator, where web-mercator tiles shrink on
        the ground (``1 / cos(latitude)``): above 60° it names the tile count, which grows
        with the square of that factor, and the work zoom that keeps the equator's."""
        w, s, e, n = self.bounds
        lat = max(abs(s), abs(n))
        if lat <= HIGH_LATITUDE:
            return None
        factor = 1 / math.cos(math.radians(lat))
        lower = max(self.work_zoom - round(math.log2(factor)), 0)
        return (
            f"AOI {self.name!r} reaches latitude {lat:.1f}°, where web-mercator tiles are "
            f"{factor:.1f}x smaller on the ground: {self.area_km2():.2f} km² makes "
            f"{len(self.tiles()):,} tiles at work_zoom {self.work_zoom}; work_zoom {lower} "
            "gives about the ground resolution it has at the equator"
        )

    def area_km2(self) -> float:
        """Approximate area in km² (spherical, good to a few percent at AOI scale)."""
        geom = self.geometry
        lat = math.radians(geom.centroid.y)
        km_per_deg = 111.32
        return geom.area * km_per_deg * km_per_deg * math.cos(lat)

    def tiles(self) -> list[Tile]:
        """Work-zoom tiles overlapping the AOI outline (more than along an edge), sorted;
        each part of a MultiPolygon is covered on its own, and tiles inside a hole are not
        the AOI's."""
        if self.bbox is not None:
            return cover(self.bounds, self.work_zoom)
        geom = self.geometry
        candidates = sorted(
            {t for part in shapely.get_parts(geom) for t in cover(part.bounds, self.work_zoom)},
            key=lambda t: (t.y, t.x),
        )
        boxes = shapely.box(*np.array([lnglat_bounds(t) for t in candidates]).T)
        shapely.prepare(geom)
        keep = shapely.intersects(geom, boxes) & ~shapely.touches(geom, boxes)
        return [t for t, k in zip(candidates, keep, strict=True) if k]

    def scored_area(self) -> BaseGeometry:
        """The ground an audit judges (EPSG:4326): the union of the AOI's tiles. It
        reaches past the outline to whole tiles, so the open data is compared over it
        too; a building on a scored tile but just outside the outline is then matched
        against its own footprint instead of turning into a ``missing_in_opendata``
        finding (and a training label of "no building")."""
        boxes = shapely.box(*np.array([lnglat_bounds(t) for t in self.tiles()]).T)
        return shapely.coverage_union_all(boxes)

    def shards(self) -> dict[Shard, list[Tile]]:
        """The AOI's tiles grouped into shards."""
        return group_into_shards(self.tiles(), self.shard_zoom)

    @property
    def model_name(self) -> str:
        """The model lineage that serves this AOI (``model.name``, else the AOI's name)."""
        return self.model.name or self.name

    def min_building_m2(self) -> float:
        """Smallest building judged: ``thresholds.min_building_m2``, else what the work
        zoom resolves, ``max(6 m², 64 px)`` with the pixel size at the AOI's latitude."""
        if self.thresholds.min_building_m2 is not None:
            return self.thresholds.min_building_m2
        px = resolution(self.work_zoom, self.geometry.centroid.y)
        return max(6.0, 64.0 * px * px)

    def hotspot_cell_zoom(self) -> int:
        """Zoom of the hotspot cells: the configured one, else the zoom whose tiles are
        closest to ``HOTSPOT_CELL_M`` across at the AOI's latitude (z20 up to ~56 degrees).

        Gi*'s 3 x 3 neighbourhood then spans about 90 m, a block: cells of one work
        tile (~100-150 m) put a block-sized cluster in one or two cells, where the
        neighbourhood sum dilutes it (the demo's injected hotspots: 1 of 3 found).
        """
        zoom = self.thresholds.hotspot_cell_zoom
        if zoom is not None:
            return zoom
        side_z0 = resolution(0, self.geometry.centroid.y) * TILE_SIZE
        return max(0, min(24, round(math.log2(side_z0 / HOTSPOT_CELL_M))))

    def to_yaml(self) -> str:
        """YAML text of this configuration (sources as given)."""
        data = self.model_dump(mode="json", exclude_none=True, exclude={"base_dir"})
        if self.schedule is None:  # "no schedule" must survive (the default is @weekly)
            data["schedule"] = None
        return yaml.safe_dump(data, sort_keys=False)

    def with_absolute_paths(self) -> AoiConfig:
        """A copy whose relative local source paths are resolved against ``base_dir``."""
        updates = {}
        for field in ("imagery", "opendata"):
            spec = getattr(self, field)
            if (
                self.base_dir is not None
                and "://" not in spec.path
                and not Path(spec.path).is_absolute()
            ):
                updates[field] = spec.model_copy(
                    update={"path": str((self.base_dir / spec.path).resolve())}
                )
        return self.model_copy(update=updates)


def crosses_antimeridian(geom: BaseGeometry) -> bool:
    """Whether any ring of ``geom`` has an edge spanning more than 180° of longitude: a
    shape drawn across ±180° whose coordinates wrap (read as a band around the globe)."""
    for polygon in shapely.get_parts(geom):
        for ring in (polygon.exterior, *polygon.interiors):
            lons = np.asarray(ring.coords)[:, 0]
            if lons.size > 1 and np.abs(np.diff(lons)).max() > 180:
                return True
    return False


def parse_aoi(
    data: Any, *, source: str = "<AOI>", base_dir: Path | None = None, max_km2: float | None = None
) -> AoiConfig:
    """Validate a mapping as an AOI; :class:`ConfigError` names ``source`` and the field."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: an AOI file must be a YAML mapping, got {type(data).__name__}"
        )
    keys = [k for k in data if not isinstance(k, str) or k == "base_dir"]
    if keys:
        raise ConfigError(
            f"{source}: invalid AOI configuration: {keys[0]!r} is not an AOI field (fields "
            "are text: name, bbox or polygon, imagery, opendata, …)"
        )
    try:
        config = AoiConfig(**data, base_dir=base_dir)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{source}: invalid AOI configuration: {problems}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    except (ValueError, TypeError, OverflowError) as exc:  # from a validator's arithmetic
        raise ConfigError(f"{source}: invalid AOI configuration: {exc}") from exc
    if max_km2 is not None:
        check_area(config, max_km2, source=source)
    return config


def check_area(config: AoiConfig, max_km2: float, *, source: str | None = None) -> None:
    """The AOI size limit: :class:`ConfigError` when the AOI covers more than ``max_km2``
    (``GEOAUDIT_MAX_AOI_KM2``)."""
    if config.area_km2() > max_km2:
        prefix = f"{source}: " if source else ""
        raise ConfigError(
            f"{prefix}AOI {config.name!r} covers {config.area_km2():.1f} km², more than the "
            f"configured maximum of {max_km2:g} km² (GEOAUDIT_MAX_AOI_KM2)"
        )


def load_aoi(path: Path, *, max_km2: float | None = None) -> AoiConfig:
    """Read and validate an AOI YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: AOI file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: AOI file cannot be read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_aoi(data, source=str(path), base_dir=path.resolve().parent, max_km2=max_km2)


def shards_in_bbox(config: AoiConfig, bbox: Sequence[float]) -> list[str]:
    """Ids of the AOI's shards with a tile intersecting ``bbox`` (WGS84 west, south,
    east, north); ConfigError when ``bbox`` is malformed or misses the AOI."""
    area = box(*check_bbox(bbox))
    ids = [
        shard.id
        for shard, tiles in config.shards().items()
        if any(area.intersects(box(*lnglat_bounds(t))) for t in tiles)
    ]
    if not ids:
        raise ConfigError(f"bbox {list(bbox)} does not intersect AOI {config.name!r}")
    return ids


def scan_aoi_folder(
    folder: Path, *, max_km2: float | None = None
) -> tuple[list[AoiConfig], dict[str, str]]:
    """Every AOI file of ``folder`` (``*.yaml``, by name): the valid configurations, and
    for each invalid file its AOI name (the file stem) with the error that names it.

    Reads files only (no database), so a scheduler can call it while parsing DAGs.
    """
    configs: list[AoiConfig] = []
    errors: dict[str, str] = {}
    paths = sorted(Path(folder).glob("*.yaml")) if Path(folder).is_dir() else []
    for path in paths:
        try:
            configs.append(load_aoi(path, max_km2=max_km2))
        except ConfigError as exc:
            errors[path.stem] = str(exc)
    return configs, errors


def aoi_geometry_geojson(config: AoiConfig) -> dict[str, Any]:
    """GeoJSON mapping of the AOI outline."""
    return dict(mapping(config.geometry))


__all__ = [
    "check_area",
    "scan_aoi_folder",
    "shards_in_bbox",
    "AoiConfig",
    "Thresholds",
    "ModelSettings",
    "TrainSettings",
    "ValidationSettings",
    "load_aoi",
    "parse_aoi",
    "Polygon",
]
