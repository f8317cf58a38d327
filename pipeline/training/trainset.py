"""The training set of an AOI: its own open data as labels over its imagery.

Held-out tiles are chosen by a hash of ``z/x/y`` so every retraining of an AOI holds
out the same tiles: champion and challenger are judged on equal ground. Tiles reviewed
as ``label_wrong`` are excluded from training and validation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session
from tqdm import tqdm

from pipeline.aoi.config import AoiConfig
from pipeline.context import Context
from pipeline.db import repo
from pipeline.errors import GeoAuditError
from pipeline.run.fetch import fetch_imagery, fetch_opendata
from pipeline.run.inputs import imagery_snapshot, opendata_snapshot, read_shard_image
from pipeline.run.labels import shard_labels
from pipeline.tiles import TILE_SIZE, Tile, block_of


def is_heldout(tile: Tile, share: float) -> bool:
    """Deterministic hold-out: ``int(sha1("z/x/y")[:8], 16) / 2**32 < share``."""
    digest = hashlib.sha1(f"{tile.z}/{tile.x}/{tile.y}".encode()).hexdigest()
    return int(digest[:8], 16) / 2**32 < share


@dataclass
class TrainingSet:
    """Shard-sized training samples and tile-sized held-out samples."""

    train: list
    val: list
    heldout_tiles: list[str]
    excluded_tiles: list[str]
    steps: list[str]


def build_training_set(ctx: Context, config: AoiConfig, steps: list[str]) -> TrainingSet:
    """Training samples per shard (held-out and excluded tiles masked out) and held-out tiles."""
    from pipeline.model.dataset import TrainingSample

    share = config.model.train.heldout_share
    with Session(ctx.engine) as s:
        aoi_id = repo.get_aoi(s, config.name).id
        excluded = repo.label_wrong_tiles(s, aoi_id)
    train, val, heldout, excluded_names = [], [], set(), set()
    for step in steps:
        fetched_imagery = fetch_imagery(ctx, config, step)
        fetched_opendata = fetch_opendata(ctx, config, step)
        with Session(ctx.engine) as s:
            imagery = imagery_snapshot(s, fetched_imagery.snapshot_id)
            opendata = opendata_snapshot(s, fetched_opendata.snapshot_id)
        for shard, tiles in tqdm(
            config.shards().items(),
            desc=f"training set {step}",
            unit="shard",
            disable=not ctx.progress,
        ):
            ref = imagery.shards.get(shard.id)
            if ref is None:
                continue
            image, valid = read_shard_image(ctx, ref)
            valid = valid.copy()
            labels = shard_labels(ctx, config.name, opendata, shard)
            train_valid = np.zeros_like(valid)
            for tile in tiles:
                row, col = block_of(tile, shard)
                sl = np.s_[
                    row * TILE_SIZE : (row + 1) * TILE_SIZE, col * TILE_SIZE : (col + 1) * TILE_SIZE
                ]
                if tile in excluded:
                    excluded_names.add(str(tile))
                    continue
                if is_heldout(tile, share):
                    if valid[sl].mean() > 0.5:
                        heldout.add(str(tile))
                        val.append(
                            TrainingSample(
                                image=image[(slice(None), *sl)].copy(),
                                label=labels[sl].copy(),
                                valid=valid[sl].copy(),
                                name=f"{step}/{tile}",
                            )
                        )
                    continue
                train_valid[sl] = valid[sl]
            if train_valid.any():
                train.append(
                    TrainingSample(
                        image=image, label=labels, valid=train_valid, name=f"{step}/{shard.id}"
                    )
                )
    if not train or not val:
        raise GeoAuditError(
            f"AOI {config.name!r} has too little imagery to train on for steps {steps}: "
            f"{len(train)} training shards, {len(val)} held-out tiles"
        )
    return TrainingSet(train, val, sorted(heldout), sorted(excluded_names), list(steps))
