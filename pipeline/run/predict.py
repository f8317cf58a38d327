"""Prediction within a run: building probabilities per shard, cached per model version.

A prediction is stored as a uint8 probability mosaic (:func:`layout.prediction_key`)
and recorded in ``prediction_cache`` under (imagery hash, model version, shard) with
the run that made it: an unchanged shard is never predicted twice by the same model.
A run that re-predicts ignores what other runs cached, but keeps its own predictions
(a retried shard, or the shards predicted while its inputs were being validated).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from sqlalchemy.orm import Session

from pipeline.aoi.config import AoiConfig
from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.engine import write_session
from pipeline.errors import StoreError
from pipeline.model.device import is_cuda
from pipeline.model.folds import FoldSet
from pipeline.mosaic import decode_prob, encode_prob, read_mosaic, write_mosaic
from pipeline.progress import progress_bar
from pipeline.run import layout
from pipeline.run.inputs import RunInputs, ShardPixels, read_shard_image
from pipeline.run.prefetch import loaded_ahead
from pipeline.run.snapshots import ImagerySnapshot
from pipeline.store import file_sha256
from pipeline.tiles import Shard, parse_shard_id

if TYPE_CHECKING:
    from pipeline.model.net import ModelSpec

log = logging.getLogger(__name__)
_models: dict[tuple[str, int, str], FoldSet] = {}
_models_lock = threading.Lock()

PredictionSource = Literal["cache", "this_run", "model"]


@dataclass(frozen=True)
class Prediction:
    """Probabilities ``(H, W) float32`` of one shard and where they came from: ``cache``
    (predicted by an earlier run), ``this_run`` (predicted earlier in this run) or
    ``model`` (predicted now)."""

    prob: np.ndarray
    source: PredictionSource
    key: str

    @property
    def cache_hit(self) -> bool:
        """No inference ran for this run: the prediction came from an earlier run."""
        return self.source == "cache"


def load_model_version(ctx: Context, model_version_id: int) -> FoldSet:
    """A registered model version as its fold set (a plain model: one fold), in eval
    mode, on the runtime the settings choose (:mod:`pipeline.model.runtime`), loaded
    once per process, device and runtime."""
    from pipeline.model.runtime import choose_runtime

    runtime = choose_runtime(ctx.settings.runtime, ctx.device)
    cache_key = (ctx.store.url, model_version_id, str(ctx.device), runtime)
    with _models_lock:
        if cache_key in _models:
            return _models[cache_key]
    from pipeline.model.checkpoint import load_fold_set

    with Session(ctx.engine) as s:
        mv = repo.get_model_version(s, model_version_id)
        weights_key, name, sha = mv.weights_uri, mv.name, mv.weights_sha256
    with ctx.store.readable_path(weights_key) as path:
        folds, spec, _meta = load_fold_set(path, device=ctx.device)
    if runtime == "onnx":
        folds = _onnx_fold_set(ctx, folds, spec, name, sha)
    with _models_lock:
        _models[cache_key] = folds
    return folds


def _onnx_fold_set(
    ctx: Context, folds: FoldSet, spec: ModelSpec, model_name: str, weights_sha256: str
) -> FoldSet:
    """The fold set's networks in ONNX Runtime sessions, each exported once per model
    version and kept in the artifact store beside the weights."""
    import torch

    from pipeline.model.export import export_onnx
    from pipeline.model.runtime import OnnxNet

    nets = []
    for fold, model in enumerate(folds.models):
        key = layout.model_onnx_key(model_name, weights_sha256, fold)
        if not ctx.store.exists(key):
            with ctx.store.writable_path(key) as tmp:
                export_onnx(model, spec, tmp)
        with ctx.store.readable_path(key) as path:
            threads = torch.get_num_threads()
            nets.append(OnnxNet(path, output_stride=spec.output_stride, threads=threads))
    return FoldSet(nets, folds.plan)


def predict_shard(
    ctx: Context,
    *,
    aoi: str,
    shard: Shard,
    image: ShardPixels,
    imagery_hash: str,
    model_version_id: int,
    run_id: int | None = None,
    repredict: bool = False,
) -> Prediction:
    """Probabilities for a shard mosaic: from the cache, or predicted and cached.

    ``repredict`` ignores predictions that other runs cached (``run_id``'s own count).
    """
    with Session(ctx.engine) as s:
        entry = repo.cached_prediction(s, imagery_hash, model_version_id, shard.id)
        own = entry is not None and run_id is not None and entry.run_id == run_id
        source: PredictionSource = "this_run" if own else "cache"
        usable = entry is not None and (source == "this_run" or not repredict)
        uri = entry.uri if entry is not None else ""
        sha256 = entry.sha256 if entry is not None else None
    if usable and ctx.store.exists(uri):
        prob = _read_cached(ctx, uri, sha256, shard)
        if prob is not None:
            return Prediction(prob=prob, source=source, key=uri)
        with write_session(ctx.engine) as s:
            repo.drop_prediction(s, imagery_hash, model_version_id, shard.id)
        ctx.store.delete(uri)

    from pipeline.model.predict import predict_fold_set

    folds = load_model_version(ctx, model_version_id)
    prob = predict_fold_set(folds, image.data, shard, valid=image.valid, device=ctx.device)
    key = layout.prediction_key(aoi, model_version_id, imagery_hash, shard.id)
    stored = encode_prob(prob)
    with ctx.store.writable_path(key) as tmp:
        write_mosaic(tmp, stored, shard, kind="prob")
        digest = file_sha256(tmp)
    with write_session(ctx.engine) as s:
        repo.store_prediction(
            s, imagery_hash, model_version_id, shard.id, key, run_id=run_id, sha256=digest
        )
    return Prediction(prob=decode_prob(stored), source="model", key=key)


def _read_cached(ctx: Context, uri: str, sha256: str | None, shard: Shard) -> np.ndarray | None:
    """A cached prediction's probabilities, or None (with a warning) when its file is
    damaged: bytes that no longer match the hash stored with it, or not a readable
    mosaic of the shard. The caller drops it and predicts again."""
    problem = None
    if sha256 is not None and ctx.store.sha256(uri) != sha256:
        problem = "its bytes do not match the SHA-256 stored with it"
    else:
        try:
            with ctx.store.readable_path(uri) as path:
                data, _ = read_mosaic(path)
            return decode_prob(np.asarray(data).reshape(shard.size, shard.size))
        except (StoreError, ValueError) as exc:
            problem = f"it cannot be read ({exc})"
    log.warning(
        "damaged prediction cache entry dropped; the shard is predicted again",
        extra={"artifact": ctx.store.uri(uri), "shard": shard.id, "problem": problem},
    )
    return None


def predict_run_shard(
    ctx: Context, inputs: RunInputs, shard: Shard, image: ShardPixels | None = None
) -> Prediction:
    """The prediction of one shard of a run that has imagery there (``image``: its
    mosaic, when the caller read it already)."""
    ref = inputs.imagery.shards[shard.id]
    return predict_shard(
        ctx,
        aoi=inputs.aoi.name,
        shard=shard,
        image=image if image is not None else read_shard_image(ctx, ref),
        imagery_hash=ref.content_hash,
        model_version_id=inputs.model_version_id,
        run_id=inputs.run_id,
        repredict=inputs.repredict,
    )


def predict_ahead(
    ctx: Context, inputs: RunInputs, shard_id: str, image: ShardPixels | None = None
) -> float:
    """Fill the prediction cache for one shard of a run (no score, no row): work a runner
    can do while the run's inputs are validated. Seconds spent on inference (0 when the
    shard has no imagery or its prediction was cached)."""
    if shard_id not in inputs.imagery.shards:
        return 0.0
    t0 = time.perf_counter()
    shard = parse_shard_id(shard_id, inputs.aoi.work_zoom)
    prediction = predict_run_shard(ctx, inputs, shard, image)
    return time.perf_counter() - t0 if prediction.source == "model" else 0.0


def shard_images_ahead(
    ctx: Context, inputs: RunInputs, shard_ids: Sequence[str]
) -> Generator[tuple[str, ShardPixels | None], None, None]:
    """``(shard id, its imagery mosaic)`` of a run in order (None where it has no imagery);
    on a GPU the next mosaic is read while the current one is predicted
    (:func:`~pipeline.run.prefetch.loaded_ahead`)."""

    def read(shard_id: str) -> ShardPixels | None:
        ref = inputs.imagery.shards.get(shard_id)
        return read_shard_image(ctx, ref) if ref is not None else None

    return loaded_ahead(shard_ids, read, enabled=is_cuda(ctx.device))


def predict_imagery(
    ctx: Context,
    aoi: AoiConfig,
    imagery: ImagerySnapshot,
    model_version_id: int,
    *,
    repredict: bool = False,
) -> dict[str, Prediction]:
    """Predictions of every shard of an imagery snapshot, outside any run (``geoaudit
    predict``): cached ones are read, the others predicted and cached."""
    out: dict[str, Prediction] = {}
    shards = sorted(imagery.shards.items())
    images = loaded_ahead(
        shards, lambda item: read_shard_image(ctx, item[1]), enabled=is_cuda(ctx.device)
    )
    for (shard_id, ref), image in progress_bar(
        images, total=len(shards), desc="predict", unit="shard", enabled=ctx.progress
    ):
        out[shard_id] = predict_shard(
            ctx,
            aoi=aoi.name,
            shard=parse_shard_id(shard_id, aoi.work_zoom),
            image=image,
            imagery_hash=ref.content_hash,
            model_version_id=model_version_id,
            repredict=repredict,
        )
    return out
