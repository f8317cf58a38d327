"""Scoring findings against planted errors with hand-made frames: the review order, the
top-2N cut-off, IoU and point hits, precision, and the three kinds of a planting."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pytest
import shapely

from pipeline.sample.plant import Planted
from pipeline.sample.verdicts import KIND_OF, review_order, score_kind, score_planted

UTM = "EPSG:32645"
E0, N0 = 334000.0, 3056000.0  # Lalitpur, UTM zone 45N


def box(x, y, w, h):
    return shapely.box(E0 + x, N0 + y, E0 + x + w, N0 + y + h)


def planted_frame(*geoms, crs=UTM) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"feature_id": [f"p{i}" for i in range(len(geoms))]}, geometry=list(geoms), crs=crs
    )


def found(*rows, kind="missing_in_opendata", crs=UTM) -> gpd.GeoDataFrame:
    """Findings from ``(geometry, evidence)`` pairs."""
    if not rows:
        return gpd.GeoDataFrame(
            {"kind": [], "evidence": [], "area_m2": [], "confidence": []},
            geometry=gpd.GeoSeries([], crs=crs),
        )
    return gpd.GeoDataFrame(
        {
            "kind": [kind] * len(rows),
            "evidence": [e for _, e in rows],
            "area_m2": [g.area for g, _ in rows],
            "confidence": [0.5] * len(rows),
        },
        geometry=[g for g, _ in rows],
        crs=crs,
    )


# --- review order ---------------------------------------------------------------------------


def test_review_order_is_by_evidence_highest_first_ties_stable():
    f = found(
        (box(0, 0, 5, 5), 0.2),
        (box(10, 0, 5, 5), 0.9),
        (box(20, 0, 5, 5), np.nan),  # no evidence: last
        (box(30, 0, 5, 5), 0.2),
        (box(40, 0, 5, 5), 0.5),
    )
    assert review_order(f).index.tolist() == [1, 4, 0, 3, 2]


def test_review_order_without_evidence_is_by_area_times_confidence():
    f = found((box(0, 0, 10, 10), np.nan), (box(20, 0, 5, 5), np.nan), (box(30, 0, 8, 8), np.nan))
    f["confidence"] = [0.3, 0.9, 0.8]  # 30, 22.5, 51.2
    assert review_order(f).index.tolist() == [2, 0, 1]
    assert review_order(f.drop(columns="evidence")).index.tolist() == [2, 0, 1]


# --- one kind -------------------------------------------------------------------------------


def _queue(last_evidence: float) -> gpd.GeoDataFrame:
    return found(
        (box(1, 0, 10, 10), 0.9),  # hits the first planted footprint (IoU 0.82)
        (box(300, 0, 5, 5), 0.8),  # three false findings
        (box(400, 0, 5, 5), 0.7),
        (box(500, 0, 5, 5), 0.6),
        (box(100, 0, 10, 10), last_evidence),  # hits the second one
    )


def test_recall_counts_only_the_first_2n_findings():
    planted = planted_frame(box(0, 0, 10, 10), box(100, 0, 10, 10))
    late = score_kind(planted, _queue(0.5))  # 5th in the queue, N = 2
    assert (late.planted, late.findings) == (2, 5)
    assert late.recall_top2n == 0.5 and late.recall_top2n_by_point == 0.5
    assert late.precision == pytest.approx(2 / 5)  # precision counts every finding
    early = score_kind(planted, _queue(0.65))  # 4th
    assert early.recall_top2n == 1.0 and early.recall_top2n_by_point == 1.0
    assert early.precision == pytest.approx(2 / 5)


def test_point_hits_are_more_lenient_than_iou_hits():
    planted = planted_frame(box(0, 0, 10, 10), box(100, 0, 10, 10))
    f = found(
        (box(-20, -20, 50, 50), 0.9),  # holds the first footprint: IoU 0.04
        (box(104, 4, 2, 2), 0.8),  # inside the second: IoU 0.04
    )
    score = score_kind(planted, f)
    assert score.recall_top2n == 0.0
    assert score.recall_top2n_by_point == 1.0
    assert score.precision == 1.0


def test_an_iou_hit_must_exceed_min_iou():
    planted = planted_frame(box(0, 0, 10, 20))
    f = found((box(0, 0, 10, 5), 0.9))  # IoU 0.25
    assert score_kind(planted, f, min_iou=0.2).recall_top2n == 1.0
    assert score_kind(planted, f, min_iou=0.25).recall_top2n == 0.0
    assert score_kind(planted, f).recall_top2n == 0.0  # default 0.3
    assert score_kind(planted, f).recall_top2n_by_point == 1.0  # its point is inside


def test_one_finding_over_two_planted_footprints_recalls_both():
    planted = planted_frame(box(0, 0, 10, 10), box(12, 0, 10, 10))
    f = found((box(0, 0, 22, 10), 0.9), (box(300, 0, 5, 5), 0.1))
    score = score_kind(planted, f, min_iou=0.3)
    assert score.recall_top2n == 1.0 and score.precision == 0.5


def test_nothing_planted_and_nothing_found():
    score = score_kind(planted_frame(), found())
    assert (score.planted, score.findings) == (0, 0)
    assert score.recall_top2n == score.recall_top2n_by_point == score.precision == 1.0


def test_planted_but_nothing_found():
    score = score_kind(planted_frame(box(0, 0, 10, 10)), found())
    assert (score.planted, score.findings) == (1, 0)
    assert score.recall_top2n == 0.0 and score.recall_top2n_by_point == 0.0
    assert score.precision == 1.0  # no finding, none of them false


def test_findings_with_nothing_planted_have_precision_zero():
    score = score_kind(planted_frame(), found((box(0, 0, 10, 10), 0.9), (box(50, 0, 8, 8), 0.5)))
    assert (score.planted, score.findings) == (0, 2)
    assert score.recall_top2n == 1.0
    assert score.precision == 0.0


# --- a whole planting -----------------------------------------------------------------------


@pytest.fixture()
def planting() -> Planted:
    def wgs(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        return frame.to_crs(4326)

    deleted = planted_frame(box(0, 0, 10, 10))
    phantoms = planted_frame(box(50, 0, 8, 8), box(80, 0, 8, 8))
    shifted = planted_frame(box(203, 0, 10, 10))  # in the data 3 m east of ...
    true = planted_frame(box(200, 0, 10, 10))  # ... where the building is
    shifted = wgs(shifted)
    shifted["true_geometry"] = wgs(true).geometry.to_numpy()
    on_imagery = planted_frame(box(0, 0, 10, 10), box(200, 0, 10, 10), box(400, 0, 10, 10))
    return Planted(
        opendata=wgs(planted_frame(box(203, 0, 10, 10), box(400, 0, 10, 10))),
        deleted=wgs(deleted),
        phantoms=wgs(phantoms),
        shifted=shifted,
        on_imagery=wgs(on_imagery),
    )


def _findings(*rows: tuple[str, shapely.Geometry, float]) -> gpd.GeoDataFrame:
    frame = gpd.GeoDataFrame(
        {"kind": [k for k, _, _ in rows], "evidence": [e for _, _, e in rows]},
        geometry=[g for _, g, _ in rows],
        crs=UTM,
    )
    return frame.to_crs(3857)  # findings come in EPSG:3857


def test_score_planted_scores_each_kind_with_its_own_findings(planting):
    f = _findings(
        ("missing_in_opendata", box(0, 0, 10, 10), 0.9),
        ("missing_in_opendata", box(300, 300, 10, 10), 0.8),
        ("unsupported_by_imagery", box(50, 0, 8, 8), 0.7),
        ("missing_in_opendata", box(80, 0, 8, 8), 0.6),  # on a phantom, but of another kind
        ("misaligned", box(203, 0, 10, 10), 0.5),  # where the data put it
    )
    scores = score_planted(planting, f)
    assert set(scores) == set(KIND_OF) == {"deleted", "phantoms", "shifted"}
    assert scores["deleted"] == {
        "planted": 1,
        "findings": 3,
        "recall_top2n": 1.0,
        "recall_top2n_by_point": 1.0,
        "precision": pytest.approx(1 / 3),
    }
    assert scores["phantoms"]["planted"] == 2 and scores["phantoms"]["findings"] == 1
    assert scores["phantoms"]["recall_top2n"] == 0.5
    assert scores["phantoms"]["precision"] == 1.0
    assert scores["shifted"]["recall_top2n"] == 1.0 and scores["shifted"]["precision"] == 1.0


@pytest.mark.parametrize(
    "where,hit",
    [
        (box(200, 0, 10, 10), True),  # where the building really is
        (box(203, 0, 10, 10), True),  # where the data put it
        (box(240, 0, 10, 10), False),  # neither
    ],
)
def test_a_shifted_building_is_hit_at_either_position(planting, where, hit):
    scores = score_planted(planting, _findings(("misaligned", where, 0.5)))
    assert scores["shifted"]["recall_top2n"] == (1.0 if hit else 0.0)
    assert scores["shifted"]["precision"] == (1.0 if hit else 0.0)


def test_score_planted_without_findings(planting):
    empty = gpd.GeoDataFrame({"kind": [], "evidence": []}, geometry=[], crs=3857)
    scores = score_planted(planting, empty)
    for name, planted in (("deleted", 1), ("phantoms", 2), ("shifted", 1)):
        assert scores[name]["planted"] == planted and scores[name]["findings"] == 0
        assert scores[name]["recall_top2n"] == 0.0
    assert all(math.isfinite(v) for s in scores.values() for v in s.values())
