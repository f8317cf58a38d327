"""Export a run's results where GIS users and mappers work.

* Vector layers (AOI outline with the run's scores, tile scores, findings with
  evidence and verdict, changes, hotspots): one GeoPackage 1.2 with every layer
  (GDAL 3.6, what QGIS on Debian 12 uses, reads 1.4 only with a warning), or one
  GeoJSON or GeoParquet file per layer.
* Rasters (:mod:`pipeline.results.rasters`): Cloud-Optimized GeoTIFFs of the
  prediction probabilities and of the pixel error map.
* Hand-off to mapping tools (:mod:`pipeline.results.handoff`): a MapRoulette
  challenge and an ``.osm`` file of suggested footprints.
* Composite PNG tiles (RoboSat.pink colours: pink = prediction only, green = open
  data only, grey = both) for reviewing flagged tiles in any image viewer.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import geopandas as gpd
import pandas as pd
from PIL import Image

from pipeline.context import Context
from pipeline.progress import progress_bar
from pipeline.results import handoff, rasters
from pipeline.results.layers import RunLayers, run_layers
from pipeline.results.tile_view import composite, cut_tile, shard_layers
from pipeline.run.inputs import load_run_inputs
from pipeline.tiles import Shard, Tile, shard_of

__all__ = [
    "ExportResult",
    "VECTOR_FORMATS",
    "composite",
    "csv_bytes",
    "export_run",
    "geojson_bytes",
    "write_vectors",
]

VectorFormat = Literal["gpkg", "geojson", "parquet"]
VECTOR_FORMATS: tuple[str, ...] = ("gpkg", "geojson", "parquet")
GPKG_VERSION = "1.2"


@dataclass(frozen=True)
class ExportResult:
    """Files written by an export: per layer, per raster, per hand-off, and composites."""

    layers: dict[str, Path]
    rasters: dict[str, Path] = field(default_factory=dict)
    handoff: dict[str, Path] = field(default_factory=dict)
    composites: list[Path] = field(default_factory=list)

    @property
    def findings(self) -> Path:
        """The file holding the findings layer."""
        return self.layers["findings"]

    def files(self) -> dict[str, object]:
        """Every output as JSON-ready text paths."""
        return {
            "layers": {k: str(v) for k, v in self.layers.items()},
            "rasters": {k: str(v) for k, v in self.rasters.items()},
            "handoff": {k: str(v) for k, v in self.handoff.items()},
            "composites": [str(p) for p in self.composites],
        }


def export_run(
    ctx: Context,
    run_id: int,
    out_dir: Path,
    *,
    fmt: VectorFormat = "gpkg",
    with_rasters: bool = True,
    with_handoff: bool = True,
    composites: bool = True,
    flagged_only: bool = True,
    limit: int | None = None,
) -> ExportResult:
    """Write the run's layers as ``fmt``, and optionally its rasters, the hand-off files
    for mappers and composite PNGs, to ``out_dir``."""
    if fmt not in VECTOR_FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {VECTOR_FORMATS}")
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = run_layers(ctx, run_id)
    stem = file_stem(layers)
    written = write_vectors(layers, out_dir, stem, fmt)
    raster_files = rasters.write_run_rasters(ctx, run_id, out_dir, stem) if with_rasters else {}
    handoff_files = handoff.write_handoff(layers, out_dir, stem) if with_handoff else {}
    pngs: list[Path] = []
    if composites:
        tiles = layers.tile_scores
        chosen = tiles[tiles["flagged"]] if flagged_only else tiles
        chosen = chosen.sort_values("qod")
        if limit is not None:
            chosen = chosen.head(limit)
        pngs = write_composites(
            ctx,
            run_id,
            [Tile(int(r.x), int(r.y), int(r.z)) for r in chosen.itertuples()],
            out_dir / "composites",
        )
    return ExportResult(written, raster_files, handoff_files, pngs)


def file_stem(layers: RunLayers) -> str:
    """``<aoi>_<step>`` with characters that file systems dislike replaced."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{layers.aoi}_{layers.step}")


def write_vectors(
    layers: RunLayers, out_dir: Path, stem: str, fmt: VectorFormat
) -> dict[str, Path]:
    """Write every layer: one GeoPackage holding all, or one file per layer."""
    written: dict[str, Path] = {}
    if fmt == "gpkg":
        path = out_dir / f"{stem}.gpkg"
        path.unlink(missing_ok=True)
        for name, frame in layers.items():
            _flat(frame).to_file(
                path,
                driver="GPKG",
                layer=name,
                engine="pyogrio",
                dataset_options={"VERSION": GPKG_VERSION},
                layer_options={"IDENTIFIER": name, "DESCRIPTION": _DESCRIPTIONS[name]},
                geometry_type=_GEOMETRY_TYPES[name],
                append=path.exists(),
            )
            written[name] = path
        return written
    for name, frame in layers.items():
        if fmt == "geojson":
            path = out_dir / f"{stem}_{name}.geojson"
            path.unlink(missing_ok=True)
            _flat(frame).to_file(
                path, driver="GeoJSON", engine="pyogrio", geometry_type=_GEOMETRY_TYPES[name]
            )
        else:
            path = out_dir / f"{stem}_{name}.parquet"
            _flat(frame).to_parquet(path, index=False, geometry_encoding="WKB")
        written[name] = path
    return written


_GEOMETRY_TYPES = {
    "aoi": "MultiPolygon",
    "tile_scores": "Polygon",
    "findings": "MultiPolygon",
    "changes": "MultiPolygon",
    "hotspots": "MultiPolygon",
}
_DESCRIPTIONS = {
    "aoi": "AOI outline with the run's scores",
    "tile_scores": "Pixel scores per work tile (IoU, QoD, flagged)",
    "findings": "Object-level disagreements with evidence and review verdict",
    "changes": "Changes from the previous time step",
    "hotspots": "Cells where findings cluster significantly (Gi*, FDR-corrected)",
}


def _flat(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Copy with JSON columns as text and timestamps as ISO text (what every format holds)."""
    frame = frame.copy()
    for column in frame.columns:
        if column == frame.geometry.name:
            continue
        values = frame[column]
        if values.map(lambda v: isinstance(v, dict | list)).any():
            frame[column] = values.map(lambda v: None if v is None else json.dumps(v))
        elif values.map(lambda v: isinstance(v, dt.datetime | pd.Timestamp)).any():
            frame[column] = values.map(lambda v: None if pd.isna(v) else v.isoformat())
    return frame


def geojson_bytes(frame: gpd.GeoDataFrame) -> bytes:
    """A GeoDataFrame (EPSG:4326) as a GeoJSON FeatureCollection, for downloads."""
    return _flat(frame).to_json(drop_id=True).encode("utf-8")


def csv_bytes(frame: gpd.GeoDataFrame) -> bytes:
    """A GeoDataFrame as CSV with the geometry as WKT (column ``geometry``), for downloads."""
    flat = _flat(frame)
    table = pd.DataFrame(flat.drop(columns=flat.geometry.name))
    table["geometry"] = flat.geometry.to_wkt()
    return table.to_csv(index=False).encode("utf-8")


def write_composites(ctx: Context, run_id: int, tiles: list[Tile], out_dir: Path) -> list[Path]:
    """One ``z/x/y.png`` composite per tile, read from the run's shard mosaics."""
    inputs = load_run_inputs(ctx, run_id)
    by_shard: dict[Shard, list[Tile]] = {}
    for tile in tiles:
        by_shard.setdefault(shard_of(tile, inputs.aoi.shard_zoom), []).append(tile)
    written: list[Path] = []
    for shard, shard_tiles in progress_bar(
        by_shard.items(), desc="composites", unit="shard", enabled=ctx.progress
    ):
        layers = shard_layers(ctx, inputs, shard)
        if layers is None:
            continue
        for tile in shard_tiles:
            path = out_dir / str(tile.z) / str(tile.x) / f"{tile.y}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(cut_tile(layers, shard, tile).composite).save(path)
            written.append(path)
    return written
