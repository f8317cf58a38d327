from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.model.losses import IGNORE, LovaszBCELoss, masked_target


@pytest.fixture()
def target() -> torch.Tensor:
    t = torch.zeros(2, 16, 16, dtype=torch.uint8)
    t[0, 4:10, 3:12] = 1
    t[1, 8:, 8:] = 1
    return t


def logits_for(target: torch.Tensor, margin: float = 10.0) -> torch.Tensor:
    return (target.float() * 2 - 1).unsqueeze(1) * margin


def test_perfect_prediction_has_low_loss_and_wrong_has_high(target):
    loss = LovaszBCELoss()
    assert loss(logits_for(target), target) < 1e-3
    assert loss(-logits_for(target), target) > 5.0


def test_lovasz_of_undecided_logits_is_one(target):
    # all hinge errors are 1: the Lovász extension of the Jaccard loss sums to 1
    lovasz = LovaszBCELoss(bce_weight=0.0, lovasz_weight=1.0)
    assert lovasz(torch.zeros(2, 1, 16, 16), target).item() == pytest.approx(1.0)


def test_bce_is_mean_over_valid_pixels_only(target):
    logits = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    valid = torch.ones(2, 16, 16, dtype=torch.bool)
    valid[:, :, :5] = False
    bce = LovaszBCELoss(bce_weight=1.0, lovasz_weight=0.0)
    expected = F.binary_cross_entropy_with_logits(logits[:, 0][valid], target[valid].float())
    assert bce(logits, target, valid).item() == pytest.approx(expected.item(), rel=1e-5)


def test_ignored_pixels_do_not_count(target):
    valid = torch.ones(2, 16, 16, dtype=torch.bool)
    valid[:, :, 12:] = False
    wrong_where_ignored = logits_for(target).clone()
    wrong_where_ignored[:, :, :, 12:] *= -1  # confidently wrong, but only outside valid
    wrong_where_ignored.requires_grad_(True)
    loss = LovaszBCELoss()(wrong_where_ignored, target, valid)
    assert loss < 1e-3
    loss.backward()
    assert torch.all(wrong_where_ignored.grad[:, 0][~valid] == 0)
    # the same logits count when the mask is absent
    assert LovaszBCELoss()(wrong_where_ignored.detach(), target) > 1.0


def test_all_ignored_gives_zero_loss_and_finite_gradient(target):
    logits = torch.randn(2, 1, 16, 16, requires_grad=True)
    loss = LovaszBCELoss()(logits, target, torch.zeros(2, 16, 16, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(logits.grad == 0)


def test_masked_target_marks_invalid_pixels(target):
    valid = torch.zeros(2, 16, 16, dtype=torch.bool)
    valid[0] = True
    y = masked_target(target, valid)
    assert torch.equal(y[0], target[0].long())
    assert torch.all(y[1] == IGNORE)


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_matches_smp_reference_in_value_and_gradient(per_image):
    from segmentation_models_pytorch.losses import LovaszLoss

    g = torch.Generator().manual_seed(1)
    target = (torch.rand(3, 20, 24, generator=g) < 0.3).to(torch.uint8)
    valid = torch.rand(3, 20, 24, generator=g) < 0.8
    base = torch.randn(3, 1, 20, 24, generator=g) * 2
    ours_in = base.clone().requires_grad_(True)
    ref_in = base.clone().requires_grad_(True)
    ours = LovaszBCELoss(bce_weight=0.0, per_image=per_image)(ours_in, target, valid)
    ref = LovaszLoss("binary", per_image=per_image, ignore_index=IGNORE)(
        ref_in, masked_target(target, valid)
    )
    ours.backward()
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-5, atol=1e-7)
