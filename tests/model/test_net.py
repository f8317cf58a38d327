from __future__ import annotations

import logging

import pytest
import torch

from pipeline.errors import ModelError
from pipeline.model.net import GeoAuditNet, ModelSpec, build_model


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(),
        ModelSpec(
            arch="unetplusplus", encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8)
        ),
        ModelSpec(arch="fpn", encoder="tu-mobilenetv3_small_100", decoder_channels=(32, 32)),
        ModelSpec(encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8), in_channels=4),
    ],
    ids=["default", "unetplusplus", "fpn", "4-band"],
)
def test_build_gives_full_resolution_logits(spec):
    model = build_model(spec).eval()
    assert isinstance(model, GeoAuditNet) and model.output_stride == 2**spec.encoder_depth
    with torch.no_grad():
        out = model(torch.rand(2, spec.in_channels, 64, 96) * 255)
    assert out.shape == (2, 1, 64, 96) and torch.isfinite(out).all()


def test_spec_round_trips_through_a_plain_dict():
    spec = ModelSpec(arch="fpn", encoder="resnet18", encoder_depth=4, decoder_channels=(64, 32))
    d = spec.to_dict()
    assert d["decoder_channels"] == [64, 32]
    assert ModelSpec.from_dict(d) == spec


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"arch": "deeplab"}, "arch 'deeplab'"),
        ({"encoder": "resnet1234"}, "not a segmentation-models-pytorch encoder"),
        ({"encoder_depth": 3}, "need 3 positive values"),
        ({"encoder_depth": 6, "decoder_channels": (8,) * 6}, "must be in 1..5"),
        ({"arch": "fpn", "decoder_channels": ()}, "need 1 or more positive values"),
        ({"arch": "fpn", "decoder_channels": (64, 16)}, "multiple of 32"),
        ({"decoder_channels": (8, 8, 0, 8)}, "need 4 positive values"),
        ({"in_channels": 0}, "in_channels 0"),
    ],
)
def test_bad_specs_are_rejected(kwargs, fragment):
    with pytest.raises(ModelError, match=fragment):
        ModelSpec(**kwargs)


def test_same_seed_same_weights():
    torch.manual_seed(5)
    a = build_model(ModelSpec())
    torch.manual_seed(5)
    b = build_model(ModelSpec())
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("prefix", ["", "encoder.", "net.encoder."])
def test_encoder_weights_from_a_local_file(tmp_path, prefix):
    spec = ModelSpec(encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8))
    torch.manual_seed(1)
    donor = build_model(spec)
    state = {prefix + k: v for k, v in donor.encoder.state_dict().items()}
    state["fc.weight"] = torch.zeros(10, 512)  # a classifier head is ignored
    path = tmp_path / "encoder.pt"
    torch.save(state, path)
    torch.manual_seed(2)
    model = build_model(spec, encoder_weights=path)
    for k, v in donor.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[k], v), k
    assert not torch.equal(
        model.net.segmentation_head[0].weight, donor.net.segmentation_head[0].weight
    )


def test_encoder_weights_that_do_not_fit_are_an_error(tmp_path):
    resnet = ModelSpec(encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8))
    path = tmp_path / "resnet18.pt"
    torch.save(build_model(resnet).encoder.state_dict(), path)
    with pytest.raises(ModelError, match="do not fit encoder 'tu-mobilenetv3_small_100'"):
        build_model(ModelSpec(), encoder_weights=path)
    four_band = ModelSpec(
        encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8), in_channels=4
    )
    with pytest.raises(ModelError, match="shape mismatch"):
        build_model(four_band, encoder_weights=path)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelError, match="not a readable encoder state dict"):
        build_model(resnet, encoder_weights=text)
    with pytest.raises(ModelError, match="does not exist"):
        build_model(resnet, encoder_weights=tmp_path / "missing.pt")


def test_hub_unavailable_falls_back_to_random_init(monkeypatch, tmp_path, caplog):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no network, empty cache
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="pipeline.model.net"):
        model = build_model(ModelSpec(), allow_hub=True)
    assert isinstance(model, GeoAuditNet)
    assert "using random init" in caplog.text
