from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pipeline.model.export import FoldEnsemble, export_onnx, export_torchscript, servable

from .conftest import random_image


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    # another batch size and shape than the 1 x 256 x 256 export example
    return torch.from_numpy(np.stack([random_image(128, 192, s) for s in range(2)])).float()


def test_onnx_matches_torch_with_dynamic_shapes(trained, tmp_path, batch):
    path = export_onnx(trained.model, trained.spec, tmp_path / "model.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["geoaudit_spec"]) == trained.spec.to_dict()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"image": batch.numpy()})
    with torch.no_grad():
        expected = trained.model.eval()(batch).numpy()
    assert got.shape == expected.shape == (2, 1, 128, 192)
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=1e-3)


def test_torchscript_matches_torch(trained, tmp_path, batch):
    path = export_torchscript(trained.model, trained.spec, tmp_path / "model.ts")
    extra = {"geoaudit_spec.json": ""}
    scripted = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["geoaudit_spec.json"]) == trained.spec.to_dict()
    with torch.no_grad():
        np.testing.assert_allclose(
            scripted(batch).numpy(), trained.model.eval()(batch).numpy(), atol=1e-4, rtol=1e-4
        )


def test_a_fold_set_exports_as_the_mean_of_its_fold_models(trained, tmp_path, batch):
    """A version trained in folds is served as one network: the mean of the folds' logits."""
    import copy

    other = copy.deepcopy(trained.model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.9)
    assert servable([trained.model]) is trained.model
    ensemble = servable([trained.model, other])
    assert isinstance(ensemble, FoldEnsemble)
    path = export_onnx(ensemble, trained.spec, tmp_path / "folds.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"image": batch.numpy()})
    with torch.no_grad():
        expected = (trained.model.eval()(batch) + other.eval()(batch)).numpy() / 2
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=1e-3)
