"""evaluate_against_truth: perfect, empty and hand-counted imperfect audits."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from shapely import affinity
from shapely.geometry import box, shape

from pipeline.errors import SourceError, VectorDataError
from pipeline.sample import STEPS, SampleInfo, evaluate_against_truth

CATEGORIES = ("omitted", "phantom", "misaligned", "changes", "stale")


def _truth(sample: SampleInfo) -> dict:
    return json.loads(sample.truth.read_text())


def _utm(geom, crs: str):
    return gpd.GeoSeries([geom], crs=4326).to_crs(crs).iloc[0]


def _wgs(geom, crs: str):
    return gpd.GeoSeries([geom], crs=crs).to_crs(4326).iloc[0]


def test_perfect_audit_scores_one(small_sample: SampleInfo, perfect_inputs: Callable) -> None:
    findings, changes, cells = perfect_inputs(small_sample.truth)
    result = evaluate_against_truth(small_sample.truth, findings, changes, cells)
    truth = _truth(small_sample)
    for cat in CATEGORIES:
        assert result[cat]["recall"] == 1.0, cat
        assert result[cat]["precision"] == 1.0, cat
        assert result[cat]["n_truth"] > 0, cat
    n_omitted = sum(1 for d in truth["defects"] if d["kind"] == "omitted")
    assert result["omitted"]["n_truth"] == n_omitted
    assert result["changes"]["n_truth"] == len(truth["changes"])
    assert result["hotspots"] == {"injected": 3, "in_top": 3, "top_k": None, "recall": 1.0}


def test_empty_audit_finds_nothing(small_sample: SampleInfo) -> None:
    empty = gpd.GeoDataFrame({"step": [], "kind": []}, geometry=[], crs="EPSG:4326")
    for inputs in ((empty, empty, None), (None, None, None)):
        result = evaluate_against_truth(small_sample.truth, *inputs)
        for cat in CATEGORIES:
            assert result[cat]["recall"] == 0.0
            assert result[cat]["precision"] == 1.0  # no findings, no false claims
            assert result[cat]["n_found"] == 0
        assert result["hotspots"]["in_top"] == 0


def test_wrong_and_missed_findings_count_by_hand(
    small_sample: SampleInfo, perfect_inputs: Callable
) -> None:
    truth = _truth(small_sample)
    crs = truth["crs"]
    findings, changes, cells = perfect_inputs(small_sample.truth)
    missing = findings[findings["kind"] == "missing_in_opendata"]
    n_omitted = sum(1 for d in truth["defects"] if d["kind"] == "omitted")
    n_new_missing = sum(1 for d in truth["defects"] if d["detail"].get("subkind") == "new_missing")
    assert len(missing) == n_omitted + n_new_missing

    # Drop the first omitted finding, add a duplicate of the second and two
    # findings on open ground (the phantom sites: no true building there).
    first_omitted = missing.index[0]
    duplicate = missing.iloc[[1]]
    phantoms = [d for d in truth["defects"] if d["kind"] == "phantom" and d["step"] == STEPS[0]]
    wrong = gpd.GeoDataFrame(
        {"step": [STEPS[0]] * 2, "kind": ["missing_in_opendata"] * 2},
        geometry=[shape(phantoms[0]["geometry"]), _wgs(box(0, 0, 8, 8), crs)],  # 2nd: far away
        crs="EPSG:4326",
    )
    edited = pd.concat([findings.drop(index=first_omitted), duplicate, wrong], ignore_index=True)
    result = evaluate_against_truth(small_sample.truth, edited, changes, cells)["omitted"]
    n_findings = n_omitted + n_new_missing - 1 + 1 + 2
    assert result["n_found"] == n_findings
    assert result["n_truth"] == n_omitted
    assert result["recall"] == pytest.approx((n_omitted - 1) / n_omitted)
    assert result["precision"] == pytest.approx((n_omitted + n_new_missing - 1) / n_findings)


def test_findings_must_match_step_and_overlap(small_sample: SampleInfo) -> None:
    """A hit needs intersection >= 0.3 of the smaller area, in the same step."""
    truth = _truth(small_sample)
    crs = truth["crs"]
    target = next(d for d in truth["defects"] if d["kind"] == "omitted" and d["step"] == STEPS[0])
    fp = _utm(shape(target["geometry"]), crs)
    others = [
        _utm(shape(d["geometry"]), crs)
        for d in truth["defects"]
        if d["step"] == STEPS[0] and d is not target and d["kind"] in ("omitted", "stale")
    ]

    def score(geom, step: str = STEPS[0]) -> dict:
        f = gpd.GeoDataFrame(
            {"step": [step], "kind": ["missing_in_opendata"]}, geometry=[_wgs(geom, crs)], crs=4326
        )
        return evaluate_against_truth(small_sample.truth, f, None, None, steps=[STEPS[0]])[
            "omitted"
        ]

    def ios(geom) -> float:
        return geom.intersection(fp).area / min(geom.area, fp.area)

    assert score(fp)["n_hit"] == 1
    assert score(fp, step=STEPS[1])["n_found"] == 0  # other step: ignored with steps=[STEPS[0]]
    assert score(fp.centroid)["n_hit"] == 1  # a point inside the building
    width = fp.bounds[2] - fp.bounds[0]
    shifted = [affinity.translate(fp, xoff=k * width / 40) for k in range(1, 40)]
    shifted = [g for g in shifted if not any(g.intersects(o) for o in others)]
    half = next(g for g in shifted if 0.35 <= ios(g) <= 0.6)
    little = next(g for g in shifted if 0.05 <= ios(g) <= 0.25)
    assert score(half)["n_hit"] == 1
    assert score(little)["n_hit"] == 0
    assert score(little)["precision"] == 0.0


def test_changes_need_the_right_sign(small_sample: SampleInfo, perfect_inputs: Callable) -> None:
    _, changes, _ = perfect_inputs(small_sample.truth)
    flipped = changes.copy()
    flip = {"appeared": "disappeared", "disappeared": "appeared"}
    flipped["kind"] = flipped["kind"].map(lambda k: flip.get(k, k))
    result = evaluate_against_truth(small_sample.truth, None, flipped, None)
    assert result["changes"]["recall"] == 0.0 and result["changes"]["precision"] == 0.0
    assert result["stale"]["recall"] == 1.0  # stale_opendata has no sign


def test_hotspots_in_top_k(small_sample: SampleInfo, perfect_inputs: Callable) -> None:
    _, _, cells = perfect_inputs(small_sample.truth)
    crs = _truth(small_sample)["crs"]
    far = gpd.GeoDataFrame(
        {"step": [STEPS[1]], "rank": [1]}, geometry=[_wgs(box(0, 0, 50, 50), crs)], crs=4326
    )
    shifted = cells.assign(rank=cells["rank"] + 1)  # injected hotspots now rank 2, 3, 4
    both = pd.concat([far, shifted], ignore_index=True)
    assert (
        evaluate_against_truth(small_sample.truth, None, None, both, top_k=3)["hotspots"]["in_top"]
        == 2
    )
    assert (
        evaluate_against_truth(small_sample.truth, None, None, both, top_k=4)["hotspots"]["in_top"]
        == 3
    )
    only_far = evaluate_against_truth(small_sample.truth, None, None, far, top_k=5)["hotspots"]
    assert only_far["in_top"] == 0 and only_far["recall"] == 0.0


def test_bad_inputs_are_named(small_sample: SampleInfo, tmp_path: Path) -> None:
    no_kind = gpd.GeoDataFrame({"step": [STEPS[0]]}, geometry=[box(0, 0, 1, 1)], crs=4326)
    with pytest.raises(VectorDataError, match=r"findings: missing column\(s\) \['kind'\]"):
        evaluate_against_truth(small_sample.truth, no_kind, None, None)
    with pytest.raises(SourceError, match="truth file not found"):
        evaluate_against_truth(tmp_path / "nope.json", None, None, None)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SourceError, match="has no 'crs'"):
        evaluate_against_truth(tmp_path / "bad.json", None, None, None)
