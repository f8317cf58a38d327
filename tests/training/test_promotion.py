"""The champion / challenger rule and whether a model agrees with a reviewer's verdict."""

from __future__ import annotations

import pytest

from pipeline.training.promotion import CONFIRMED, REJECTED, Judged, agrees, decide, reproduces


def test_agreement_is_the_share_of_reviewed_findings():
    assert Judged(0.7).agreement is None
    assert Judged(0.7, agreed=0, reviewed=0).agreement is None
    assert Judged(0.7, agreed=3, reviewed=4).agreement == 0.75
    assert Judged(0.7, agreed=0, reviewed=2).agreement == 0.0


def test_first_model_is_promoted():
    d = decide(Judged(0.1), None)
    assert d.promote and d.reason == "no champion yet"


@pytest.mark.parametrize(
    "challenger,champion,promote",
    [
        (0.80, 0.70, True),
        (0.70, 0.80, False),
        (0.70, 0.70, False),  # a tie keeps the champion
    ],
)
def test_without_reviews_the_out_of_fold_iou_decides(challenger, champion, promote):
    d = decide(Judged(challenger), Judged(champion))
    assert d.promote is promote
    sign = ">" if promote else "<="
    assert d.reason == f"out-of-fold IoU {challenger:.3f} {sign} champion's {champion:.3f}"


def test_fewer_agreed_reviews_block_promotion_whatever_the_iou():
    d = decide(Judged(0.95, 1, 2), Judged(0.50, 3, 4))
    assert not d.promote
    assert d.reason == "agrees with fewer reviewed findings (0.50 < 0.75)"


def test_more_agreed_reviews_promote_within_the_iou_tolerance():
    # exactly representable values: 0.625 - 0.125 == 0.5
    d = decide(Judged(0.5, 3, 4), Judged(0.625, 1, 4), iou_tolerance=0.125)
    assert d.promote and d.reason == "agrees with more reviewed findings (0.75 > 0.25)"
    d = decide(Judged(0.7, 2, 2), Judged(0.71, 1, 2))  # default tolerance 0.02
    assert d.promote and d.reason.startswith("agrees with more")


def test_more_agreed_reviews_do_not_excuse_a_much_worse_iou():
    d = decide(Judged(0.49, 3, 4), Judged(0.625, 1, 4), iou_tolerance=0.125)
    assert not d.promote
    assert d.reason == "out-of-fold IoU 0.490 <= champion's 0.625"


def test_equal_agreement_falls_back_to_the_iou():
    assert decide(Judged(0.8, 1, 2), Judged(0.7, 1, 2)).promote
    d = decide(Judged(0.7, 1, 2), Judged(0.8, 1, 2))
    assert not d.promote and d.reason.startswith("out-of-fold IoU 0.700 <=")


def test_reviews_count_only_when_both_models_were_judged_on_them():
    # a champion without a judgement on reviews: the IoU alone decides
    assert decide(Judged(0.8, 0, 3), Judged(0.7)).promote
    assert not decide(Judged(0.6, 3, 3), Judged(0.7)).promote
    assert not decide(Judged(0.6), Judged(0.7, 0, 3)).promote


@pytest.mark.parametrize(
    "kind,share,again",
    [
        ("missing_in_opendata", 0.5, True),
        ("missing_in_opendata", 0.9, True),
        ("missing_in_opendata", 0.4999, False),
        ("unsupported_by_imagery", 0.0, True),
        ("unsupported_by_imagery", 0.1499, True),
        ("unsupported_by_imagery", 0.15, False),
        ("unsupported_by_imagery", 0.8, False),
        ("misaligned", 0.9, None),
        ("something_else", 0.5, None),
    ],
)
def test_reproduces(kind, share, again):
    assert reproduces(kind, share) is again


def test_verdict_groups():
    assert set(CONFIRMED) == {"label_wrong", "real_change"}
    assert set(REJECTED) == {"model_wrong", "ok"}


@pytest.mark.parametrize("verdict", [*CONFIRMED, *REJECTED])
@pytest.mark.parametrize(
    "kind,share",
    [
        ("missing_in_opendata", 0.9),
        ("missing_in_opendata", 0.1),
        ("unsupported_by_imagery", 0.05),
        ("unsupported_by_imagery", 0.6),
    ],
)
def test_agrees_means_reproducing_confirmed_and_not_rejected_findings(kind, verdict, share):
    again = reproduces(kind, share)
    assert agrees(kind, verdict, share) is (again if verdict in CONFIRMED else not again)


def test_agrees_by_hand():
    assert agrees("missing_in_opendata", "label_wrong", 0.8) is True
    assert agrees("missing_in_opendata", "model_wrong", 0.8) is False
    assert agrees("missing_in_opendata", "ok", 0.2) is True
    assert agrees("unsupported_by_imagery", "real_change", 0.0) is True
    assert agrees("unsupported_by_imagery", "model_wrong", 0.0) is False


def test_agrees_cannot_tell_for_misaligned_or_unknown_verdicts():
    assert agrees("misaligned", "label_wrong", 0.9) is None
    assert agrees("missing_in_opendata", "unsure", 0.9) is None
