"""The prediction runtimes: the choice by setting and device, and ONNX Runtime giving
the trained model's PyTorch probabilities on the audit path (fold sets, regions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import ModelError
from pipeline.model.export import export_onnx
from pipeline.model.folds import FoldPlan, FoldSet
from pipeline.model.net import build_model
from pipeline.model.predict import predict_fold_set
from pipeline.model.runtime import OnnxNet, choose_runtime
from pipeline.tiles import Shard, Tile, shard_tiles

from .conftest import random_image

SHARD = Shard(Tile(193348, 110131, 18), 20)  # 4 x 4 work tiles, 1024 px
CUDA = torch.device("cuda")


def test_the_runtime_follows_the_setting_and_the_device(cpu):
    assert choose_runtime("auto", cpu) == "torch"
    assert choose_runtime("auto", CUDA) == "torch"
    assert choose_runtime("torch", cpu) == "torch"
    assert choose_runtime("onnx", cpu) == "onnx"
    with pytest.raises(ModelError, match="runs on the CPU only"):
        choose_runtime("onnx", CUDA)
    with pytest.raises(ModelError, match="'tensorrt' is not one of auto, torch, onnx"):
        choose_runtime("tensorrt", cpu)


def test_onnx_runtime_gives_the_torch_probabilities_on_the_audit_path(trained, cpu, tmp_path):
    """A two-fold set of the trained model (the second with another head bias) predicts
    a 1024 px shard per tile and in regions: ONNX Runtime and PyTorch agree to float rounding."""
    other = build_model(trained.spec)
    other.load_state_dict(trained.model.state_dict())
    with torch.no_grad():
        other.net.segmentation_head[0].bias += 0.5
    models = [trained.model.eval(), other.eval()]
    tiles = shard_tiles(SHARD)
    plan = FoldPlan(2, 20, {str(t): i % 2 for i, t in enumerate(tiles)})
    nets = [
        OnnxNet(
            export_onnx(model, trained.spec, tmp_path / f"fold{i}.onnx"),
            output_stride=trained.spec.output_stride,
            threads=2,
        )
        for i, model in enumerate(models)
    ]
    image = random_image(1024, 1024, seed=5)
    valid = np.ones((1024, 1024), bool)
    valid[:, 900:] = False
    for side in (1, 4):  # one window per tile, and regions
        expected = predict_fold_set(
            FoldSet(models, plan), image, SHARD, valid=valid, region_side=side, device=cpu
        )
        got = predict_fold_set(
            FoldSet(nets, plan), image, SHARD, valid=valid, region_side=side, device=cpu
        )
        np.testing.assert_allclose(got, expected, atol=1e-4)
    assert got.dtype == np.float32 and got.shape == (1024, 1024)
    assert np.all(got[~valid] == 0)
    assert (got >= 0.5).sum() > 0  # the trained model sees buildings somewhere


def test_an_onnx_net_only_predicts(trained, tmp_path):
    net = OnnxNet(
        export_onnx(trained.model, trained.spec, tmp_path / "model.onnx"),
        output_stride=trained.spec.output_stride,
        threads=1,
    )
    assert net.eval() is net and net.train() is net and net.to("cpu") is net
    assert not net.training
    x = (
        torch.from_numpy(random_image(64, 96)[None])
        .float()
        .contiguous(memory_format=torch.channels_last)
    )
    with torch.no_grad():
        expected = trained.model.eval()(x)
    torch.testing.assert_close(net(x), expected, atol=1e-4, rtol=1e-4)


def test_a_broken_onnx_file_is_named(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a network")
    with pytest.raises(ModelError, match=r"broken\.onnx: ONNX Runtime cannot load the network"):
        OnnxNet(broken, output_stride=32, threads=1)
