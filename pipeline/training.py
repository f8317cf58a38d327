"""Model lifecycle: build a training set from an AOI's own open data, train a
challenger, compare it with the champion on the same held-out tiles, register
it and promote it when it is better.

Held-out tiles are chosen by a hash of ``z/x/y`` so every retraining of an AOI
holds out the same tiles: champion and challenger are judged on equal ground.
Tiles reviewed as ``label_wrong`` are excluded from training and validation.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from sqlalchemy.orm import Session
from tqdm import tqdm

from pipeline.aoi import AoiConfig
from pipeline.aois import get_aoi_config
from pipeline.context import Context
from pipeline.db import repo
from pipeline.errors import GeoAuditError
from pipeline.fetch import fetch_imagery, fetch_opendata
from pipeline.mosaic import read_mosaic
from pipeline.shard_stage import labels_for
from pipeline.tiles import TILE_SIZE, Tile, block_of

log = logging.getLogger(__name__)
PromotePolicy = Literal["auto", "always", "never"]


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


@dataclass(frozen=True)
class TrainOutcome:
    """A trained, registered model version and the promotion decision."""

    model_version_id: int
    version: int
    val_iou: float
    champion_id: int | None
    champion_val_iou: float | None
    promoted: bool
    seconds: float
    steps: int


def build_training_set(ctx: Context, config: AoiConfig, steps: list[str]) -> TrainingSet:
    """Training samples per shard (held-out and excluded tiles masked out) and held-out tiles."""
    from pipeline.model.dataset import TrainingSample

    share = config.model.train.heldout_share
    with Session(ctx.engine) as s:
        aoi_id = repo.get_aoi(s, config.name).id
        excluded = repo.label_wrong_tiles(s, aoi_id)
    train, val, heldout, excluded_names = [], [], set(), set()
    for step in steps:
        imagery = fetch_imagery(ctx, config, step)
        opendata = fetch_opendata(ctx, config, step)
        with Session(ctx.engine) as s:
            img_meta = dict(repo.get_snapshot(s, imagery.id).meta)
            od_meta = dict(repo.get_snapshot(s, opendata.id).meta)
        for shard, tiles in tqdm(
            config.shards().items(),
            desc=f"training set {step}",
            unit="shard",
            disable=not ctx.progress,
        ):
            meta = img_meta["shards"].get(shard.id)
            if meta is None:
                continue
            with ctx.store.readable_path(meta["key"]) as path:
                image, valid = read_mosaic(path)
            valid = np.ones(image.shape[1:], bool) if valid is None else valid.copy()
            labels = labels_for(ctx, config.name, opendata.content_hash, od_meta, shard)
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


def _train_config(config: AoiConfig, max_seconds: float | None, max_steps: int | None):
    from pipeline.model.train import TrainConfig

    knobs = config.model.train
    overrides = {
        "max_seconds": max_seconds if max_seconds is not None else knobs.max_seconds,
        "max_steps": max_steps if max_steps is not None else knobs.max_steps,
        "chip_size": knobs.chip_size,
        "batch_size": knobs.batch_size,
        "lr": knobs.lr,
        "seed": knobs.seed,
    }
    base = TrainConfig()
    fields = {f.name for f in dataclasses.fields(base)}
    return dataclasses.replace(
        base, **{k: v for k, v in overrides.items() if v is not None and k in fields}
    )


def _model_spec(config: AoiConfig):
    from pipeline.model.net import ModelSpec

    overrides = {"arch": config.model.arch, "encoder": config.model.encoder}
    return dataclasses.replace(ModelSpec(), **{k: v for k, v in overrides.items() if v})


def train_aoi_model(
    ctx: Context,
    aoi_name: str,
    steps: list[str],
    *,
    max_seconds: float | None = None,
    max_steps: int | None = None,
    promote: PromotePolicy = "auto",
    warm_start: bool = False,
) -> TrainOutcome:
    """Train a challenger on ``steps`` of an AOI, register it, promote it if it wins.

    ``max_steps`` / ``max_seconds`` override the AOI's training budget; training stops
    at whichever comes first, so a step budget with a generous time cap is repeatable.
    The network is initialised from the AOI's training seed.
    """
    import torch

    from pipeline.model.checkpoint import save_model
    from pipeline.model.net import build_model
    from pipeline.model.train import evaluate_iou, train_model
    from pipeline.predictions import load_model_version

    started = time.perf_counter()
    config = get_aoi_config(ctx, aoi_name)
    data = build_training_set(ctx, config, steps)
    spec = _model_spec(config)
    train_config = _train_config(config, max_seconds, max_steps)

    with Session(ctx.engine) as s:
        champion = repo.production_model(s, config.model.name)
        champion_id = champion.id if champion else None
    champion_model = load_model_version(ctx, champion_id) if champion_id else None
    init = copy.deepcopy(champion_model) if (warm_start and champion_model is not None) else None
    if init is None:
        torch.manual_seed(train_config.seed)  # the same data and seed give the same model
        init = build_model(
            spec, encoder_weights=ctx.settings.encoder_weights, allow_hub=ctx.settings.allow_hub
        )
    with tempfile.TemporaryDirectory(prefix="geoaudit-train-") as tmp:
        result = train_model(
            data.train,
            data.val,
            spec,
            train_config,
            device=ctx.device,
            checkpoint_dir=Path(tmp),
            init_from=init,
            progress=ctx.progress,
        )
        champion_iou = (
            evaluate_iou(champion_model, data.val, device=ctx.device)
            if champion_model is not None
            else None
        )
        weights = Path(tmp) / "model.pt"
        sha = save_model(
            result.model,
            result.spec,
            weights,
            meta={"aoi": config.name, "steps": steps, "val_iou": result.val_iou},
        )
        key = f"models/{config.model.name}/{sha[:16]}.pt"
        ctx.store.put_file(weights, key)

    promoted = promote == "always" or (
        promote == "auto" and (champion_iou is None or result.val_iou > champion_iou)
    )
    with Session(ctx.engine) as s, s.begin():
        mv = repo.register_model_version(
            s,
            name=config.model.name,
            arch=result.spec.arch,
            encoder=result.spec.encoder,
            weights_uri=key,
            weights_sha256=sha,
            params={
                "spec": dataclasses.asdict(result.spec),
                "train": dataclasses.asdict(train_config),
            },
            metrics={
                "val_iou": result.val_iou,
                "champion_val_iou": champion_iou,
                "train_steps": result.steps,
                "train_seconds": result.seconds,
            },
            training_data={
                "aoi": config.name,
                "steps": steps,
                "train_shards": len(data.train),
                "excluded_tiles": data.excluded_tiles,
            },
            heldout={"tiles": data.heldout_tiles, "share": config.model.train.heldout_share},
            parent_id=champion_id,
        )
        if promoted:
            repo.promote(s, mv.id)
        outcome = TrainOutcome(
            model_version_id=mv.id,
            version=mv.version,
            val_iou=result.val_iou,
            champion_id=champion_id,
            champion_val_iou=champion_iou,
            promoted=promoted,
            seconds=time.perf_counter() - started,
            steps=result.steps,
        )
    log.info("model trained", extra=dataclasses.asdict(outcome))
    return outcome
