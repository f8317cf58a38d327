from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from pipeline.errors import ModelError
from pipeline.model.checkpoint import FORMAT_VERSION, load_fold_set, load_model, save_model
from pipeline.model.folds import FoldPlan, FoldSet
from pipeline.model.net import ModelSpec, build_model
from pipeline.tiles import Tile

from .conftest import random_image


@pytest.fixture()
def model_and_spec():
    spec = ModelSpec()
    torch.manual_seed(3)
    model = build_model(spec)
    # make BatchNorm statistics non-trivial so they must round-trip too
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 64, 64) * 255)
    return model.eval(), spec


def test_round_trip_gives_identical_outputs(model_and_spec, tmp_path, cpu):
    model, spec = model_and_spec
    path = tmp_path / "m" / "model.pt"
    digest = save_model(model, spec, path, meta={"val_iou": 0.83, "aoi": "demo", "tiles": [1, 2]})
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded, spec2, meta = load_model(path, device=cpu)
    assert spec2 == spec and meta == {"val_iou": 0.83, "aoi": "demo", "tiles": [1, 2]}
    assert not loaded.training
    x = torch.from_numpy(random_image(128, 128)).float()[None]
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_trained_checkpoint_reproduces_the_result_model(trained, town, cpu):
    loaded, spec, meta = load_model(trained.best_checkpoint, device=cpu)
    assert spec == trained.spec and meta["val_iou"] == pytest.approx(trained.val_iou)
    saved, kept = loaded.state_dict(), trained.model.state_dict()
    assert saved.keys() == kept.keys()
    assert all(torch.equal(saved[k], kept[k]) for k in saved)
    image = torch.from_numpy(town[1][0].image).float()[None]
    with torch.no_grad():
        # Same weights; oneDNN may pick kernels by memory layout, so allow float rounding.
        torch.testing.assert_close(loaded(image), trained.model(image), rtol=1e-5, atol=1e-4)


def test_meta_must_be_json(model_and_spec, tmp_path):
    model, spec = model_and_spec
    with pytest.raises(ModelError, match="JSON-serialisable"):
        save_model(model, spec, tmp_path / "m.pt", meta={"when": object()})


def _random_bytes(path):
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _text(path):
    path.write_text("this is not a model\n" * 10)


def _foreign_torch_file(path):
    torch.save({"weights": torch.zeros(3), "epoch": 4}, path)


def _bare_state_dict(path):
    torch.save(build_model(ModelSpec()).state_dict(), path)


def _pickled_object(path):
    torch.save({"format": "geoaudit-model", "obj": ModelSpec()}, path)  # needs unpickling code


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize(
    "make", [_random_bytes, _text, _foreign_torch_file, _bare_state_dict, _pickled_object, _empty]
)
def test_load_rejects_files_that_are_not_models(tmp_path, cpu, make):
    path = tmp_path / "model.pt"
    make(path)
    with pytest.raises(ModelError, match="not a GeoAudit model file"):
        load_model(path, device=cpu)


def test_load_rejects_weights_that_do_not_fit_the_spec(model_and_spec, tmp_path, cpu):
    model, _ = model_and_spec
    other = ModelSpec(decoder_channels=(64, 32, 16, 8))
    save_model(model, other, tmp_path / "m.pt", meta={})
    with pytest.raises(ModelError, match="weights do not fit the stored spec"):
        load_model(tmp_path / "m.pt", device=cpu)


def test_load_missing_file(tmp_path, cpu):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.pt", device=cpu)


# --- fold sets (format version 2) ---------------------------------------------------------


def _seeded(spec: ModelSpec, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(spec).eval()


def _outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


@pytest.fixture(scope="module")
def fold_set():
    spec = ModelSpec()
    plan = FoldPlan(2, 20, {"20/773394/440526": 0, "20/773395/440526": 1})
    return FoldSet([_seeded(spec, 1), _seeded(spec, 2)], plan), spec


def test_fold_set_round_trip_keeps_plan_and_every_fold(fold_set, tmp_path, cpu):
    folds, spec = fold_set
    path = tmp_path / "folds.pt"
    digest = save_model(folds, spec, path, meta={"folds": 2})
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["format_version"] == FORMAT_VERSION == 2
    assert payload["folds"]["plan"] == folds.plan.to_dict()
    assert len(payload["folds"]["state_dicts"]) == 2

    loaded, spec2, meta = load_fold_set(path, device=cpu)
    assert spec2 == spec and meta == {"folds": 2}
    assert loaded.k == 2 and loaded.plan == folds.plan
    x = torch.from_numpy(random_image(32, 32)).float()[None]
    for original, back in zip(folds.models, loaded.models, strict=True):
        assert not back.training
        assert torch.equal(_outputs(original, x), _outputs(back, x))
    # the folds really are different networks, and model_for follows the stored plan
    assert not torch.equal(_outputs(loaded.models[0], x), _outputs(loaded.models[1], x))
    tile = Tile(773395, 440526, 20)
    assert loaded.model_for(tile) is loaded.models[1]


def test_load_model_of_a_fold_set_file_is_its_first_fold(fold_set, tmp_path, cpu):
    folds, spec = fold_set
    save_model(folds, spec, tmp_path / "folds.pt", meta={})
    model, _, _ = load_model(tmp_path / "folds.pt", device=cpu)
    x = torch.from_numpy(random_image(32, 32, seed=5)).float()[None]
    assert torch.equal(_outputs(model, x), _outputs(folds.models[0], x))
    assert not torch.equal(_outputs(model, x), _outputs(folds.models[1], x))


def test_plain_model_file_loads_as_a_one_fold_set(model_and_spec, tmp_path, cpu):
    model, spec = model_and_spec
    save_model(model, spec, tmp_path / "plain.pt", meta={"kind": "plain"})
    payload = torch.load(tmp_path / "plain.pt", map_location="cpu", weights_only=True)
    assert "folds" not in payload
    folds, spec2, meta = load_fold_set(tmp_path / "plain.pt", device=cpu)
    assert folds.k == 1 and folds.plan == FoldPlan(1, 0) and spec2 == spec
    assert meta == {"kind": "plain"}
    x = torch.from_numpy(random_image(64, 64)).float()[None]
    assert torch.equal(_outputs(folds.model_for(Tile(1, 2, 20)), x), _outputs(model, x))


def test_one_fold_set_is_saved_as_a_plain_model(model_and_spec, tmp_path, cpu):
    model, spec = model_and_spec
    save_model(FoldSet.single(model), spec, tmp_path / "one.pt", meta={})
    payload = torch.load(tmp_path / "one.pt", map_location="cpu", weights_only=True)
    assert "folds" not in payload
    loaded, _, _ = load_model(tmp_path / "one.pt", device=cpu)
    x = torch.from_numpy(random_image(64, 64)).float()[None]
    assert torch.equal(_outputs(loaded, x), _outputs(model, x))


def test_version_1_files_still_load_and_newer_ones_are_refused(model_and_spec, tmp_path, cpu):
    model, spec = model_and_spec
    path = tmp_path / "m.pt"
    save_model(model, spec, path, meta={})
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload["format_version"] = 1
    torch.save(payload, tmp_path / "v1.pt")
    folds, _, _ = load_fold_set(tmp_path / "v1.pt", device=cpu)
    assert folds.k == 1
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, tmp_path / "v3.pt")
    with pytest.raises(ModelError, match="newer than this GeoAudit"):
        load_fold_set(tmp_path / "v3.pt", device=cpu)
    with pytest.raises(ModelError, match="newer than this GeoAudit"):
        load_model(tmp_path / "v3.pt", device=cpu)


def test_fold_set_with_a_malformed_plan_is_refused(fold_set, tmp_path, cpu):
    folds, spec = fold_set
    path = tmp_path / "folds.pt"
    save_model(folds, spec, path, meta={})
    payload = torch.load(path, map_location="cpu", weights_only=True)
    del payload["folds"]["plan"]["k"]
    torch.save(payload, path)
    with pytest.raises(ModelError, match="fold plan is malformed"):
        load_fold_set(path, device=cpu)


def test_fold_set_weights_must_fit_the_spec(fold_set, tmp_path, cpu):
    folds, _ = fold_set
    other = ModelSpec(decoder_channels=(64, 32, 16, 8))
    save_model(folds, other, tmp_path / "folds.pt", meta={})
    with pytest.raises(ModelError, match="weights do not fit the stored spec"):
        load_fold_set(tmp_path / "folds.pt", device=cpu)


def test_fold_set_files_refuse_missing(tmp_path, cpu):
    with pytest.raises(ModelError, match="does not exist"):
        load_fold_set(tmp_path / "nope.pt", device=cpu)
    (tmp_path / "text.pt").write_text("not a model")
    with pytest.raises(ModelError, match="not a GeoAudit model file"):
        load_fold_set(tmp_path / "text.pt", device=cpu)
