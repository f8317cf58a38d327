"""Prediction within a run, with the real (untrained) network on real imagery: where a
shard's probabilities come from (``model``, ``cache``, ``this_run``), what re-predicting
ignores and keeps, and what predicting ahead reports.

The AOI here has one-tile shards (256 px: fast inference), and each test registers a
model version of its own, so that the prediction cache starts empty for it."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session

from pipeline.aoi import AoiConfig
from pipeline.db import repo
from pipeline.db.engine import write_session
from pipeline.errors import StoreError
from pipeline.mosaic import decode_prob, encode_prob, read_mosaic
from pipeline.run import layout
from pipeline.run.inputs import RunInputs, load_run_inputs
from pipeline.run.labels import shard_labels
from pipeline.run.predict import (
    load_model_version,
    predict_ahead,
    predict_imagery,
    predict_run_shard,
)
from pipeline.run.snapshots import imagery_snapshot
from pipeline.tiles import Tile, parse_shard_id

from ._helpers import planned, register, small_config_overrides
from .conftest import RealAoi, register_untrained_model

TILES = [Tile(773394, 440526, 20), Tile(773395, 440526, 20)]
SHARD = parse_shard_id("20-773394-440526", 20)
_seeds = itertools.count(1)


@pytest.fixture(scope="module")
def small(real_aoi: RealAoi) -> AoiConfig:
    return register(real_aoi.ctx, "small", **small_config_overrides(TILES))


@pytest.fixture
def model(real_aoi: RealAoi) -> int:
    """A model version of this test's own (an empty prediction cache)."""
    seed = next(_seeds)
    return register_untrained_model(real_aoi.ctx, name=f"model-{seed}", seed=seed)


def _run(real_aoi: RealAoi, config: AoiConfig, model: int, **request: Any) -> RunInputs:
    plan = planned(real_aoi.ctx, config, model_version_id=model, force=True, **request)
    return load_run_inputs(real_aoi.ctx, plan.run_id)


def _entry_run(real_aoi: RealAoi, inputs: RunInputs, shard_id: str = SHARD.id) -> int | None:
    ref = inputs.imagery.shards[shard_id]
    with Session(real_aoi.ctx.engine) as s:
        entry = repo.cached_prediction(s, ref.content_hash, inputs.model_version_id, shard_id)
        return entry.run_id


def _mtime(real_aoi: RealAoi, key: str) -> int:
    return os.stat(real_aoi.ctx.store.path(key)).st_mtime_ns


def test_the_first_prediction_runs_the_model_and_is_cached(
    real_aoi: RealAoi, small: AoiConfig, model: int
) -> None:
    ctx = real_aoi.ctx
    run = _run(real_aoi, small, model)
    prediction = predict_run_shard(ctx, run, SHARD)
    ref = run.imagery.shards[SHARD.id]
    assert prediction.source == "model" and not prediction.cache_hit
    assert prediction.key == layout.prediction_key(small.name, model, ref.content_hash, SHARD.id)
    prob = prediction.prob
    assert prob.shape == (256, 256) and prob.dtype == np.float32
    assert 0.0 <= prob.min() < prob.max() <= 1.0
    # what is returned is what is stored: the uint8 encoding, decoded
    np.testing.assert_array_equal(prob, decode_prob(encode_prob(prob)))
    with ctx.store.readable_path(prediction.key) as path:
        stored, _ = read_mosaic(path)
    np.testing.assert_array_equal(decode_prob(stored), prob)
    assert _entry_run(real_aoi, run) == run.run_id


def test_prediction_sources_for_this_run_and_another(
    real_aoi: RealAoi, small: AoiConfig, model: int
) -> None:
    ctx = real_aoi.ctx
    first, other = _run(real_aoi, small, model), _run(real_aoi, small, model)
    made = predict_run_shard(ctx, first, SHARD)
    mtime = _mtime(real_aoi, made.key)
    again = predict_run_shard(ctx, first, SHARD)
    assert again.source == "this_run" and not again.cache_hit
    cached = predict_run_shard(ctx, other, SHARD)
    assert cached.source == "cache" and cached.cache_hit
    for p in (again, cached):
        assert p.key == made.key
        np.testing.assert_array_equal(p.prob, made.prob)
    assert _mtime(real_aoi, made.key) == mtime  # nothing predicted or written again
    assert _entry_run(real_aoi, first) == first.run_id


def test_repredict_ignores_other_runs_predictions_but_keeps_its_own(
    real_aoi: RealAoi, small: AoiConfig, model: int
) -> None:
    ctx = real_aoi.ctx
    earlier = _run(real_aoi, small, model)
    made = predict_run_shard(ctx, earlier, SHARD)
    mtime = _mtime(real_aoi, made.key)

    fresh = _run(real_aoi, small, model, repredict=True)
    assert fresh.repredict
    redone = predict_run_shard(ctx, fresh, SHARD)
    assert redone.source == "model" and not redone.cache_hit
    assert _mtime(real_aoi, redone.key) != mtime  # predicted and written again
    assert _entry_run(real_aoi, fresh) == fresh.run_id
    np.testing.assert_array_equal(redone.prob, made.prob)  # the same network, the same pixels

    # its own prediction counts (a retried shard, or one predicted ahead)
    mtime = _mtime(real_aoi, redone.key)
    own = predict_run_shard(ctx, fresh, SHARD)
    assert own.source == "this_run" and _mtime(real_aoi, own.key) == mtime
    # and a run that does not re-predict takes it from the cache
    assert predict_run_shard(ctx, _run(real_aoi, small, model), SHARD).source == "cache"


def test_a_cache_entry_without_its_mosaic_is_predicted_again(
    real_aoi: RealAoi, small: AoiConfig, model: int
) -> None:
    ctx = real_aoi.ctx
    made = predict_run_shard(ctx, _run(real_aoi, small, model), SHARD)
    Path(ctx.store.path(made.key)).unlink()
    later = _run(real_aoi, small, model)
    again = predict_run_shard(ctx, later, SHARD)
    assert again.source == "model" and ctx.store.exists(again.key)
    assert _entry_run(real_aoi, later) == later.run_id


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        # a flipped byte in the pixel data: still a readable TIFF, only the hash knows
        (lambda b: b[:-100] + bytes([b[-100] ^ 0xFF]) + b[-99:], "do not match the SHA-256"),
        (lambda b: b[: len(b) // 3], "do not match the SHA-256"),
    ],
    ids=["flipped-byte", "truncated"],
)
def test_a_damaged_cache_entry_is_detected_by_its_hash_and_predicted_again(
    real_aoi: RealAoi,
    small: AoiConfig,
    model: int,
    damage: Any,
    problem: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = real_aoi.ctx
    made = predict_run_shard(ctx, _run(real_aoi, small, model), SHARD)
    path = Path(ctx.store.path(made.key))
    path.write_bytes(damage(path.read_bytes()))
    later = _run(real_aoi, small, model)
    with caplog.at_level("WARNING", logger="pipeline.run.predict"):
        again = predict_run_shard(ctx, later, SHARD)
    assert again.source == "model"  # not the damaged pixels
    np.testing.assert_array_equal(again.prob, made.prob)
    assert _entry_run(real_aoi, later) == later.run_id
    (record,) = [r for r in caplog.records if "damaged prediction cache entry" in r.message]
    assert problem in record.problem and record.artifact.endswith(made.key)
    # the re-predicted file is whole again and serves the next run from the cache
    assert predict_run_shard(ctx, _run(real_aoi, small, model), SHARD).source == "cache"


def test_an_unreadable_entry_cached_before_hashes_is_predicted_again(
    real_aoi: RealAoi, small: AoiConfig, model: int
) -> None:
    ctx = real_aoi.ctx
    first = _run(real_aoi, small, model)
    made = predict_run_shard(ctx, first, SHARD)
    ref = first.imagery.shards[SHARD.id]
    with write_session(ctx.engine) as s:  # an entry from before migration 0005
        repo.store_prediction(s, ref.content_hash, model, SHARD.id, made.key, run_id=first.run_id)
    Path(ctx.store.path(made.key)).write_bytes(b"II*\x00 not a mosaic any more")
    again = predict_run_shard(ctx, _run(real_aoi, small, model), SHARD)
    assert again.source == "model"
    np.testing.assert_array_equal(again.prob, made.prob)


def test_predict_ahead_reports_seconds_only_when_it_ran_the_model(
    real_aoi: RealAoi, small: AoiConfig, model: int
) -> None:
    ctx = real_aoi.ctx
    run = _run(real_aoi, small, model)
    assert predict_ahead(ctx, run, SHARD.id) > 0.0
    assert _entry_run(real_aoi, run) == run.run_id
    assert predict_ahead(ctx, run, SHARD.id) == 0.0  # its own, in the cache now
    # the shard stage then finds it: predicted in this run, not a cache hit
    assert predict_run_shard(ctx, run, SHARD).source == "this_run"
    # another run finds it cached; a re-predicting one runs the model again
    assert predict_ahead(ctx, _run(real_aoi, small, model), SHARD.id) == 0.0
    repredicting = _run(real_aoi, small, model, repredict=True)
    assert predict_ahead(ctx, repredicting, SHARD.id) > 0.0
    assert predict_ahead(ctx, repredicting, SHARD.id) == 0.0
    assert predict_run_shard(ctx, repredicting, SHARD).source == "this_run"


def test_predict_ahead_of_a_shard_without_imagery_does_nothing(
    real_aoi: RealAoi, small: AoiConfig, model: int
) -> None:
    run = _run(real_aoi, small, model)
    assert predict_ahead(real_aoi.ctx, run, "20-773396-440526") == 0.0
    ref = next(iter(run.imagery.shards.values()))
    with Session(real_aoi.ctx.engine) as s:
        assert repo.cached_prediction(s, ref.content_hash, model, "20-773396-440526") is None


def test_predict_imagery_outside_a_run(real_aoi: RealAoi, small: AoiConfig, model: int) -> None:
    ctx = real_aoi.ctx
    run = _run(real_aoi, small, model)
    with Session(ctx.engine) as s:
        imagery = imagery_snapshot(s, run.imagery.id)
    first = predict_imagery(ctx, small, imagery, model)
    assert sorted(first) == sorted(t.id for t in small.shards())
    assert {p.source for p in first.values()} == {"model"}
    # predictions made outside a run belong to no run: the next call reads them
    second = predict_imagery(ctx, small, imagery, model)
    assert {p.source for p in second.values()} == {"cache"}
    for sid in first:
        np.testing.assert_array_equal(first[sid].prob, second[sid].prob)
        assert _entry_run(real_aoi, run, sid) is None
    again = predict_imagery(ctx, small, imagery, model, repredict=True)
    assert {p.source for p in again.values()} == {"model"}
    # and a run takes them from the cache
    assert predict_run_shard(ctx, run, SHARD).source == "cache"


def test_the_model_is_loaded_once_per_process(real_aoi: RealAoi, model: int) -> None:
    networks = load_model_version(real_aoi.ctx, model)
    assert load_model_version(real_aoi.ctx, model) is networks
    assert networks.models and not any(m.training for m in networks.models)


def test_a_model_version_without_weights_is_named(real_aoi: RealAoi) -> None:
    with Session(real_aoi.ctx.engine) as s, s.begin():
        mv = repo.register_model_version(
            s,
            "ghost",
            arch="unet",
            encoder="tu-mobilenetv3_small_100",
            weights_uri="models/ghost/0000000000000000.pt",
            weights_sha256="0" * 64,
        )
        mv_id = mv.id
    with pytest.raises(StoreError, match=r"models/ghost/0000000000000000\.pt.* not found"):
        load_model_version(real_aoi.ctx, mv_id)


def test_a_prediction_cached_by_another_aoi_can_be_viewed(real_aoi: RealAoi, model: int) -> None:
    from pipeline.results.tile_view import shard_layers

    ctx = real_aoi.ctx
    one_tile = small_config_overrides(TILES[:1])
    first, second = register(ctx, "first", **one_tile), register(ctx, "second", **one_tile)
    assert predict_run_shard(ctx, _run(real_aoi, first, model), SHARD).source == "model"
    other = _run(real_aoi, second, model)
    assert predict_run_shard(ctx, other, SHARD).source == "cache"
    shard_labels(ctx, second.name, other.opendata, SHARD)
    layers = shard_layers(ctx, other, SHARD)
    assert layers is not None and layers.pred.shape == (256, 256)
