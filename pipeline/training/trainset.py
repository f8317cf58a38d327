"""The training set of an AOI: its own open data as labels over its imagery.

Every shard with imagery of every training step is read once (a
:class:`TrainingArea`); a split then masks the held-out tiles out of the training
samples and cuts them out as validation samples:

* with folds (:func:`fold_splits`), each fold holds out its blocks of tiles
  (:mod:`pipeline.model.folds`);
* without (:func:`heldout_split`), a fixed, hash-chosen share of the tiles is held
  out: ``int(sha1("z/x/y")[:8], 16) / 2**32 < share``, so every retraining holds out
  the same tiles.

Tiles reviewed as ``label_wrong`` are left out of training and validation alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.orm import Session

from pipeline.aoi.config import AoiConfig
from pipeline.context import Context
from pipeline.db import repo
from pipeline.errors import GeoAuditError
from pipeline.model.dataset import TrainingSample
from pipeline.model.folds import FoldPlan
from pipeline.progress import progress_bar
from pipeline.run.fetch import fetch_imagery, fetch_opendata
from pipeline.run.inputs import read_shard_image
from pipeline.run.labels import shard_labels
from pipeline.run.snapshots import imagery_snapshot, opendata_snapshot
from pipeline.tiles import TILE_SIZE, Shard, Tile, block_of

#: a tile is validated only when more than this share of it has imagery
MIN_VALID_SHARE = 0.5


def is_heldout(tile: Tile, share: float) -> bool:
    """Deterministic hold-out: ``int(sha1("z/x/y")[:8], 16) / 2**32 < share``."""
    return _tile_hash(tile) < share


def _tile_hash(tile: Tile) -> float:
    digest = hashlib.sha1(f"{tile.z}/{tile.x}/{tile.y}".encode()).hexdigest()
    return int(digest[:8], 16) / 2**32


@dataclass(frozen=True, eq=False)
class TrainingArea:
    """One shard of one training step: imagery, labels, valid mask and its AOI tiles."""

    step: str
    shard: Shard
    image: np.ndarray
    labels: np.ndarray
    valid: np.ndarray
    tiles: tuple[Tile, ...]

    def window(self, tile: Tile) -> tuple[slice, slice]:
        """The pixels of work tile ``tile`` in the shard mosaic."""
        row, col = block_of(tile, self.shard)
        return (
            slice(row * TILE_SIZE, (row + 1) * TILE_SIZE),
            slice(col * TILE_SIZE, (col + 1) * TILE_SIZE),
        )

    def validatable(self, tile: Tile) -> bool:
        """Enough imagery on ``tile`` to judge a model there."""
        return bool(self.valid[self.window(tile)].mean() > MIN_VALID_SHARE)


@dataclass
class TrainingSet:
    """Shard-sized training samples and tile-sized validation samples (``val_tiles``
    names the tile of each)."""

    train: list[TrainingSample]
    val: list[TrainingSample]
    val_tiles: list[Tile]
    excluded_tiles: list[str] = field(default_factory=list)


def load_areas(
    ctx: Context, config: AoiConfig, steps: list[str]
) -> tuple[list[TrainingArea], set[Tile]]:
    """Every shard with imagery of every step, and the tiles reviewed ``label_wrong``."""
    with Session(ctx.engine) as s:
        excluded = repo.label_wrong_tiles(s, repo.get_aoi(s, config.name).id)
    areas = []
    for step in steps:
        fetched_imagery = fetch_imagery(ctx, config, step)
        fetched_opendata = fetch_opendata(ctx, config, step)
        with Session(ctx.engine) as s:
            imagery = imagery_snapshot(s, fetched_imagery.snapshot_id)
            opendata = opendata_snapshot(s, fetched_opendata.snapshot_id)
        for shard, tiles in progress_bar(
            config.shards().items(),
            desc=f"training set {step}",
            unit="shard",
            enabled=ctx.progress,
        ):
            ref = imagery.shards.get(shard.id)
            if ref is None:
                continue
            image, valid = read_shard_image(ctx, ref)
            labels = shard_labels(ctx, config.name, opendata, shard)
            areas.append(TrainingArea(step, shard, image, labels, valid, tuple(tiles)))
    return areas, excluded


def split(
    areas: list[TrainingArea], held_out: Callable[[Tile], bool], excluded: set[Tile]
) -> TrainingSet:
    """Training samples (held-out and excluded tiles masked out, and the pixels outside
    the AOI's tiles) and one validation sample per held-out tile with imagery."""
    train, val, val_tiles = [], [], []
    skipped: set[str] = set()
    for area in areas:
        train_valid = np.zeros_like(area.valid)
        for tile in area.tiles:
            sl = area.window(tile)
            if tile in excluded:
                skipped.add(str(tile))
            elif held_out(tile):
                if area.validatable(tile):
                    val.append(
                        TrainingSample(
                            image=area.image[(slice(None), *sl)].copy(),
                            label=area.labels[sl].copy(),
                            valid=area.valid[sl].copy(),
                            name=f"{area.step}/{tile}",
                        )
                    )
                    val_tiles.append(tile)
            else:
                train_valid[sl] = area.valid[sl]
        if train_valid.any():
            train.append(
                TrainingSample(
                    image=area.image,
                    label=area.labels,
                    valid=train_valid,
                    name=f"{area.step}/{area.shard.id}",
                )
            )
    return TrainingSet(train, val, val_tiles, sorted(skipped))


def heldout_split(
    areas: list[TrainingArea], share: float, excluded: set[Tile], aoi: str
) -> TrainingSet:
    """The plain split: a hash-chosen ``share`` of the tiles held out (on a small AOI,
    where the hash picks none of the tiles with imagery, the one with the lowest hash)."""
    held = {t for t in validatable_tiles(areas, excluded) if is_heldout(t, share)}
    if not held:
        held = set(sorted(validatable_tiles(areas, excluded), key=_tile_hash)[:1])
    out = split(areas, held.__contains__, excluded)
    _check(out, aoi)
    return out


def fold_splits(
    areas: list[TrainingArea], plan: FoldPlan, excluded: set[Tile], aoi: str
) -> list[TrainingSet]:
    """One split per fold: fold ``j`` holds out its blocks."""
    out = [split(areas, lambda t, j=j: plan.fold_of(t) == j, excluded) for j in range(plan.k)]
    for j, one in enumerate(out):
        _check(one, f"{aoi} fold {j}")
    return out


def validatable_tiles(areas: list[TrainingArea], excluded: set[Tile]) -> list[Tile]:
    """The tiles a fold plan deals: with imagery, not excluded (each once)."""
    return sorted(
        {t for a in areas for t in a.tiles if t not in excluded and a.validatable(t)},
        key=lambda t: (t.y, t.x),
    )


def _check(one: TrainingSet, what: str) -> None:
    if not one.train or not one.val:
        raise GeoAuditError(
            f"{what}: too little imagery to train on: {len(one.train)} training shards, "
            f"{len(one.val)} held-out tiles"
        )
