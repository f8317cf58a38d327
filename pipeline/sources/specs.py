"""Source specifications as they appear in an AOI YAML file (pydantic v2).

Imagery specs are discriminated by ``kind``::

    imagery: {kind: geotiff, path: "s3://bucket/{step}/ortho.tif", bands: [1, 2, 3]}
    imagery: {kind: xyz, path: tiles/{step}, zoom: 20}
    open_data: {kind: vector, path: buildings.gpkg, layer: buildings, id_field: osm_id}

``path`` may contain ``{step}``, replaced by the audit's time step when the
source is opened; relative paths are resolved against the AOI file's folder.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
    """A local directory of XYZ tiles ``{z}/{x}/{y}.{png,jpg,jpeg,webp}``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["xyz"] = "xyz"
    path: str = Field(min_length=1)
    zoom: int | None = Field(default=None, ge=0, le=24)


ImagerySpec = Annotated[GeoTiffSpec | XyzSpec, Field(discriminator="kind")]


class VectorSpec(BaseModel):
    """A vector file or URL: GeoJSON, GeoPackage, Shapefile, GeoParquet (or any OGR format)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["vector"] = "vector"
    path: str = Field(min_length=1)
    layer: str | None = None
    id_field: str | None = None
    where: str | None = None


# One open-data kind for now; becomes a discriminated union like ImagerySpec when more plug in.
OpenDataSpec = VectorSpec
