"""An AOI's challenger end to end on real data (Lalitpur's z20 OpenAerialMap tiles with
their OpenStreetMap buildings): two-fold training, registration, the promotion policies,
warm starts, and agreement with a reviewer's verdict on a finding of a real audit.

Models train 3 steps per fold: their quality is not what is checked, the bookkeeping is.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from rasterio.features import geometry_mask
from run.conftest import STEP, lalitpur_config
from sqlalchemy import select
from sqlalchemy.orm import Session

from audited_town import make_context
from pipeline.aoi.registry import register_aoi
from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.models import Finding
from pipeline.errors import ConfigError
from pipeline.model.checkpoint import load_fold_set
from pipeline.model.folds import FoldPlan
from pipeline.model.predict import predict_fold_set
from pipeline.model.train import evaluate_counts, iou_of
from pipeline.run.inputs import load_run_inputs, read_shard_image
from pipeline.run.local import AuditResult, run_audit
from pipeline.run.predict import load_model_version
from pipeline.tiles import Tile, shard_of, shard_transform
from pipeline.training.challenger import (
    TrainOutcome,
    retrain,
    train_aoi_model,
    train_base_model,
)
from pipeline.training.promotion import Judged, agrees, decide
from pipeline.training.reviewed import reviewer_agreement
from pipeline.training.trainset import fold_splits, load_areas, validatable_tiles

pytestmark = pytest.mark.slow  # five short trainings and one audit: 1-2 minutes

NAME = "lal-folds"
TRAIN = {"folds": 2, "max_steps": 3}
MNV3 = "tu-mobilenetv3_small_100"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    ctx = make_context(tmp_path_factory.mktemp("training"))
    yield ctx
    ctx.engine.dispose()


@pytest.fixture(scope="module")
def config(ctx: Context):
    # MobileNetV3 from random init: after 3 steps its audit still makes findings to review
    # (the pretrained default sees too few); the bookkeeping is the same for any network
    return register_aoi(ctx, lalitpur_config(NAME, model={"encoder": MNV3, "train": TRAIN}))


@pytest.fixture(scope="module")
def never(ctx: Context, config) -> TrainOutcome:
    return train_aoi_model(ctx, NAME, [STEP], promote="never")


@pytest.fixture(scope="module")
def always(ctx: Context, never: TrainOutcome) -> TrainOutcome:
    return train_aoi_model(ctx, NAME, [STEP], promote="always")


@pytest.fixture(scope="module")
def audited(ctx: Context, always: TrainOutcome) -> AuditResult:
    """An audit by the promoted two-fold model."""
    return run_audit(ctx, NAME, STEP)


@pytest.fixture(scope="module")
def finding_id(ctx: Context, audited: AuditResult) -> int:
    """A missing-building finding of the audit (the model made it, so it reproduces it)."""
    with Session(ctx.engine) as s:
        ids = s.scalars(
            select(Finding.id)
            .where(Finding.run_id == audited.run_id, Finding.kind == "missing_in_opendata")
            .where(Finding.tile_z.is_not(None))
            .order_by(Finding.id)
        ).all()
    assert ids, "the audit made no missing_in_opendata finding to review"
    return ids[0]


def _review(ctx: Context, finding_id: int, verdict: str) -> None:
    with Session(ctx.engine) as s, s.begin():
        repo.upsert_review(s, repo.get_aoi(s, NAME).id, "finding", verdict, finding_id=finding_id)


@pytest.fixture(scope="module")
def auto(ctx: Context, always: TrainOutcome, finding_id: int) -> TrainOutcome:
    """A retraining judged against the champion, with one reviewed finding."""
    _review(ctx, finding_id, "model_wrong")
    return retrain(ctx, NAME, [])


def _version(ctx: Context, model_version_id: int):
    with Session(ctx.engine) as s:
        mv = repo.get_model_version(s, model_version_id)
        s.expunge(mv)
        return mv


def _fold_set(ctx: Context, model_version_id: int):
    mv = _version(ctx, model_version_id)
    with ctx.store.readable_path(mv.weights_uri) as path:
        return load_fold_set(path, device=ctx.device)


def _production_id(ctx: Context, name: str = NAME) -> int | None:
    with Session(ctx.engine) as s:
        row = repo.production_model(s, name)
        return row.id if row else None


# --- a two-fold challenger ------------------------------------------------------------------


def test_the_registered_version_is_a_fold_set(ctx, config, never):
    folds, spec, meta = _fold_set(ctx, never.model_version_id)
    mv = _version(ctx, never.model_version_id)
    assert folds.k == never.folds == 2
    assert folds.plan == FoldPlan.from_dict(mv.params["folds"])
    assert meta["folds"] == 2 and meta["aoi"] == NAME and meta["steps"] == [STEP]
    assert meta["val_iou"] == pytest.approx(never.val_iou)
    a, b = (m.state_dict() for m in folds.models)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # two networks, not one twice
    assert (mv.arch, mv.encoder) == (spec.arch, spec.encoder)


def test_the_model_name_defaults_to_the_aoi_name(ctx, config, never):
    assert config.model_name == NAME
    mv = _version(ctx, never.model_version_id)
    assert mv.name == NAME and mv.version == never.version == 1
    assert mv.training_data["aoi"] == NAME and mv.training_data["steps"] == [STEP]


def test_every_validated_tile_is_validated_by_exactly_one_fold(ctx, config, never):
    mv = _version(ctx, never.model_version_id)
    plan = FoldPlan.from_dict(mv.params["folds"])
    areas, excluded = load_areas(ctx, config, [STEP])
    tiles = validatable_tiles(areas, excluded)
    held = mv.heldout["tiles"]
    assert len(held) == len(set(held)) == len(tiles) == mv.metrics["validated_tiles"]
    assert set(held) == {str(t) for t in tiles}
    assert mv.heldout["folds"] == 2 and mv.heldout["share"] is None
    # every tile the plan deals is in a block of the plan, never in a hashed one
    assert all(str(plan.block_of(t)) in plan.assignment for t in tiles)
    splits = fold_splits(areas, plan, excluded, NAME)
    seen = [t for s in splits for t in s.val_tiles]
    assert sorted(seen) == sorted(tiles)
    for j, s in enumerate(splits):
        assert s.val_tiles and {plan.fold_of(t) for t in s.val_tiles} == {j}


def test_metrics_hold_the_out_of_fold_iou(ctx, config, never):
    m = _version(ctx, never.model_version_id).metrics
    assert m["folds"] == 2 and len(m["fold_val_iou"]) == 2
    assert all(0.0 <= v <= 1.0 for v in m["fold_val_iou"])
    assert m["oof_iou"] == m["val_iou"] == pytest.approx(never.val_iou)
    assert m["train_steps"] == never.steps == 2 * TRAIN["max_steps"]
    assert m["reviewed_findings"] == 0 and m["reviewer_agreement"] is None
    assert m["champion_val_iou"] is None and m["promotion"] == "promote=never"
    # the out-of-fold IoU pools every tile's pixels, each judged by the fold model that
    # did not train on it
    folds, _, _ = _fold_set(ctx, never.model_version_id)
    areas, excluded = load_areas(ctx, config, [STEP])
    counts = np.zeros(3, np.int64)
    for j, s in enumerate(fold_splits(areas, folds.plan, excluded, NAME)):
        counts += evaluate_counts(folds.models[j], s.val, device=ctx.device)
    assert iou_of(tuple(int(c) for c in counts)) == pytest.approx(m["oof_iou"], abs=1e-3)


# --- promotion policies ---------------------------------------------------------------------


def test_promote_never_registers_a_candidate(ctx, never):
    assert not never.promoted and never.reason == "promote=never"
    assert never.champion_id is None
    assert _version(ctx, never.model_version_id).stage == "candidate"


def test_promote_always_makes_the_new_version_production(ctx, never, always):
    assert always.promoted and always.reason == "promote=always"
    assert always.version == 2 and always.champion_id is None  # the first was never promoted
    assert _production_id(ctx) == always.model_version_id
    assert _version(ctx, never.model_version_id).stage == "candidate"


def test_automatic_promotion_records_its_reason(ctx, always, auto):
    mv = _version(ctx, auto.model_version_id)
    m = mv.metrics
    assert auto.champion_id == always.model_version_id == mv.parent_id
    assert auto.reason and m["promotion"] == auto.reason
    assert m["reviewed_findings"] == 1
    # the champion made the reviewed finding, so it reproduces it: it disagrees with
    # the reviewer's "model_wrong"
    assert m["champion_reviewer_agreement"] == 0.0
    assert m["reviewer_agreement"] in (0.0, 1.0)
    challenger = Judged(m["oof_iou"], int(m["reviewer_agreement"]), 1)
    champion = Judged(m["champion_val_iou"], 0, 1)
    expected = decide(challenger, champion)
    assert (auto.promoted, auto.reason) == (expected.promote, expected.reason)
    production = auto.model_version_id if auto.promoted else always.model_version_id
    assert _production_id(ctx) == production


# --- warm starts ----------------------------------------------------------------------------


def test_warm_start_reuses_the_champions_folds(ctx, always, auto):
    champion = _production_id(ctx)
    name = "lal-warm"
    register_aoi(
        ctx,
        lalitpur_config(
            name, model={"name": NAME, "encoder": MNV3, "train": {**TRAIN, "max_steps": 1}}
        ),
    )
    out = train_aoi_model(ctx, name, [STEP], promote="never", warm_start=True)
    assert out.champion_id == champion
    champion_plan, _, _ = _fold_set(ctx, champion)
    warm, _, _ = _fold_set(ctx, out.model_version_id)
    assert warm.plan == champion_plan.plan


def test_warm_start_from_a_champion_with_other_folds_is_refused(ctx, always):
    name = "lal-three"
    model = {"name": NAME, "encoder": MNV3, "train": {**TRAIN, "folds": 3}}
    register_aoi(ctx, lalitpur_config(name, model=model))
    with pytest.raises(ConfigError, match=r"same folds \(2 vs 3\)"):
        train_aoi_model(ctx, name, [STEP], promote="never", warm_start=True)


def test_warm_start_of_a_one_fold_model_from_a_fold_set_is_refused(ctx, always):
    name = "lal-one"
    model = {"name": NAME, "encoder": MNV3, "train": {**TRAIN, "folds": 1}}
    register_aoi(ctx, lalitpur_config(name, model=model))
    with pytest.raises(ConfigError, match="same folds"):
        train_aoi_model(ctx, name, [STEP], promote="never", warm_start=True)


def test_warm_start_from_a_champion_of_another_network_is_refused(ctx, always):
    name = "lal-lite0-warm"
    register_aoi(ctx, lalitpur_config(name, model={"name": NAME, "train": TRAIN}))  # default
    with pytest.raises(
        ConfigError, match=r"same network \(tu-mobilenetv3_small_100 vs tu-tf_efficientnet_lite0\)"
    ):
        train_aoi_model(ctx, name, [STEP], promote="never", warm_start=True)


def _imagenet_similarity(model, encoder: str) -> float:
    """Cosine similarity of a network's stem with the packaged ImageNet stem."""
    from pipeline.model.pretrained import packaged_weights

    imagenet = torch.load(packaged_weights(encoder), weights_only=True)["_conv_stem.weight"]
    stem = model.encoder.state_dict()["model.conv_stem.weight"]
    assert not torch.equal(stem, imagenet)  # trained, not merely loaded
    return float(torch.nn.functional.cosine_similarity(stem.flatten(), imagenet.flatten(), 0))


def test_a_base_model_starts_from_the_packaged_weights_too(ctx):
    name = "lal-base-source"
    register_aoi(ctx, lalitpur_config(name, model={"name": name, "train": TRAIN}))
    out = train_base_model(ctx, [name], name="base-lite0", max_steps=2)
    (base,) = load_model_version(ctx, out.model_version_id).models
    assert base.spec.encoder == "tu-tf_efficientnet_lite0"
    assert _imagenet_similarity(base, base.spec.encoder) > 0.99


def test_an_encoder_with_packaged_weights_trains_from_them(ctx):
    """An AOI (by default EfficientNet-Lite0) starts every fold model from the ImageNet
    weights its package ships; a few warm-up steps leave them nearly where they were."""

    name = "lal-lite0"
    encoder = "tu-tf_efficientnet_lite0"
    model = {"name": name, "train": TRAIN}
    register_aoi(ctx, lalitpur_config(name, model=model))
    outcome = train_aoi_model(ctx, name, [STEP], promote="never")
    folds = load_model_version(ctx, outcome.model_version_id)
    assert folds.models[0].spec.encoder == encoder and len(folds.models) == 2
    for model in folds.models:
        assert _imagenet_similarity(model, encoder) > 0.99


# --- agreement with reviewers ---------------------------------------------------------------


def _predicted_share(ctx: Context, run_id: int, geometry, tile: Tile, folds) -> float:
    """Share of a finding's pixels the fold set predicts as building, from a prediction of
    the whole shard."""
    import geopandas as gpd

    inputs = load_run_inputs(ctx, run_id)
    shard = shard_of(tile, inputs.aoi.shard_zoom)
    image = read_shard_image(ctx, inputs.imagery.shards[shard.id])
    prob = predict_fold_set(folds, image.data, shard, valid=image.valid, device=ctx.device)
    geom = gpd.GeoSeries([geometry], crs=4326).to_crs(3857).iloc[0]
    inside = geometry_mask([geom], out_shape=prob.shape, transform=shard_transform(shard))
    inside = ~inside & image.valid
    assert inside.any()
    return float(np.mean(prob[inside] >= 0.5))


def test_reviewer_agreement_follows_agrees_for_every_verdict(
    ctx, config, always, audited, finding_id
):
    folds = load_model_version(ctx, always.model_version_id)
    with Session(ctx.engine) as s:
        f = s.get(Finding, finding_id)
        kind, geometry, run_id = f.kind, f.geometry, f.run_id
        tile = Tile(f.tile_x, f.tile_y, f.tile_z)
    assert run_id == audited.run_id
    share = _predicted_share(ctx, run_id, geometry, tile, folds)
    assert share >= 0.5  # the model that made the finding predicts it again
    try:
        for verdict, expected in (
            ("label_wrong", 1),
            ("real_change", 1),
            ("model_wrong", 0),
            ("ok", 0),
        ):
            _review(ctx, finding_id, verdict)
            assert int(agrees(kind, verdict, share)) == expected
            assert reviewer_agreement(ctx, config, folds) == (expected, 1), verdict
    finally:
        _review(ctx, finding_id, "model_wrong")


def test_no_reviews_no_agreement(ctx, always):
    name = "lal-unreviewed"
    other = register_aoi(ctx, lalitpur_config(name, model={"train": TRAIN}))
    folds = load_model_version(ctx, always.model_version_id)
    assert reviewer_agreement(ctx, other, folds) == (0, 0)
