"""A challenger for an AOI's model: trained on the AOI's training set, judged out of
sample against the champion (:mod:`pipeline.training.promotion`), registered, and
promoted when it judges better.

With folds (the default, ``model.train.folds``), the challenger is a fold set: ``k``
models, each trained without one fold's blocks of tiles (:mod:`pipeline.model.folds`),
registered as one model version; every tile is later judged by the fold model that did
not learn its labels. Its quality is the out-of-fold IoU over all validated tiles.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from sqlalchemy.orm import Session

from pipeline.aoi.config import AoiConfig
from pipeline.aoi.registry import get_aoi_config
from pipeline.aoi.steps import check_step
from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.engine import write_session
from pipeline.errors import ConfigError, ModelError
from pipeline.model.folds import FoldPlan, FoldSet, plan_folds
from pipeline.run import layout
from pipeline.run.handoffs import Handoff
from pipeline.run.predict import load_model_version
from pipeline.training.promotion import Decision, Judged, decide
from pipeline.training.reviewed import reviewer_agreement
from pipeline.training.trainset import (
    TrainingSet,
    fold_splits,
    heldout_split,
    load_areas,
    validatable_tiles,
)

log = logging.getLogger(__name__)
PromotePolicy = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class TrainOutcome(Handoff):
    """A trained, registered model version and the promotion decision (``val_iou``: its
    out-of-fold IoU; ``steps``: optimiser steps over all its fold models)."""

    what: ClassVar[str] = "training outcome"

    model_version_id: int
    version: int
    val_iou: float
    champion_id: int | None
    champion_val_iou: float | None
    promoted: bool
    seconds: float
    steps: int
    folds: int = 1
    reason: str = ""


def _train_config(config: AoiConfig, max_seconds: float | None, max_steps: int | None) -> Any:
    """The training loop's settings: the AOI's knobs, the call's budget over them."""
    from pipeline.model.train import TrainConfig

    knobs = config.model.train
    seconds = max_seconds if max_seconds is not None else knobs.max_seconds
    overrides = {
        "max_seconds": seconds / knobs.folds if seconds is not None else None,
        "max_steps": max_steps if max_steps is not None else knobs.max_steps,
        "chip_size": knobs.chip_size,
        "batch_size": knobs.batch_size,
        "lr": knobs.lr,
        "seed": knobs.seed,
        "geometric_augment": knobs.geometric_augment,
    }
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(TrainConfig(), max_seconds=given.pop("max_seconds", None), **given)


def _model_spec(config: AoiConfig) -> Any:
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

    ``max_steps`` (per fold model) / ``max_seconds`` (the whole training) override the
    AOI's budget; training stops at whichever comes first, so a step budget is
    repeatable. Networks start from the AOI's seed (fold ``j``: seed + ``j``), from the
    base model (``model.base``) when set, or, with ``warm_start``, from the champion's
    fold models (which must use the same folds: no fold may start from weights that
    learned its held-out labels).
    """
    from pipeline.model.checkpoint import save_model
    from pipeline.model.train import evaluate_counts, iou_of, train_model

    started = time.perf_counter()
    config = get_aoi_config(ctx, aoi_name)
    spec = _model_spec(config)
    train_config = _train_config(config, max_seconds, max_steps)
    areas, excluded = load_areas(ctx, config, steps)

    with Session(ctx.engine) as s:
        champion_row = repo.production_model(s, config.model_name)
        champion_id = champion_row.id if champion_row else None
    champion = load_model_version(ctx, champion_id) if champion_id else None

    k = config.model.train.folds
    if warm_start and champion is not None and champion.models[0].spec != spec:
        raise ConfigError(
            f"AOI {config.name!r}: a warm start needs a champion of the same network "
            f"({champion.models[0].spec.encoder} vs {spec.encoder}); train without --warm-start"
        )
    if warm_start and champion is not None and champion.k != k:
        raise ConfigError(
            f"AOI {config.name!r}: a warm start needs a champion with the same folds "
            f"({champion.k} vs {k}); train without --warm-start"
        )
    if k > 1:
        plan = _fold_plan(config, areas, excluded, champion if warm_start else None)
        splits = fold_splits(areas, plan, excluded, config.name)
    else:
        plan = FoldPlan(1, 0)
        splits = [heldout_split(areas, config.model.train.heldout_share, excluded, config.name)]
    inits = _initial_models(ctx, config, spec, plan, champion if warm_start else None)

    models, fold_ious, total_steps, counts = [], [], 0, np.zeros(3, np.int64)
    with tempfile.TemporaryDirectory(prefix="geoaudit-train-") as tmp:
        for j, (data, init) in enumerate(zip(splits, inits, strict=True)):
            result = train_model(
                data.train,
                data.val,
                spec,
                dataclasses.replace(train_config, seed=train_config.seed + j),
                device=ctx.device,
                checkpoint_dir=Path(tmp) / f"fold-{j}",
                init_from=init,
                progress=ctx.progress,
            )
            models.append(result.model)
            fold_ious.append(result.val_iou)
            total_steps += result.steps
            counts += evaluate_counts(result.model, data.val, device=ctx.device)
        challenger = FoldSet(models, plan)
        oof_iou = iou_of(tuple(int(c) for c in counts))
        judged = Judged(oof_iou, *reviewer_agreement(ctx, config, challenger))
        champion_judged = None
        if champion is not None:
            champion_judged = Judged(
                _oof_iou_of(champion, splits, ctx), *reviewer_agreement(ctx, config, champion)
            )
        decision = (
            decide(judged, champion_judged)
            if promote == "auto"
            else Decision(promote == "always", f"promote={promote}")
        )
        weights = Path(tmp) / "model.pt"
        sha = save_model(
            challenger,
            spec,
            weights,
            meta={"aoi": config.name, "steps": steps, "val_iou": oof_iou, "folds": k},
        )
        key = layout.model_weights_key(config.model_name, sha)
        ctx.store.put_file(weights, key)

    with write_session(ctx.engine) as s:
        mv = repo.register_model_version(
            s,
            name=config.model_name,
            arch=spec.arch,
            encoder=spec.encoder,
            weights_uri=key,
            weights_sha256=sha,
            params={
                "spec": dataclasses.asdict(spec),
                "train": dataclasses.asdict(train_config),
                "folds": plan.to_dict(),
            },
            metrics={
                "val_iou": oof_iou,
                "oof_iou": oof_iou,
                "fold_val_iou": fold_ious,
                "folds": k,
                "validated_tiles": sum(len(d.val_tiles) for d in splits),
                "reviewed_findings": judged.reviewed,
                "reviewer_agreement": judged.agreement,
                "champion_val_iou": champion_judged.oof_iou if champion_judged else None,
                "champion_reviewer_agreement": champion_judged.agreement
                if champion_judged
                else None,
                "promotion": decision.reason,
                "train_steps": total_steps,
                "train_seconds": round(time.perf_counter() - started, 1),
            },
            training_data={
                "aoi": config.name,
                "steps": steps,
                "train_shards": len(areas),
                "excluded_tiles": splits[0].excluded_tiles,
            },
            heldout={
                "tiles": sorted(str(t) for d in splits for t in d.val_tiles),
                "folds": k,
                "share": config.model.train.heldout_share if k == 1 else None,
            },
            parent_id=champion_id,
        )
        if decision.promote:
            repo.promote(s, mv.id)
        outcome = TrainOutcome(
            model_version_id=mv.id,
            version=mv.version,
            val_iou=oof_iou,
            champion_id=champion_id,
            champion_val_iou=champion_judged.oof_iou if champion_judged else None,
            promoted=decision.promote,
            seconds=time.perf_counter() - started,
            steps=total_steps,
            folds=k,
            reason=decision.reason,
        )
    log.info("model trained", extra=dataclasses.asdict(outcome))
    return outcome


def _fold_plan(config: AoiConfig, areas: list, excluded: set, champion: FoldSet | None) -> FoldPlan:
    """The champion's plan for a warm start (it must have the same folds), else a new one
    over the AOI's tiles with imagery."""
    k = config.model.train.folds
    if champion is not None:  # same folds: checked by the caller
        return champion.plan
    tiles = validatable_tiles(areas, excluded)
    if len(tiles) < k:
        raise ConfigError(
            f"AOI {config.name!r}: {len(tiles)} tiles with imagery cannot make {k} folds; "
            "set model.train.folds lower"
        )
    return plan_folds(tiles, k, seed=config.model.train.seed)


def _initial_models(
    ctx: Context, config: AoiConfig, spec: Any, plan: FoldPlan, champion: FoldSet | None
) -> list[Any]:
    """Each fold's starting network: the champion's fold (warm start), the base model,
    or fresh pretrained weights (:func:`_pretrained_start`), else random (None: the
    training loop builds it from its seed)."""
    if champion is not None:
        return [copy.deepcopy(m) for m in champion.models]
    if config.model.base:
        with Session(ctx.engine) as s:
            base = repo.production_model(s, config.model.base)
            if base is None:
                raise ModelError(
                    f"AOI {config.name!r}: base model {config.model.base!r} has no production "
                    "version"
                )
            base_id = base.id
        base_model = load_model_version(ctx, base_id).models[0]
        return [copy.deepcopy(base_model) for _ in range(plan.k)]
    model = _pretrained_start(ctx, spec, config.model.train.seed)
    return [copy.deepcopy(model) if model is not None else None for _ in range(plan.k)]


def _pretrained_start(ctx: Context, spec: Any, seed: int) -> Any:
    """A fresh network from pretrained encoder weights (``GEOAUDIT_ENCODER_WEIGHTS``, else
    those a package ships for the encoder, else the hub when allowed); None when there
    are none (the training loop then builds it from its seed)."""
    import torch

    from pipeline.model.net import build_model
    from pipeline.model.pretrained import packaged_weights

    weights = ctx.settings.encoder_weights or packaged_weights(spec.encoder)
    if not (weights or ctx.settings.allow_hub):
        return None
    torch.manual_seed(seed)
    return build_model(spec, encoder_weights=weights, allow_hub=ctx.settings.allow_hub)


def _oof_iou_of(folds: FoldSet, splits: list[TrainingSet], ctx: Context) -> float:
    """Pooled IoU of a fold set on the challenger's validation tiles, each tile predicted
    by the fold model that held it out."""
    from pipeline.model.train import evaluate_counts, iou_of

    counts = np.zeros(3, np.int64)
    for data in splits:
        by_model: dict[int, list] = {}
        for tile, sample in zip(data.val_tiles, data.val, strict=True):
            by_model.setdefault(folds.plan.fold_of(tile), []).append(sample)
        for fold, samples in by_model.items():
            counts += evaluate_counts(folds.models[fold], samples, device=ctx.device)
    return iou_of(tuple(int(c) for c in counts))


def retrain(
    ctx: Context,
    aoi: str,
    steps: list[str],
    *,
    max_steps: int | None = None,
    max_seconds: float | None = None,
) -> TrainOutcome:
    """Train a challenger on ``steps`` (default: the AOI's latest configured step) and
    promote it only if it judges better than the champion (what the retraining DAG runs)."""
    config = get_aoi_config(ctx, aoi)
    steps = list(steps) or config.steps[-1:]
    if not steps:
        raise ConfigError(f"AOI {aoi!r}: no time step to train on (set 'steps' or pass some)")
    for step in steps:
        check_step(step)
    return train_aoi_model(
        ctx, aoi, steps, max_steps=max_steps, max_seconds=max_seconds, promote="auto"
    )


def train_base_model(
    ctx: Context,
    aois: list[str],
    *,
    name: str,
    max_steps: int | None = None,
    max_seconds: float | None = None,
) -> TrainOutcome:
    """A base model shared by AOIs: one network trained on the latest configured step of
    each of ``aois`` (a hash-chosen share of each held out), registered under ``name``
    and promoted. An AOI whose ``model.base`` is ``name`` starts every fold model from it:
    small AOIs then fine-tune what many places taught instead of starting from noise.
    The base model must not have trained on the AOI it then serves (for an honest
    measure, leave that AOI out)."""
    from pipeline.model.checkpoint import save_model
    from pipeline.model.train import evaluate_counts, iou_of, train_model

    if not aois:
        raise ConfigError("a base model needs at least one AOI to train on")
    started = time.perf_counter()
    configs = [get_aoi_config(ctx, aoi) for aoi in aois]
    spec = _model_spec(configs[0])
    train_config = dataclasses.replace(
        _train_config(configs[0], max_seconds, max_steps),
        max_seconds=max_seconds,
    )
    train, val = [], []
    for config in configs:
        if not config.steps:
            raise ConfigError(f"AOI {config.name!r}: no time step to train on (set 'steps')")
        areas, excluded = load_areas(ctx, config, config.steps[-1:])
        one = heldout_split(areas, config.model.train.heldout_share, excluded, config.name)
        train += one.train
        val += one.val
    with tempfile.TemporaryDirectory(prefix="geoaudit-base-") as tmp:
        result = train_model(
            train,
            val,
            spec,
            train_config,
            device=ctx.device,
            init_from=_pretrained_start(ctx, spec, train_config.seed),
            progress=ctx.progress,
        )
        iou = iou_of(evaluate_counts(result.model, val, device=ctx.device))
        weights = Path(tmp) / "model.pt"
        sha = save_model(result.model, spec, weights, meta={"aois": aois, "val_iou": iou})
        key = layout.model_weights_key(name, sha)
        ctx.store.put_file(weights, key)
    with write_session(ctx.engine) as s:
        mv = repo.register_model_version(
            s,
            name=name,
            arch=spec.arch,
            encoder=spec.encoder,
            weights_uri=key,
            weights_sha256=sha,
            params={"spec": dataclasses.asdict(spec), "train": dataclasses.asdict(train_config)},
            metrics={
                "val_iou": iou,
                "validated_tiles": len(val),
                "train_steps": result.steps,
                "train_seconds": round(time.perf_counter() - started, 1),
            },
            training_data={"aois": aois, "train_shards": len(train)},
            stage="production",
        )
        return TrainOutcome(
            model_version_id=mv.id,
            version=mv.version,
            val_iou=iou,
            champion_id=None,
            champion_val_iou=None,
            promoted=True,
            seconds=time.perf_counter() - started,
            steps=result.steps,
            reason="base model",
        )
