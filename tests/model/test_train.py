from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.model.checkpoint import load_model
from pipeline.model.dataset import TrainingSample
from pipeline.model.net import ModelSpec
from pipeline.model.train import TrainConfig, evaluate_iou, lr_at, train_model


def test_short_training_beats_trivial_baselines(trained, town):
    _, val = town
    labels = np.concatenate([s.label[s.valid] for s in val])
    all_building_iou = labels.mean()  # IoU of predicting "building" everywhere
    assert trained.steps == 120
    assert trained.val_iou > max(0.5, 2 * all_building_iou)
    assert [h["step"] for h in trained.history] == [60, 120]
    assert trained.val_iou == max(h["val_iou"] for h in trained.history)
    assert trained.best_checkpoint.is_file()
    assert not trained.model.training


class Constant(nn.Module):
    output_stride = 1

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :1], self.logit)


def _sample(label: np.ndarray, valid: np.ndarray) -> TrainingSample:
    return TrainingSample(np.zeros((3, *label.shape), np.uint8), label.astype(np.uint8), valid)


def test_evaluate_iou_is_micro_over_valid_pixels(cpu):
    a = np.zeros((8, 8), bool)
    a[:2] = True  # 16 building pixels
    valid = np.ones((8, 8), bool)
    valid[7] = False  # 8 background pixels excluded
    b = np.zeros((600, 600), bool)  # a big sample takes the mosaic path
    b[:100, :100] = True
    samples = [_sample(a, valid), _sample(b, np.ones_like(b))]
    assert evaluate_iou(Constant(5.0), samples, device=cpu) == pytest.approx(
        (16 + 10_000) / (56 + 360_000)
    )
    assert evaluate_iou(Constant(-5.0), samples, device=cpu) == 0.0
    empty = [_sample(np.zeros((8, 8), bool), valid)]
    assert evaluate_iou(Constant(-5.0), empty, device=cpu) == 1.0


def test_one_cycle_schedule_shape():
    cfg = TrainConfig(lr=1e-3, warmup=0.2, final_lr_ratio=0.01)
    assert lr_at(0.0, cfg) == pytest.approx(4e-5)
    assert lr_at(0.2, cfg) == pytest.approx(1e-3)
    assert lr_at(1.0, cfg) == pytest.approx(1e-5)
    values = [lr_at(p, cfg) for p in np.linspace(0.2, 1.0, 20)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"max_seconds": None}, "at least one of"),
        ({"batch_size": 0}, "batch_size 0"),
        ({"warmup": 1.0}, "warmup"),
        ({"val_every": -1}, "val_every"),
    ],
)
def test_bad_configs_are_rejected(kwargs, fragment):
    with pytest.raises(ModelError, match=fragment):
        TrainConfig(**kwargs)


def test_time_budget_stops_training(town, spec, cpu):
    train, val = town
    cfg = TrainConfig(chip_size=64, batch_size=4, max_seconds=3.0, val_every=0)
    result = train_model(train, val[:1], spec, cfg, device=cpu)
    assert result.steps > 0 and math.isfinite(result.val_iou)
    assert result.seconds < 3.0 + 10.0  # one step and the final validation may overrun


def test_fine_tuning_starts_from_the_given_model(trained, town, spec, cpu, tmp_path):
    train, val = town
    cfg = TrainConfig(chip_size=64, batch_size=4, max_steps=1, max_seconds=None, lr=1e-7)
    result = train_model(train, val, spec, cfg, device=cpu, init_from=trained.model)
    # one step at a tiny learning rate: the weights are still the given model's
    # (batch-norm running statistics move with any step, so compare parameters)
    start = dict(trained.model.named_parameters())
    for name, param in result.model.named_parameters():
        assert torch.allclose(param.cpu(), start[name].cpu(), atol=1e-4), name
    other = ModelSpec(decoder_channels=(64, 32, 16, 8))
    with pytest.raises(ModelError, match="init_from: weights do not fit"):
        train_model(train, val, other, cfg, device=cpu, init_from=trained.model)


def test_without_validation_the_last_weights_are_saved(town, spec, cpu, tmp_path):
    train, _ = town
    cfg = TrainConfig(chip_size=64, batch_size=4, max_steps=2, max_seconds=None)
    result = train_model(train, [], spec, cfg, device=cpu, checkpoint_dir=tmp_path)
    assert math.isnan(result.val_iou) and result.steps == 2
    _, _, meta = load_model(result.best_checkpoint, device=cpu)
    assert meta["step"] == 2


def test_same_seed_same_model(town, spec, cpu):
    train, _ = town
    cfg = TrainConfig(chip_size=64, batch_size=4, max_steps=3, max_seconds=None, seed=9)
    a = train_model(train, [], spec, cfg, device=cpu).model.state_dict()
    b = train_model(train, [], spec, cfg, device=cpu).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
