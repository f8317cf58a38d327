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
from pipeline.model.train import (
    TrainConfig,
    evaluate_counts,
    evaluate_iou,
    iou_of,
    lr_at,
    train_model,
)


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


# --- pixel counts and the IoU of counts ---------------------------------------------------


class RedAbove(nn.Module):
    """Pointwise: building where the red band is >= 128."""

    output_stride = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] - 127.5) * 0.1


def _patterned(h: int, w: int, seed: int) -> TrainingSample:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
    label = rng.random((h, w)) < 0.3
    valid = rng.random((h, w)) < 0.8
    return TrainingSample(image, label.astype(np.uint8), valid)


def _expected_counts(samples: list[TrainingSample]) -> tuple[int, int, int]:
    tp = fp = fn = 0
    for s in samples:
        pred, lab = (s.image[0] >= 128)[s.valid], s.label.astype(bool)[s.valid]
        tp += int((pred & lab).sum())
        fp += int((pred & ~lab).sum())
        fn += int((~pred & lab).sum())
    return tp, fp, fn


def test_evaluate_counts_are_tp_fp_fn_over_valid_pixels(cpu):
    # two shapes batched directly, one big sample through the mosaic path
    samples = [_patterned(16, 16, 0), _patterned(16, 16, 1), _patterned(24, 40, 2)]
    samples.append(_patterned(520, 530, 3))
    expected = _expected_counts(samples)
    assert all(c > 0 for c in expected)
    got = evaluate_counts(RedAbove(), samples, device=cpu, batch_size=1)
    assert got == expected and all(type(c) is int for c in got)
    assert evaluate_counts(RedAbove(), samples[::-1], device=cpu, batch_size=8) == expected
    assert evaluate_iou(RedAbove(), samples, device=cpu) == pytest.approx(iou_of(expected))
    assert evaluate_counts(RedAbove(), [], device=cpu) == (0, 0, 0)


def test_evaluate_counts_of_constant_models(cpu):
    label = np.zeros((8, 8), np.uint8)
    label[:3] = 1  # 24 building pixels
    valid = np.ones((8, 8), bool)
    valid[:, 0] = False  # 3 building and 5 background pixels excluded
    samples = [_sample(label, valid)]
    assert evaluate_counts(Constant(5.0), samples, device=cpu) == (21, 35, 0)
    assert evaluate_counts(Constant(-5.0), samples, device=cpu) == (0, 0, 21)


@pytest.mark.parametrize(
    "counts,iou",
    [((0, 0, 0), 1.0), ((3, 1, 2), 0.5), ((0, 5, 0), 0.0), ((0, 0, 5), 0.0), ((7, 0, 0), 1.0)],
)
def test_iou_of_counts(counts, iou):
    assert iou_of(counts) == pytest.approx(iou)


def test_pooled_counts_are_not_the_mean_of_ious():
    # out-of-fold IoU pools counts over folds: a big fold weighs more than a small one
    big, small = (90, 10, 0), (1, 0, 9)
    pooled = tuple(a + b for a, b in zip(big, small, strict=True))
    assert iou_of(pooled) == pytest.approx(91 / 110)
    assert iou_of(pooled) != pytest.approx((iou_of(big) + iou_of(small)) / 2)
