"""Export a run's results: findings and changes as GeoJSON/GeoPackage, and
composite PNG tiles (RoboSat.pink colours: pink = prediction only, green = open
data only, grey = both) for reviewing flagged tiles in any image viewer.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import geopandas as gpd
import pandas as pd
from PIL import Image
from sqlalchemy.orm import Session
from tqdm import tqdm

from pipeline.context import Context
from pipeline.db import repo
from pipeline.results.tile_view import composite, cut_tile, shard_layers
from pipeline.run.inputs import load_run_inputs
from pipeline.tiles import Shard, Tile, shard_of

__all__ = ["ExportResult", "composite", "export_run", "geojson_bytes", "csv_bytes"]

VectorFormat = Literal["geojson", "gpkg"]


@dataclass(frozen=True)
class ExportResult:
    """Files written by an export."""

    findings: Path
    changes: Path | None
    composites: list[Path]


def export_run(
    ctx: Context,
    run_id: int,
    out_dir: Path,
    *,
    fmt: VectorFormat = "geojson",
    composites: bool = True,
    flagged_only: bool = True,
    limit: int | None = None,
) -> ExportResult:
    """Write findings, changes and (optionally) composite PNGs of a run to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix, driver = (".geojson", "GeoJSON") if fmt == "geojson" else (".gpkg", "GPKG")
    with Session(ctx.engine) as s:
        findings = repo.findings_frame(s, run_id)
        changes = repo.changes_frame(s, run_id)
        tiles = repo.tile_scores_frame(s, run_id)
    findings_path = out_dir / f"findings{suffix}"
    _write_vector(findings, findings_path, driver, layer="findings")
    changes_path = None
    if not changes.empty:
        changes_path = out_dir / f"changes{suffix}"
        _write_vector(changes, changes_path, driver, layer="changes")
    pngs: list[Path] = []
    if composites:
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
    return ExportResult(findings=findings_path, changes=changes_path, composites=pngs)


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


def _write_vector(frame: gpd.GeoDataFrame, path: Path, driver: str, *, layer: str) -> None:
    frame = _flat(frame)
    path.unlink(missing_ok=True)
    if driver == "GPKG":
        frame.to_file(path, driver=driver, layer=layer)
    else:
        frame.to_file(path, driver=driver)


def write_composites(ctx: Context, run_id: int, tiles: list[Tile], out_dir: Path) -> list[Path]:
    """One ``z/x/y.png`` composite per tile, read from the run's shard mosaics."""
    inputs = load_run_inputs(ctx, run_id)
    by_shard: dict[Shard, list[Tile]] = {}
    for tile in tiles:
        by_shard.setdefault(shard_of(tile, inputs.aoi.shard_zoom), []).append(tile)
    written: list[Path] = []
    for shard, shard_tiles in tqdm(
        by_shard.items(), desc="composites", unit="shard", disable=not ctx.progress
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
