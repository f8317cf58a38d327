"""The validation gate in its forked helper process: a submitted run's input suites are
answered (results stored first, Data Docs pages after), errors come back to the caller,
and the output suites run there too."""

from __future__ import annotations

import time
from collections.abc import Iterator

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.db.models import ValidationResult
from pipeline.errors import NotFoundError
from pipeline.run import layout
from pipeline.run.handoffs import AuditPlan
from pipeline.run.validation_helper import AuditGate
from pipeline.tiles import lnglat_bounds

from ._helpers import planned
from .conftest import STEP, RealAoi

INPUT_SUITES = {"opendata.features", "opendata.snapshot", "imagery.shards", "imagery.snapshot"}


@pytest.fixture
def plan(real_aoi: RealAoi) -> AuditPlan:
    return planned(real_aoi.ctx, real_aoi.config, force=True)


@pytest.fixture(scope="module")
def gate(real_aoi: RealAoi) -> Iterator[AuditGate]:
    """One helper for the tests that leave it in order (each fork loads the suites)."""
    with AuditGate(real_aoi.ctx) as g:
        yield g


def _suites(real_aoi: RealAoi, run_id: int) -> set[str]:
    with Session(real_aoi.ctx.engine) as s:
        q = select(ValidationResult.suite).where(ValidationResult.run_id == run_id)
        return set(s.scalars(q))


def _wait_ready(gate: AuditGate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not gate.inputs_ready():
        assert time.monotonic() < deadline, "the helper did not answer"
        time.sleep(0.05)


def test_the_gate_answers_a_submitted_run(real_aoi: RealAoi, plan: AuditPlan) -> None:
    ctx, name = real_aoi.ctx, real_aoi.config.name
    with AuditGate(ctx) as gate:
        started = time.monotonic()
        gate.submit_inputs(plan.run_id)
        assert time.monotonic() - started < 1.0  # submitting does not wait for the suites
        _wait_ready(gate)
        report = gate.validate_inputs(plan.run_id)
        # the results are stored before the answer comes
        assert _suites(real_aoi, plan.run_id) == INPUT_SUITES
    assert report.header == (name, STEP, f"run-{plan.run_id}")
    assert {c.outcome.suite for c in report.checked} == INPUT_SUITES
    assert not report.critical
    assert report.index_key == layout.validation_index_key(name, STEP, f"run-{plan.run_id}")
    for item in report.checked:
        key = layout.validation_page_key(name, STEP, f"run-{plan.run_id}", item.outcome.suite)
        assert item.docs_key == key
        # the helper wrote the pages after answering; closing the gate waited for them
        assert ctx.store.exists(key)
    assert ctx.store.exists(report.index_key)
    # the parent's pooled connections were left alone by the forked child
    assert _suites(real_aoi, plan.run_id) == INPUT_SUITES


def test_asking_without_submitting_submits_now(
    real_aoi: RealAoi, plan: AuditPlan, gate: AuditGate
) -> None:
    report = gate.validate_inputs(plan.run_id)
    assert report.header[2] == f"run-{plan.run_id}"
    assert _suites(real_aoi, plan.run_id) == INPUT_SUITES


def test_an_error_in_the_helper_is_raised_to_the_caller(
    real_aoi: RealAoi, plan: AuditPlan, gate: AuditGate
) -> None:
    with pytest.raises(NotFoundError, match="run 987654 does not exist"):
        gate.validate_inputs(987654)
    # the helper goes on serving
    assert gate.validate_inputs(plan.run_id).header[2] == f"run-{plan.run_id}"


def test_the_output_suites_run_in_the_helper(
    real_aoi: RealAoi, plan: AuditPlan, gate: AuditGate
) -> None:
    config = real_aoi.config
    tiles = pd.DataFrame(
        [
            {"z": t.z, "x": t.x, "y": t.y, "iou": 0.4, "precision": 0.5, "recall": 0.6}
            for t in config.tiles()
        ]
    ).assign(f1=0.55, qod=40.0, valid_px=65536, extra="not sent")
    first_tile = config.tiles()[0]
    findings = gpd.GeoDataFrame(
        {"kind": ["missing_in_opendata"]},
        geometry=[shapely.box(*lnglat_bounds(first_tile)).centroid.buffer(1e-6)],
        crs="EPSG:4326",
    )
    report = gate.validate_outputs(plan.run_id, config, STEP, tiles, findings, list(plan.shard_ids))
    assert report.success
    assert {c.outcome.suite for c in report.checked} == {"outputs.tiles", "outputs.run"}
    assert {"outputs.tiles", "outputs.run"} <= _suites(real_aoi, plan.run_id)
    # a finding off every scored tile is critical there as here
    far = findings.set_geometry([shapely.box(0, 0, 1e-3, 1e-3)], crs="EPSG:4326")
    bad = gate.validate_outputs(plan.run_id, config, STEP, tiles, far, list(plan.shard_ids))
    assert "findings that touch no scored tile" in bad.reason()


def test_close_is_idempotent_and_stops_an_unused_helper(real_aoi: RealAoi) -> None:
    gate = AuditGate(real_aoi.ctx)
    process = gate._process
    assert process is not None and process.is_alive()
    gate.close()
    assert not process.is_alive()
    gate.close()
    assert gate.inputs_ready()  # without a helper, the gate answers in this process


def test_asking_for_another_run_than_the_submitted_one(real_aoi: RealAoi, plan: AuditPlan) -> None:
    other = planned(real_aoi.ctx, real_aoi.config, force=True)
    with AuditGate(real_aoi.ctx) as gate:  # its own: this leaves an answer in the pipe
        gate.submit_inputs(plan.run_id)
        report = gate.validate_inputs(other.run_id)
    assert report.header[2] == f"run-{other.run_id}"
