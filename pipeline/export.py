"""Export a run's results: findings and changes as GeoJSON/GeoPackage, and
composite PNG tiles (RoboSat.pink colours: pink = prediction only, green = open
data only, grey = both) for reviewing flagged tiles in any image viewer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session
from tqdm import tqdm

from pipeline.context import Context
from pipeline.db import repo
from pipeline.mosaic import read_mosaic
from pipeline.predictions import prediction_key
from pipeline.shard_stage import labels_key, load_run_inputs
from pipeline.tiles import TILE_SIZE, Shard, Tile, block_of, parent

PINK = np.array([255, 0, 255], dtype=np.float32)
GREEN = np.array([0, 200, 0], dtype=np.float32)
GREY = np.array([160, 160, 160], dtype=np.float32)
VectorFormat = Literal["geojson", "gpkg"]


def composite(
    image: np.ndarray, label: np.ndarray, pred: np.ndarray, *, alpha: float = 0.55
) -> np.ndarray:
    """Blend the agreement layer over the imagery: ``out = (1 - a) * rgb + a * colour``.

    ``image`` is ``(3, H, W) uint8``; ``label`` and ``pred`` are boolean ``(H, W)``.
    Pink marks prediction only, green open data only, grey both; elsewhere the
    imagery is shown unchanged. Returns ``(H, W, 3) uint8``.
    """
    rgb = np.moveaxis(image[:3], 0, -1).astype(np.float32)
    out = rgb.copy()
    for colour, where in ((PINK, pred & ~label), (GREEN, label & ~pred), (GREY, label & pred)):
        out[where] = (1 - alpha) * rgb[where] + alpha * colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


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


def _write_vector(frame, path: Path, driver: str, *, layer: str) -> None:  # noqa: ANN001
    frame = frame.copy()
    for column in frame.columns:
        if column != "geometry" and frame[column].map(lambda v: isinstance(v, dict | list)).any():
            frame[column] = frame[column].map(lambda v: None if v is None else str(v))
    path.unlink(missing_ok=True)
    if driver == "GPKG":
        frame.to_file(path, driver=driver, layer=layer)
    else:
        frame.to_file(path, driver=driver)


def write_composites(ctx: Context, run_id: int, tiles: list[Tile], out_dir: Path) -> list[Path]:
    """One ``z/x/y.png`` composite per tile, read from the run's shard mosaics."""
    inputs = load_run_inputs(ctx, run_id)
    config = inputs.aoi
    by_shard: dict[Shard, list[Tile]] = {}
    for tile in tiles:
        by_shard.setdefault(Shard(parent(tile, config.shard_zoom), config.work_zoom), []).append(
            tile
        )
    written: list[Path] = []
    for shard, shard_tiles in tqdm(
        by_shard.items(), desc="composites", unit="shard", disable=not ctx.progress
    ):
        meta = inputs.imagery_meta["shards"].get(shard.id)
        if meta is None:
            continue
        with ctx.store.readable_path(meta["key"]) as p:
            image, _ = read_mosaic(p)
        with ctx.store.readable_path(labels_key(config.name, inputs.opendata_hash, shard.id)) as p:
            label = np.asarray(read_mosaic(p)[0]).reshape(shard.size, shard.size) > 0
        pkey = prediction_key(config.name, inputs.model_version_id, meta["hash"], shard.id)
        with ctx.store.readable_path(pkey) as p:
            pred = np.asarray(read_mosaic(p)[0]).reshape(shard.size, shard.size) >= 128
        for tile in shard_tiles:
            row, col = block_of(tile, shard)
            sl = np.s_[
                row * TILE_SIZE : (row + 1) * TILE_SIZE, col * TILE_SIZE : (col + 1) * TILE_SIZE
            ]
            png = composite(image[(slice(None), *sl)], label[sl], pred[sl])
            path = out_dir / str(tile.z) / str(tile.x) / f"{tile.y}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(png).save(path)
            written.append(path)
    return written
