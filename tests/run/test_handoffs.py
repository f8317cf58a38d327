"""The typed hand-offs: their JSON (XCom) form round-trips through ``json`` for every
class, and a malformed form is refused naming the hand-off and the field."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.run.handoffs import (
    AuditPlan,
    AuditRequest,
    ChangesOutcome,
    FetchedSnapshot,
    Handoff,
    RunSummary,
    ShardOutcome,
    ValidationOutcome,
)

HANDOFFS = (
    AuditRequest,
    FetchedSnapshot,
    AuditPlan,
    ValidationOutcome,
    ShardOutcome,
    ChangesOutcome,
    RunSummary,
)

# what JSON carries exactly: ints within 2**53, finite floats, text, nested lists/dicts
ints = st.integers(min_value=-(2**53), max_value=2**53)
ids = st.integers(min_value=1, max_value=2**53)
counts = st.integers(min_value=0, max_value=2**31)
floats = st.floats(allow_nan=False, allow_infinity=False)
texts = st.text(max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | ints | floats | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=10,
)
json_objects = st.dictionaries(texts, json_values, max_size=4)

STRATEGIES: dict[type[Handoff], st.SearchStrategy[Any]] = {
    AuditRequest: st.builds(
        AuditRequest,
        aoi=texts,
        step=texts,
        model_version_id=st.none() | ids,
        force=st.booleans(),
        repredict=st.booleans(),
        bbox=st.none() | st.lists(floats, min_size=4, max_size=4).map(tuple),
        trigger=texts,
        external_id=st.none() | texts,
        params=json_objects,
    ),
    FetchedSnapshot: st.builds(
        FetchedSnapshot,
        kind=st.sampled_from(["imagery", "opendata"]),
        snapshot_id=ids,
        content_hash=texts,
        step=texts,
        reused=st.booleans(),
        seconds=floats,
    ),
    AuditPlan: st.builds(
        AuditPlan,
        aoi=texts,
        step=texts,
        run_id=ids,
        shard_ids=st.lists(texts, max_size=5).map(tuple),
        reused=st.booleans(),
    ),
    ValidationOutcome: st.builds(
        ValidationOutcome,
        run_id=ids,
        reused=st.booleans(),
        success=st.booleans(),
        n_warnings=counts,
        warnings=st.lists(texts, max_size=3).map(tuple),
        data_docs=st.none() | texts,
        seconds=floats,
    ),
    ShardOutcome: st.builds(
        ShardOutcome,
        shard_id=texts,
        status=st.sampled_from(["done", "no_imagery"]),
        tiles=counts,
        buildings=counts,
        cache_hit=st.booleans(),
        rasterize_s=floats,
        predict_s=floats,
        score_s=floats,
    ),
    ChangesOutcome: st.builds(
        ChangesOutcome, run_id=ids, n_changes=counts, reused=st.booleans(), seconds=floats
    ),
    RunSummary: st.builds(
        RunSummary,
        run_id=ids,
        aoi=texts,
        step=texts,
        aggregates=json_objects,
        n_findings=counts,
        n_changes=counts,
        n_hotspots=counts,
        buildings_uri=texts,
        stage_seconds=json_objects,
        reused=st.booleans(),
    ),
}


def test_every_handoff_has_a_strategy_and_a_name() -> None:
    assert set(STRATEGIES) == set(HANDOFFS)
    assert len({cls.what for cls in HANDOFFS}) == len(HANDOFFS)
    assert all(cls.what != Handoff.what for cls in HANDOFFS)


@pytest.mark.parametrize("cls", HANDOFFS, ids=lambda c: c.__name__)
@given(data=st.data())
def test_xcom_json_round_trip(cls: type[Handoff], data: st.DataObject) -> None:
    original = data.draw(STRATEGIES[cls])
    carried = json.loads(json.dumps(original.to_xcom(), allow_nan=False))
    back = cls.from_xcom(carried)
    assert type(back) is cls
    assert back == original
    # tuples come back as tuples, not the lists JSON carried
    for f in dataclasses.fields(cls):
        if isinstance(getattr(original, f.name), tuple):
            assert isinstance(getattr(back, f.name), tuple), f.name


def test_to_xcom_is_plain_json_even_from_numpy_values() -> None:
    outcome = ShardOutcome("19-1-2", "done", tiles=np.int64(4), predict_s=np.float32(0.5))
    summary = RunSummary(
        1,
        "a",
        "2025-06-01",
        {"mean_iou": np.float64(0.25), "by_kind": {"x": np.int64(2)}, "pair": (1, 2)},
        3,
        0,
        1,
        "/tmp/b.parquet",
        {"fetch": {"seconds": np.float64(1.5)}},
    )
    for handoff in (outcome, summary):
        text = json.dumps(handoff.to_xcom())  # raises on numpy scalars and tuples' types
        assert type(handoff).from_xcom(json.loads(text)) is not None
    assert outcome.to_xcom()["tiles"] == 4 and type(outcome.to_xcom()["tiles"]) is int
    assert summary.to_xcom()["aggregates"] == {
        "mean_iou": 0.25,
        "by_kind": {"x": 2},
        "pair": [1, 2],
    }


def test_from_xcom_returns_a_typed_handoff_as_is_and_fills_defaults() -> None:
    plan = AuditPlan("a", "2025-06-01", 3, ("19-1-2",))
    assert AuditPlan.from_xcom(plan) is plan
    assert AuditPlan.from_xcom({"aoi": "a", "step": "2025-06-01", "run_id": 3}) == AuditPlan(
        "a", "2025-06-01", 3, (), reused=False
    )
    request = AuditRequest.from_xcom({"aoi": "a", "step": "2025-06-01"})
    assert request == AuditRequest("a", "2025-06-01")
    assert request.params == {} and request.bbox is None and request.trigger == "cli"


def test_integral_floats_are_taken_for_integers_and_ints_for_floats() -> None:
    # some schedulers' JSON turns 3 into 3.0
    plan = AuditPlan.from_xcom({"aoi": "a", "step": "s", "run_id": 3.0})
    assert plan.run_id == 3 and type(plan.run_id) is int
    outcome = ValidationOutcome.from_xcom({"run_id": 1, "seconds": 2})
    assert outcome.seconds == 2.0 and type(outcome.seconds) is float
    request = AuditRequest.from_xcom({"aoi": "a", "step": "s", "bbox": [1, 2, 3, 4]})
    assert request.bbox == (1.0, 2.0, 3.0, 4.0)
    assert all(type(v) is float for v in request.bbox)


def test_shard_outcome_predicted_means_done_without_a_cache_hit() -> None:
    assert ShardOutcome("s", "done").predicted
    assert not ShardOutcome("s", "done", cache_hit=True).predicted
    assert not ShardOutcome("s", "no_imagery").predicted


@pytest.mark.parametrize(
    ("cls", "data", "match"),
    [
        (AuditPlan, [1, 2], r"^audit plan: expected a mapping, got list"),
        (AuditPlan, "plan", r"^audit plan: expected a mapping, got str"),
        (AuditPlan, {"aoi": "a", "step": "s"}, r"^audit plan: field 'run_id' is missing"),
        (ShardOutcome, {"status": "done"}, r"^shard outcome: field 'shard_id' is missing"),
        (AuditPlan, {"aoi": "a", "step": "s", "run_id": True}, r"field 'run_id' = True is not int"),
        (AuditPlan, {"aoi": "a", "step": "s", "run_id": 1.5}, r"field 'run_id' = 1\.5 is not int"),
        (AuditPlan, {"aoi": "a", "step": "s", "run_id": "x"}, r"field 'run_id' = 'x' is not int"),
        (AuditPlan, {"aoi": "a", "step": "s", "run_id": None}, r"field 'run_id' = None is not int"),
        (AuditPlan, {"aoi": "a", "step": "s", "run_id": [1]}, r"field 'run_id' = \[1\] is not int"),
        (AuditPlan, {"aoi": 7, "step": "s", "run_id": 1}, r"field 'aoi' = 7 is not str"),
        (
            AuditPlan,
            {"aoi": "a", "step": "s", "run_id": 1, "shard_ids": "19-1-2"},
            r"field 'shard_ids' = '19-1-2' is not",
        ),
        (
            AuditPlan,
            {"aoi": "a", "step": "s", "run_id": 1, "shard_ids": ["ok", 3]},
            r"field 'shard_ids' = \['ok', 3\] is not",
        ),
        (
            AuditPlan,
            {"aoi": "a", "step": "s", "run_id": 1, "reused": 1},
            r"^audit plan: field 'reused' = 1 is not bool",
        ),
        (
            AuditRequest,
            {"aoi": "a", "step": "s", "force": "yes"},
            r"^audit request: field 'force' = 'yes' is not bool",
        ),
        (
            AuditRequest,
            {"aoi": "a", "step": "s", "model_version_id": "m1"},
            r"field 'model_version_id' = 'm1' is not int \| None",
        ),
        (
            AuditRequest,
            {"aoi": "a", "step": "s", "bbox": [1, "b", 3, 4]},
            r"^audit request: field 'bbox'",
        ),
        (
            AuditRequest,
            {"aoi": "a", "step": "s", "params": ["a"]},
            r"^audit request: field 'params' = \['a'\] is not dict",
        ),
        (
            ShardOutcome,
            {"shard_id": "s", "status": "running"},
            r"^shard outcome: field 'status' = 'running' is not",
        ),
        (
            FetchedSnapshot,
            {"kind": "labels", "snapshot_id": 1, "content_hash": "h", "step": "s"},
            r"^fetched snapshot: field 'kind' = 'labels' is not",
        ),
        (
            ValidationOutcome,
            {"run_id": 1, "seconds": True},
            r"^validation outcome: field 'seconds' = True is not float",
        ),
        (
            ValidationOutcome,
            {"run_id": 1, "seconds": [0.5]},
            r"^validation outcome: field 'seconds' = \[0\.5\] is not float",
        ),
        (ChangesOutcome, {"run_id": 1, "n_changes": -0.5}, r"^changes outcome: field 'n_changes'"),
        (
            RunSummary,
            {
                "run_id": 1,
                "aoi": "a",
                "step": "s",
                "aggregates": [],
                "n_findings": 0,
                "n_changes": 0,
                "n_hotspots": 0,
                "buildings_uri": "u",
                "stage_seconds": {},
            },
            r"^run summary: field 'aggregates' = \[\] is not dict",
        ),
    ],
)
def test_malformed_xcom_is_refused_naming_the_handoff_and_field(
    cls: type[Handoff], data: Any, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        cls.from_xcom(data)


@pytest.mark.parametrize("cls", HANDOFFS, ids=lambda c: c.__name__)
def test_an_empty_mapping_names_the_first_required_field(cls: type[Handoff]) -> None:
    first = next(f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING)
    with pytest.raises(ConfigError, match=rf"^{cls.what}: field '{first}' is missing"):
        cls.from_xcom({})


def test_an_infinite_count_is_refused_naming_the_field() -> None:
    # Python's json reads the non-standard token Infinity
    data = json.loads('{"shard_id": "s", "status": "done", "tiles": Infinity}')
    with pytest.raises(ConfigError, match=r"^shard outcome: field 'tiles'"):
        ShardOutcome.from_xcom(data)


def test_large_integers_round_trip() -> None:
    plan = AuditPlan("a", "s", 2**53 + 1)
    assert AuditPlan.from_xcom(json.loads(json.dumps(plan.to_xcom()))) == plan
