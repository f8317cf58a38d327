"""The validation gate: run the suites on an audit's inputs and outputs, store the
results (database rows + Data Docs pages in the artifact store), and stop the audit on
a critical failure.

    report = validate_inputs(ctx, run_id)          # before any shard is scored
    report.raise_for_critical()                    # ValidationFailedError, names inputs
    ...
    validate_outputs(ctx, run_id, config, step, tiles, findings, shard_ids).raise_for_critical()
"""

from __future__ import annotations

import html
import io
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import pandas as pd
from sqlalchemy.orm import Session

from pipeline.aoi import AoiConfig, ValidationSettings
from pipeline.aois import get_aoi_config
from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.models import Snapshot
from pipeline.errors import ValidationFailedError
from pipeline.validate import profiles
from pipeline.validate.gx import FailedExpectation, SuiteOutcome, run_suite

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckedInput:
    """One suite's outcome on one input (a snapshot's source, or a run's outputs)."""

    outcome: SuiteOutcome
    input_name: str
    snapshot_id: int | None = None
    docs_key: str | None = None  # artifact key of its Data Docs page


@dataclass
class ValidationReport:
    """Outcomes of the suites run on an audit's inputs or outputs."""

    checked: list[CheckedInput] = field(default_factory=list)
    result_ids: list[int] = field(default_factory=list)
    index_key: str | None = None
    index_uri: str | None = None
    header: tuple[str, str, str] = ("", "", "")
    seconds: float = 0.0

    def write_pages(self, ctx: Context) -> None:
        """Write the Data Docs page of every suite and their index to the artifact store
        (needs the GX results: in the process that validated)."""
        for item in self.checked:
            if item.docs_key:
                ctx.store.write_bytes(item.docs_key, item.outcome.page().encode())
        if self.index_key:
            ctx.store.write_bytes(self.index_key, _index_page(*self.header, self.checked))

    @property
    def success(self) -> bool:
        """True when every expectation held (warnings included)."""
        return all(c.outcome.success for c in self.checked)

    @property
    def critical(self) -> list[tuple[str, FailedExpectation]]:
        """``(input, failed expectation)`` of every critical failure."""
        return [(c.input_name, f) for c in self.checked for f in c.outcome.critical]

    @property
    def warnings(self) -> list[tuple[str, FailedExpectation]]:
        """``(input, failed expectation)`` of every failure that lets the audit go on."""
        return [
            (c.input_name, f)
            for c in self.checked
            for f in c.outcome.failed
            if f.severity != "critical"
        ]

    def reason(self) -> str:
        """The critical failures in words, each naming its input."""
        lines = [f"{name}: {f.describe()}" for name, f in self.critical]
        return "validation failed (critical): " + "; ".join(lines)

    def raise_for_critical(self) -> None:
        """Raise :class:`ValidationFailedError` when a critical expectation failed."""
        if self.critical:
            raise ValidationFailedError(self.reason())

    def summary(self) -> dict[str, Any]:
        """Small JSON-able summary (what an Airflow task returns)."""
        return {
            "success": self.success,
            "suites": {c.outcome.suite: c.outcome.severity for c in self.checked},
            "n_critical": len(self.critical),
            "n_warnings": len(self.warnings),
            "warnings": [f"{name}: {f.describe()}" for name, f in self.warnings][:20],
            "data_docs": self.index_uri,
            "seconds": round(self.seconds, 3),
        }


def suite_parameters(v: ValidationSettings) -> dict[str, Any]:
    """``$PARAMETER`` values of the suites from an AOI's validation settings."""
    return {
        "max_vertices": v.max_vertices,
        "valid_mostly": max(1.0 - v.max_repaired_share, 1e-9),
        "min_area_m2": v.min_area_m2,
        "max_area_m2": v.max_area_m2,
        "area_mostly": v.area_mostly,
        "min_count_ratio": max(1.0 - v.count_change_band, 0.0),
        "max_count_ratio": 1.0 + v.count_change_band,
        "max_nodata_share": v.max_nodata_share,
        "min_coverage": v.min_coverage,
        "min_brightness_ratio": max(1.0 - v.brightness_band, 0.0),
        "max_brightness_ratio": 1.0 + v.brightness_band,
        "max_colour_shift": v.max_colour_shift,
    }


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
        snap, previous_count = _snapshot(ctx, opendata_id, "opendata")
        step = snap["step"]
        features = _feature_profile(ctx, snap, config.validation.required_attributes)
        summary = profiles.opendata_snapshot_profile(
            snap["meta"], snap["feature_count"], previous_count, config.validation.opendata_crs
        )
        for name, frame in (("opendata.features", features), ("opendata.snapshot", summary)):
            report.checked.append(
                CheckedInput(
                    run_suite(name, frame, params), f"open data {snap['source']!r}", snap["id"]
                )
            )
    if imagery_id is not None:
        snap, _ = _snapshot(ctx, imagery_id, "imagery")
        step = snap["step"]
        shards = profiles.imagery_shard_profile(config, snap["meta"], ctx.store.readable_path)
        with Session(ctx.engine) as s:
            history = repo.validation_history(s, snap["aoi_id"], "imagery.snapshot", step)
        source = dict(snap["meta"].get("source") or {})
        one, step_summary = profiles.imagery_snapshot_profile(
            shards, source, [h["summary"] for h in history if h.get("summary")]
        )
        img_params = {
            **params,
            "band_counts": config.validation.imagery_band_counts or [int(one.at[0, "band_count"])],
            "dtypes": config.validation.imagery_dtypes or [str(one.at[0, "dtype"])],
        }
        name = f"imagery {snap['source']!r}"
        shard_outcome = run_suite("imagery.shards", shards, img_params)
        snap_outcome = run_suite("imagery.snapshot", one, img_params)
        snap_outcome.statistics["summary"] = {
            k: (None if pd.isna(v) else float(v)) for k, v in step_summary.items()
        }
        report.checked.append(CheckedInput(shard_outcome, name, snap["id"]))
        report.checked.append(CheckedInput(snap_outcome, name, snap["id"]))
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


def _snapshot(ctx: Context, snapshot_id: int, kind: str) -> tuple[dict[str, Any], int | None]:
    """The snapshot's fields, and the previous step's feature count of the same kind."""
    with Session(ctx.engine) as s:
        snap: Snapshot = repo.get_snapshot(s, snapshot_id)
        if snap.kind != kind:
            raise ValidationFailedError(f"snapshot {snapshot_id} is {snap.kind}, not {kind}")
        previous = repo.previous_snapshot(s, snap.aoi_id, kind, snap.step)
        return (
            {
                "id": snap.id,
                "aoi_id": snap.aoi_id,
                "step": snap.step,
                "source": snap.source,
                "feature_count": int(snap.feature_count or 0),
                "meta": dict(snap.meta or {}),
            },
            int(previous.feature_count) if previous and previous.feature_count else None,
        )


def _feature_profile(ctx: Context, snap: dict[str, Any], required: list[str]) -> pd.DataFrame:
    """The per-feature profile stored at fetch time; for snapshots fetched before
    profiles existed, one taken from the stored (repaired) footprints."""
    key = snap["meta"].get("profile_key")
    if key and ctx.store.exists(key):
        return pd.read_parquet(io.BytesIO(ctx.store.read_bytes(key)))
    frame = gpd.read_parquet(io.BytesIO(ctx.store.read_bytes(snap["meta"]["key"])))
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
    prefix = f"aois/{aoi}/validation/{step or 'unknown'}/{tag}"
    report.checked = [
        CheckedInput(c.outcome, c.input_name, c.snapshot_id, f"{prefix}/{c.outcome.suite}.html")
        for c in report.checked
    ]
    report.index_key = f"{prefix}/index.html"
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
    with Session(ctx.engine) as s, s.begin():
        report.result_ids.extend(repo.replace_validation_results(s, outcomes, run_id=run_id))
    if pages:
        report.write_pages(ctx)


def _index_page(aoi: str, step: str, tag: str, checked: list[CheckedInput]) -> bytes:
    """A small HTML index linking the Data Docs page of every suite."""
    title = f"{html.escape(aoi)} {html.escape(step)} ({html.escape(tag)})"
    rows = "".join(
        f"<tr><td><a href='{html.escape(c.outcome.suite)}.html'>{html.escape(c.outcome.suite)}"
        f"</a></td><td>{html.escape(c.input_name)}</td>"
        f"<td>{'passed' if c.outcome.success else 'failed'}</td>"
        f"<td>{html.escape(c.outcome.severity)}</td>"
        f"<td>{html.escape('; '.join(f.describe() for f in c.outcome.failed))}</td></tr>"
        for c in checked
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>GeoAudit validation {title}</title>"
        "</head><body>"
        f"<h1>Validation of {title}</h1>"
        "<table border='1' cellpadding='4'><tr><th>Suite</th><th>Input</th><th>Result</th>"
        f"<th>Worst failure</th><th>Failed expectations</th></tr>{rows}</table>"
        "<p>Each suite links to its Great Expectations Data Docs page.</p></body></html>"
    )
    return page.encode()
