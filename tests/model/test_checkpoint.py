from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from pipeline.errors import ModelError
from pipeline.model.checkpoint import load_model, save_model
from pipeline.model.net import ModelSpec, build_model

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
