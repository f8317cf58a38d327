"""The validate stage: the Great Expectations suites on a run's inputs (before anything
is scored) and outputs (before anything is published), stored with the run.

    report = validate_inputs(ctx, run_id)          # before any shard is scored
    report.raise_for_critical()                    # ValidationFailedError, names inputs
    ...
    validate_outputs(ctx, run_id, config, step, tiles, findings, shard_ids).raise_for_critical()

Results go to ``validation_result`` rows and Data Docs pages in the artifact store
(:mod:`pipeline.run.layout`). :class:`InProcessValidator` is how the other stages ask
for them unless their runner supplied another validator (the local runner's helper
process, :mod:`pipeline.run.validation_helper`).
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from pipeline.aoi.config import AoiConfig
from pipeline.aoi.registry import get_aoi_config
from pipeline.context import Context, Validator
from pipeline.db import repo
from pipeline.db.engine import write_session
from pipeline.run import layout
from pipeline.run.inputs import read_geoparquet, read_shard_image
from pipeline.run.snapshots import (
    ImagerySnapshot,
    OpenDataSnapshot,
    imagery_snapshot,
    opendata_snapshot,
)
from pipeline.validate import profiles
from pipeline.validate.gx import run_suite
from pipeline.validate.report import CheckedInput, ValidationReport, suite_parameters

log = logging.getLogger(__name__)


class InProcessValidator:
    """Runs the suites in this process (Great Expectations is imported on first use)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def validate_inputs(self, run_id: int) -> ValidationReport:
        """The input suites on run ``run_id``'s snapshots (stored on the run)."""
        return validate_inputs(self._ctx, run_id)

    def validate_outputs(
        self,
        run_id: int,
        config: AoiConfig,
        step: str,
        tiles: pd.DataFrame,
        findings: pd.DataFrame,
        shard_ids: list[str],
    ) -> ValidationReport:
        """The output suites on a run's tile scores and findings (stored on the run)."""
        return validate_outputs(self._ctx, run_id, config, step, tiles, findings, shard_ids)


def validator_of(ctx: Context) -> Validator:
    """The validator the runner put in the context, or an in-process one."""
    return ctx.validator if ctx.validator is not None else InProcessValidator(ctx)


def validate_inputs(ctx: Context, run_id: int, *, pages: bool = True) -> ValidationReport:
    """Run the open-data and imagery suites on the snapshots of run ``run_id``; store
    the results on the run and return them (the caller stops on critical failures)."""
    with Session(ctx.engine) as s:
        run = repo.get_run(s, run_id)
        aoi, imagery_id, opendata_id = (
            run.aoi.name,
            run.imagery_snapshot_id,
            run.opendata_snapshot_id,
        )
    config = get_aoi_config(ctx, aoi)
    return validate_snapshots(ctx, config, imagery_id, opendata_id, run_id=run_id, pages=pages)


def validate_snapshots(
    ctx: Context,
    config: AoiConfig,
    imagery_id: int | None,
    opendata_id: int | None,
    *,
    run_id: int | None = None,
    pages: bool = True,
) -> ValidationReport:
    """Run the input suites on the given snapshots; store results (on the run when
    ``run_id``, else on the snapshots alone) and Data Docs pages (later, with
    ``pages=False``: :meth:`ValidationReport.write_pages`); return the report."""
    t0 = time.perf_counter()
    params = suite_parameters(config.validation)
    report = ValidationReport()
    step = ""
    if opendata_id is not None:
        opendata, previous_count = _opendata_with_previous(ctx, opendata_id)
        step = opendata.step
        features = _feature_profile(ctx, opendata, config.validation.required_attributes)
        summary = profiles.opendata_snapshot_profile(
            opendata.read_info,
            opendata.repair,
            opendata.feature_count,
            previous_count,
            config.validation.opendata_crs,
        )
        name = f"open data {opendata.source!r}"
        for suite, frame in (("opendata.features", features), ("opendata.snapshot", summary)):
            report.checked.append(CheckedInput(run_suite(suite, frame, params), name, opendata.id))
    if imagery_id is not None:
        with Session(ctx.engine) as s:
            imagery = imagery_snapshot(s, imagery_id)
            history = repo.validation_history(s, imagery.aoi_id, "imagery.snapshot", imagery.step)
        step = imagery.step
        shards = profiles.imagery_shard_profile(config, _decimated_reader(ctx, imagery))
        one, step_summary = profiles.imagery_snapshot_profile(
            shards, dict(imagery.described), [h["summary"] for h in history if h.get("summary")]
        )
        img_params = {
            **params,
            "band_counts": config.validation.imagery_band_counts or [int(one.at[0, "band_count"])],
            "dtypes": config.validation.imagery_dtypes or [str(one.at[0, "dtype"])],
        }
        name = f"imagery {imagery.source!r}"
        shard_outcome = run_suite("imagery.shards", shards, img_params)
        snap_outcome = run_suite("imagery.snapshot", one, img_params)
        snap_outcome.statistics["summary"] = {
            k: (None if pd.isna(v) else float(v)) for k, v in step_summary.items()
        }
        report.checked.append(CheckedInput(shard_outcome, name, imagery.id))
        report.checked.append(CheckedInput(snap_outcome, name, imagery.id))
    tag = f"run-{run_id}" if run_id is not None else f"snapshots-{imagery_id}-{opendata_id}"
    _store(ctx, config.name, step, tag, report, run_id, pages=pages)
    report.seconds = time.perf_counter() - t0
    log.info(
        "inputs validated",
        extra={"aoi": config.name, "run_id": run_id, **report.summary()},
    )
    return report


def validate_outputs(
    ctx: Context,
    run_id: int,
    config: AoiConfig,
    step: str,
    tiles: pd.DataFrame,
    findings: pd.DataFrame,
    shard_ids: list[str],
    *,
    pages: bool = True,
) -> ValidationReport:
    """Run the output suites on a run's tile scores and findings before they are
    published; store the results and return the report."""
    t0 = time.perf_counter()
    wanted = set(shard_ids)
    expected = {
        (t.z, t.x, t.y) for shard, ts in config.shards().items() if shard.id in wanted for t in ts
    }
    report = ValidationReport()
    name = f"run {run_id} outputs"
    tile_frame = profiles.output_tile_profile(tiles, expected)
    run_frame = profiles.output_run_profile(tiles, findings, expected)
    report.checked.append(CheckedInput(run_suite("outputs.tiles", tile_frame, {}), name))
    report.checked.append(CheckedInput(run_suite("outputs.run", run_frame, {}), name))
    _store(ctx, config.name, step, f"run-{run_id}", report, run_id, pages=pages)
    report.seconds = time.perf_counter() - t0
    return report


# --- helpers --------------------------------------------------------------------------


def _opendata_with_previous(ctx: Context, snapshot_id: int) -> tuple[OpenDataSnapshot, int | None]:
    """The open-data snapshot, and the previous step's feature count."""
    with Session(ctx.engine) as s:
        snap = opendata_snapshot(s, snapshot_id)
        previous = repo.previous_snapshot(s, snap.aoi_id, "opendata", snap.step)
        count = int(previous.feature_count) if previous and previous.feature_count else None
    return snap, count


def _decimated_reader(ctx: Context, imagery: ImagerySnapshot) -> Any:
    def read(shard_id: str, size: int) -> tuple[np.ndarray, np.ndarray] | None:
        ref = imagery.shards.get(shard_id)
        return None if ref is None else tuple(read_shard_image(ctx, ref, size=size))

    return read


def _feature_profile(ctx: Context, snap: OpenDataSnapshot, required: list[str]) -> pd.DataFrame:
    """The per-feature profile stored at fetch time; for snapshots fetched before
    profiles existed, one taken from the stored (repaired) footprints."""
    if snap.profile_key and ctx.store.exists(snap.profile_key):
        return pd.read_parquet(io.BytesIO(ctx.store.read_bytes(snap.profile_key)))
    frame = read_geoparquet(ctx, snap.key)
    return profiles.opendata_feature_profile(frame.to_crs("EPSG:4326"), required)


def _store(
    ctx: Context,
    aoi: str,
    step: str,
    tag: str,
    report: ValidationReport,
    run_id: int | None,
    *,
    pages: bool = True,
) -> None:
    """Store the results (rows naming their Data Docs pages), and write the pages now or,
    with ``pages=False``, leave them to :meth:`ValidationReport.write_pages`."""
    report.checked = [
        CheckedInput(
            c.outcome,
            c.input_name,
            c.snapshot_id,
            layout.validation_page_key(aoi, step, tag, c.outcome.suite),
        )
        for c in report.checked
    ]
    report.index_key = layout.validation_index_key(aoi, step, tag)
    report.index_uri = ctx.store.uri(report.index_key)
    report.header = (aoi, step, tag)
    outcomes = [
        {
            "suite": item.outcome.suite,
            "success": item.outcome.success,
            "severity": item.outcome.severity,
            "statistics": {
                **item.outcome.statistics,
                "input": item.input_name,
                "data_docs_key": item.docs_key,
            },
            "failed": [f.as_dict() for f in item.outcome.failed],
            "snapshot_id": item.snapshot_id,
        }
        for item in report.checked
    ]
    with write_session(ctx.engine) as s:
        report.result_ids.extend(repo.replace_validation_results(s, outcomes, run_id=run_id))
    if pages:
        report.write_pages(ctx.store)
