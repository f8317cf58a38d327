"""Stage 5, predict: building probabilities per shard, cached per model version.

A prediction is stored as a uint8 probability mosaic under the key
``aois/<aoi>/predictions/m<model version>/<imagery hash>/<shard>.tif`` and
recorded in ``prediction_cache`` under (imagery hash, model version, shard):
an unchanged shard is never predicted twice by the same model.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from pipeline.context import Context
from pipeline.db import repo
from pipeline.errors import ModelError, NotFoundError
from pipeline.mosaic import read_mosaic, write_mosaic
from pipeline.tiles import Shard

log = logging.getLogger(__name__)
_models: dict[tuple[str, int, str], object] = {}
_models_lock = threading.Lock()


@dataclass(frozen=True)
class Prediction:
    """Probabilities of one shard and whether they came from the cache."""

    prob: np.ndarray
    cache_hit: bool
    key: str


def prediction_key(aoi: str, model_version_id: int, imagery_hash: str, shard_id: str) -> str:
    """Artifact key of a cached shard prediction."""
    return f"aois/{aoi}/predictions/m{model_version_id}/{imagery_hash[:16]}/{shard_id}.tif"


def load_model_version(ctx: Context, model_version_id: int):  # noqa: ANN201 - torch module
    """Load a registered model's weights once per process and device."""
    cache_key = (ctx.settings.resolved_artifact_root, model_version_id, str(ctx.device))
    with _models_lock:
        if cache_key in _models:
            return _models[cache_key]
    from pipeline.model.checkpoint import load_model

    with Session(ctx.engine) as s:
        mv = repo.get_model_version(s, model_version_id)
        weights_key = mv.weights_uri
    with ctx.store.readable_path(weights_key) as path:
        model, _spec, _meta = load_model(path, device=ctx.device)
    model.eval()
    with _models_lock:
        _models[cache_key] = model
    return model


def predict_shard(
    ctx: Context,
    *,
    aoi: str,
    shard: Shard,
    image: np.ndarray,
    valid: np.ndarray,
    imagery_hash: str,
    model_version_id: int,
    force: bool = False,
) -> Prediction:
    """Probabilities for a shard mosaic: from the cache, or predicted and cached."""
    with Session(ctx.engine) as s:
        cached = (
            None if force else repo.cached_prediction(s, imagery_hash, model_version_id, shard.id)
        )
    if cached and ctx.store.exists(cached):
        with ctx.store.readable_path(cached) as path:
            data, _ = read_mosaic(path)
        prob = np.asarray(data, dtype=np.float32).reshape(shard.size, shard.size) / 255.0
        return Prediction(prob=prob, cache_hit=True, key=cached)

    from pipeline.model.predict import predict_mosaic

    try:
        model = load_model_version(ctx, model_version_id)
    except NotFoundError:
        raise
    except ModelError:
        raise
    prob = predict_mosaic(model, image, valid=valid, device=ctx.device)
    key = prediction_key(aoi, model_version_id, imagery_hash, shard.id)
    quantised = np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)
    with ctx.store.writable_path(key) as tmp:
        write_mosaic(tmp, quantised, shard, kind="prob")
    with Session(ctx.engine) as s, s.begin():
        repo.store_prediction(s, imagery_hash, model_version_id, shard.id, key)
    return Prediction(prob=quantised.astype(np.float32) / 255.0, cache_hit=False, key=key)
