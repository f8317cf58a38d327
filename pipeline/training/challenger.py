"""A challenger for an AOI's model: train it on the AOI's training set, compare it
with the champion on the same held-out tiles, register it, promote it when it is
better (champion / challenger)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from sqlalchemy.orm import Session

from pipeline.aoi.config import AoiConfig
from pipeline.aoi.registry import get_aoi_config
from pipeline.aoi.steps import check_step
from pipeline.context import Context
from pipeline.db import repo
from pipeline.errors import ConfigError
from pipeline.run import layout
from pipeline.run.handoffs import Handoff
from pipeline.run.predict import load_model_version
from pipeline.training.trainset import build_training_set

log = logging.getLogger(__name__)
PromotePolicy = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class TrainOutcome(Handoff):
    """A trained, registered model version and the promotion decision (``steps``: the
    optimiser steps it took)."""

    what: ClassVar[str] = "training outcome"

    model_version_id: int
    version: int
    val_iou: float
    champion_id: int | None
    champion_val_iou: float | None
    promoted: bool
    seconds: float
    steps: int


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
        key = layout.model_weights_key(config.model.name, sha)
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


def retrain(
    ctx: Context,
    aoi: str,
    steps: list[str],
    *,
    max_steps: int | None = None,
    max_seconds: float | None = None,
) -> TrainOutcome:
    """Train a challenger on ``steps`` (default: the AOI's latest configured step) and
    promote it only if it beats the champion on the same held-out tiles (what the
    retraining DAG runs)."""
    config = get_aoi_config(ctx, aoi)
    steps = list(steps) or config.steps[-1:]
    if not steps:
        raise ConfigError(f"AOI {aoi!r}: no time step to train on (set 'steps' or pass some)")
    for step in steps:
        check_step(step)
    return train_aoi_model(
        ctx, aoi, steps, max_steps=max_steps, max_seconds=max_seconds, promote="auto"
    )
