"""The validate stage in this process: the input suites on a planned run's real
snapshots and the output suites on tile scores, stored on the run with Data Docs pages
under the keys of :mod:`pipeline.run.layout`."""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.aoi import AoiConfig
from pipeline.db.models import ValidationResult
from pipeline.errors import ValidationFailedError
from pipeline.run import layout
from pipeline.run.handoffs import AuditPlan
from pipeline.run.validate import (
    InProcessValidator,
    validate_inputs,
    validate_outputs,
    validate_snapshots,
    validator_of,
)
from pipeline.validate.report import ValidationReport

from ._helpers import fetched, planned, register, run_row
from .conftest import STEP, RealAoi

INPUT_SUITES = {"opendata.features", "opendata.snapshot", "imagery.shards", "imagery.snapshot"}
OUTPUT_SUITES = {"outputs.tiles", "outputs.run"}


@pytest.fixture(scope="module")
def plan(real_aoi: RealAoi) -> AuditPlan:
    return planned(real_aoi.ctx, real_aoi.config)


def _results(real_aoi: RealAoi, **where: Any) -> dict[str, ValidationResult]:
    with Session(real_aoi.ctx.engine) as s:
        q = select(ValidationResult).filter_by(**where).order_by(ValidationResult.id)
        rows = s.scalars(q).all()
        s.expunge_all()
    return {r.suite: r for r in rows}


def _tile_scores(config: AoiConfig, **changes: Any) -> pd.DataFrame:
    """Plausible scores for every tile of the AOI."""
    frame = pd.DataFrame(
        [
            {"z": t.z, "x": t.x, "y": t.y, "iou": 0.5, "precision": 0.6, "recall": 0.7}
            for t in config.tiles()
        ]
    )
    frame["f1"], frame["qod"] = 0.65, 50.0
    for column, value in changes.items():
        frame[column] = value
    return frame


def _no_findings() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"kind": []}, geometry=[], crs="EPSG:4326")


def test_input_suites_are_stored_on_the_run(real_aoi: RealAoi, plan: AuditPlan) -> None:
    ctx, name = real_aoi.ctx, real_aoi.config.name
    report = validate_inputs(ctx, plan.run_id)
    assert isinstance(report, ValidationReport)
    assert not report.critical and report.seconds > 0
    assert {c.outcome.suite for c in report.checked} == INPUT_SUITES
    rows = _results(real_aoi, run_id=plan.run_id)
    assert set(rows) == INPUT_SUITES
    assert sorted(report.result_ids) == sorted(r.id for r in rows.values())
    run = run_row(ctx, plan.run_id)
    for suite, row in rows.items():
        snapshot = (
            run.imagery_snapshot_id if suite.startswith("imagery") else run.opendata_snapshot_id
        )
        assert row.snapshot_id == snapshot, suite
        assert row.severity in ("none", "warning"), (suite, row.failed)
        key = layout.validation_page_key(name, STEP, f"run-{plan.run_id}", suite)
        assert row.statistics["data_docs_key"] == key
        assert ctx.store.exists(key), suite
    features = rows["opendata.features"].statistics
    assert features["input"].startswith("open data ")
    assert rows["imagery.snapshot"].statistics["summary"]["brightness"] > 0


def test_data_docs_pages_are_written_under_layout_keys(real_aoi: RealAoi, plan: AuditPlan) -> None:
    ctx, name = real_aoi.ctx, real_aoi.config.name
    report = validate_inputs(ctx, plan.run_id)
    tag = f"run-{plan.run_id}"
    assert report.index_key == layout.validation_index_key(name, STEP, tag)
    assert report.index_uri == ctx.store.uri(report.index_key)
    assert report.header == (name, STEP, tag)
    index = ctx.store.read_bytes(report.index_key).decode()
    for item in report.checked:
        assert item.docs_key == layout.validation_page_key(name, STEP, tag, item.outcome.suite)
        assert f"href='{item.outcome.suite}.html'" in index
        page = ctx.store.read_bytes(item.docs_key).decode()
        assert f"geoaudit.{item.outcome.suite}" in page


def test_validating_again_replaces_the_results(real_aoi: RealAoi) -> None:
    run_id = planned(real_aoi.ctx, real_aoi.config, force=True).run_id
    for _ in range(2):
        report = validate_inputs(real_aoi.ctx, run_id)
        with Session(real_aoi.ctx.engine) as s:
            q = select(ValidationResult.id).where(ValidationResult.run_id == run_id)
            ids = sorted(s.scalars(q))
        assert len(ids) == len(INPUT_SUITES)  # one row per suite, not one per validation
        assert ids == sorted(report.result_ids)


def test_pages_can_be_left_for_later(real_aoi: RealAoi) -> None:
    ctx = real_aoi.ctx
    later = planned(ctx, real_aoi.config, force=True)
    report = validate_inputs(ctx, later.run_id, pages=False)
    assert set(_results(real_aoi, run_id=later.run_id)) == INPUT_SUITES  # stored at once
    keys = [c.docs_key for c in report.checked] + [report.index_key]
    assert all(k and not ctx.store.exists(k) for k in keys)
    report.write_pages(ctx.store)
    assert all(ctx.store.exists(k) for k in keys)


def test_snapshots_alone_are_validated_without_a_run(real_aoi: RealAoi) -> None:
    ctx, config = real_aoi.ctx, real_aoi.config
    imagery, opendata = fetched(ctx, config)
    report = validate_snapshots(ctx, config, imagery.snapshot_id, opendata.snapshot_id)
    tag = f"snapshots-{imagery.snapshot_id}-{opendata.snapshot_id}"
    assert report.index_key == layout.validation_index_key(config.name, STEP, tag)
    rows = _results(real_aoi, run_id=None, snapshot_id=imagery.snapshot_id)
    assert set(rows) == {"imagery.shards", "imagery.snapshot"}
    only_opendata = validate_snapshots(ctx, config, None, opendata.snapshot_id)
    assert {c.outcome.suite for c in only_opendata.checked} == {
        "opendata.features",
        "opendata.snapshot",
    }
    assert only_opendata.index_key == layout.validation_index_key(
        config.name, STEP, f"snapshots-None-{opendata.snapshot_id}"
    )


def test_a_critical_input_failure_names_the_input(real_aoi: RealAoi) -> None:
    ctx = real_aoi.ctx
    config = register(ctx, "fourband", validation={"imagery_band_counts": [4]})
    bad = planned(ctx, config)
    report = validate_inputs(ctx, bad.run_id)
    assert report.critical and not report.success
    assert "band count" in report.reason() and "imagery '" in report.reason()
    with pytest.raises(ValidationFailedError, match="validation failed \\(critical\\)"):
        report.raise_for_critical()
    row = _results(real_aoi, run_id=bad.run_id)["imagery.snapshot"]
    assert row.severity == "critical" and not row.success
    assert any(f["column"] == "band_count" for f in row.failed)


# --- output suites ------------------------------------------------------------------------


def test_plausible_outputs_pass(real_aoi: RealAoi, plan: AuditPlan) -> None:
    ctx, config = real_aoi.ctx, real_aoi.config
    report = validate_outputs(
        ctx, plan.run_id, config, STEP, _tile_scores(config), _no_findings(), list(plan.shard_ids)
    )
    assert report.success and not report.critical
    rows = _results(real_aoi, run_id=plan.run_id)
    assert set(rows) >= OUTPUT_SUITES
    for suite in OUTPUT_SUITES:
        key = layout.validation_page_key(config.name, STEP, f"run-{plan.run_id}", suite)
        assert rows[suite].statistics["data_docs_key"] == key and ctx.store.exists(key)
        assert rows[suite].snapshot_id is None


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        ({"qod": 150.0}, "QoD outside 0..100"),
        ({"iou": -0.1}, "IoU outside 0..1"),
        ({"x": 1}, "tile scores outside the run's shards"),
    ],
)
def test_implausible_outputs_are_critical(
    real_aoi: RealAoi, plan: AuditPlan, broken: dict[str, Any], problem: str
) -> None:
    config = real_aoi.config
    tiles = _tile_scores(config, **broken)
    report = validate_outputs(
        real_aoi.ctx, plan.run_id, config, STEP, tiles, _no_findings(), list(plan.shard_ids)
    )
    assert problem in report.reason()
    with pytest.raises(ValidationFailedError, match="run .* outputs"):
        report.raise_for_critical()


def test_duplicate_tiles_and_orphan_findings_are_critical(
    real_aoi: RealAoi, plan: AuditPlan
) -> None:
    config = real_aoi.config
    tiles = _tile_scores(config)
    doubled = pd.concat([tiles, tiles.iloc[:1]], ignore_index=True)
    far = gpd.GeoDataFrame(
        {"kind": ["missing_in_opendata"]},
        geometry=[shapely.box(0, 0, 0.001, 0.001)],
        crs="EPSG:4326",
    )
    report = validate_outputs(
        real_aoi.ctx, plan.run_id, config, STEP, doubled, far, list(plan.shard_ids)
    )
    reason = report.reason()
    assert "more than one score row for a tile" in reason
    assert "findings that touch no scored tile" in reason
    # tiles of shards the run did not plan are not expected either
    report = validate_outputs(
        real_aoi.ctx, plan.run_id, config, STEP, tiles, _no_findings(), list(plan.shard_ids[:1])
    )
    assert "tile scores outside the run's shards" in report.reason()


def test_the_in_process_validator_is_the_default(real_aoi: RealAoi, plan: AuditPlan) -> None:
    ctx = real_aoi.ctx
    validator = validator_of(ctx)
    assert isinstance(validator, InProcessValidator)
    report = validator.validate_inputs(plan.run_id)
    assert {c.outcome.suite for c in report.checked} == INPUT_SUITES
    outputs = validator.validate_outputs(
        plan.run_id,
        real_aoi.config,
        STEP,
        _tile_scores(real_aoi.config),
        _no_findings(),
        list(plan.shard_ids),
    )
    assert {c.outcome.suite for c in outputs.checked} == OUTPUT_SUITES
    other = InProcessValidator(ctx)
    assert validator_of(ctx.with_validator(other)) is other
