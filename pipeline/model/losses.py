"""Training loss: binary cross-entropy + Lovász hinge, restricted to valid pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = 255  # label value marking pixels that do not count (no imagery, excluded)


def masked_target(target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Labels ``(N, H, W)`` in {0, 1} with invalid pixels set to :data:`IGNORE`."""
    target = target.long()
    if valid is None:
        return target
    return torch.where(valid.bool(), target, torch.full_like(target, IGNORE))


def lovasz_hinge_flat(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary Lovász hinge (Berman et al. 2018) of flat ``logits`` and {0, 1} ``labels``.

    ``loss = sum_i relu(e_(i)) * g_i`` with hinge errors ``e = 1 - logit * (2y - 1)`` sorted
    in decreasing order and ``g`` the discrete gradient of the Jaccard loss along that
    order: ``J_k = 1 - (P - cumsum(y)_k) / (P + cumsum(1 - y)_k)``, ``g_k = J_k - J_(k-1)``,
    ``P = sum y``. Same value and gradient as ``smp.losses.LovaszLoss("binary")``, but only
    the pixels with a positive error are sorted (``J_k`` needs prefix sums only and
    ``relu(e) = 0`` elsewhere), which makes the loss several times cheaper once most pixels
    are confidently right.
    """
    if labels.numel() == 0:
        return logits.sum() * 0.0
    labels = labels.to(logits.dtype)
    errors = 1.0 - logits * (2.0 * labels - 1.0)
    positive = errors > 0
    errors, labels_pos = errors[positive], labels[positive]
    if errors.numel() == 0:
        return logits.sum() * 0.0
    errors_sorted, perm = torch.sort(errors, descending=True)
    gt_sorted = labels_pos[perm]
    total = labels.sum()
    jaccard = 1.0 - (total - gt_sorted.cumsum(0)) / (total + (1.0 - gt_sorted).cumsum(0))
    grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return torch.dot(errors_sorted, grad)


class LovaszBCELoss(nn.Module):
    """``bce_weight * BCE + lovasz_weight * LovaszHinge`` over valid pixels only.

    BCE is the mean of ``-(y log p + (1 - y) log(1 - p))`` over valid pixels (0 when none
    is valid); the Lovász hinge (:func:`lovasz_hinge_flat`) is a convex surrogate of
    ``1 - IoU`` over the valid pixels of the whole batch (``per_image=False``) or averaged
    per image. Inputs: logits ``(N, 1, H, W)`` or ``(N, H, W)``, target ``(N, H, W)`` in
    {0, 1}, ``valid`` ``(N, H, W)`` bool or None (all valid).
    """

    def __init__(
        self, bce_weight: float = 1.0, lovasz_weight: float = 1.0, *, per_image: bool = False
    ) -> None:
        super().__init__()
        self.bce_weight = bce_weight
        self.lovasz_weight = lovasz_weight
        self.per_image = per_image

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        if logits.dim() == 4:
            logits = logits[:, 0]
        logits = logits.float()
        y = masked_target(target, valid)
        keep = y != IGNORE
        loss = logits.new_zeros(())
        if self.bce_weight:
            bce = F.binary_cross_entropy_with_logits(logits, (y == 1).float(), reduction="none")
            n = keep.sum().clamp_min(1)
            loss = loss + self.bce_weight * (bce * keep).sum() / n
        if self.lovasz_weight:
            if self.per_image:
                lov = torch.stack(
                    [
                        lovasz_hinge_flat(lg[k], t[k])
                        for lg, t, k in zip(logits, y, keep, strict=True)
                    ]
                ).mean()
            else:
                lov = lovasz_hinge_flat(logits[keep], y[keep])
            loss = loss + self.lovasz_weight * lov
        return loss
