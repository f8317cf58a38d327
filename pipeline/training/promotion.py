"""Champion / challenger: a retrained model replaces the production one only when it
judges better, never because it fits the open data more closely.

Two measures, both out of sample:

* **out-of-fold IoU** against the open data: every tile predicted by a model that did
  not train on it (the challenger's fold models; the champion's fold that held the
  tile out), pooled over the tiles the challenger validated;
* **agreement with reviewers** where they gave verdicts on findings: a finding
  confirmed (``label_wrong``, ``real_change``) should be reproduced, one rejected
  (``model_wrong``, ``ok``) should not (:func:`agrees`).

The challenger is promoted when its agreement is not lower than the champion's (when
there are reviews) and its out-of-fold IoU is higher, or when its agreement is higher
and its IoU not more than ``iou_tolerance`` lower (reviewers outrank noisy labels).
"""

from __future__ import annotations

from dataclasses import dataclass

CONFIRMED = ("label_wrong", "real_change")
REJECTED = ("model_wrong", "ok")


@dataclass(frozen=True)
class Judged:
    """One model's out-of-sample quality: out-of-fold IoU, and reviewed findings it
    agrees with (``None`` without reviews)."""

    oof_iou: float
    agreed: int = 0
    reviewed: int = 0

    @property
    def agreement(self) -> float | None:
        """Share of the reviewed findings it agrees with; None without reviews."""
        return self.agreed / self.reviewed if self.reviewed else None


@dataclass(frozen=True)
class Decision:
    """Whether the challenger replaces the champion, and why (in words)."""

    promote: bool
    reason: str


def decide(challenger: Judged, champion: Judged | None, *, iou_tolerance: float = 0.02) -> Decision:
    """The champion / challenger rule of the module docstring."""
    if champion is None:
        return Decision(True, "no champion yet")
    ch, cc = challenger.agreement, champion.agreement
    better_iou = challenger.oof_iou > champion.oof_iou
    if ch is not None and cc is not None:
        if ch < cc:
            return Decision(False, f"agrees with fewer reviewed findings ({ch:.2f} < {cc:.2f})")
        if ch > cc and challenger.oof_iou >= champion.oof_iou - iou_tolerance:
            return Decision(True, f"agrees with more reviewed findings ({ch:.2f} > {cc:.2f})")
    if better_iou:
        return Decision(
            True,
            f"out-of-fold IoU {challenger.oof_iou:.3f} > champion's {champion.oof_iou:.3f}",
        )
    return Decision(
        False,
        f"out-of-fold IoU {challenger.oof_iou:.3f} <= champion's {champion.oof_iou:.3f}",
    )


def reproduces(kind: str, predicted_share: float) -> bool | None:
    """Would a model predicting ``predicted_share`` of a finding's area make that finding
    again? A missing building is predicted (share >= 0.5), an unsupported one is not
    (share < 0.15). None for kinds that do not test a model (misaligned)."""
    if kind == "missing_in_opendata":
        return predicted_share >= 0.5
    if kind == "unsupported_by_imagery":
        return predicted_share < 0.15
    return None


def agrees(kind: str, verdict: str, predicted_share: float) -> bool | None:
    """Does the model agree with the reviewer's verdict on a finding: reproduce a
    confirmed one, not reproduce a rejected one? None when it cannot tell."""
    again = reproduces(kind, predicted_share)
    if again is None:
        return None
    if verdict in CONFIRMED:
        return again
    if verdict in REJECTED:
        return not again
    return None
