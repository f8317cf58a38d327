"""Data functions: AOIs, snapshots, runs and run results.

Every function takes a :class:`~sqlalchemy.orm.Session` and never commits; the
caller owns the transaction::

    with write_session(engine) as s:
        run = start_run(s, aoi.id, "2024-06", trigger="cli", shards_total=4)

Geometries going in are shapely geometries in EPSG:4326. Result rows are
written with one bulk ``INSERT`` (executemany), so a shard of thousands of tiles
is quick. The model registry, reviews and GeoDataFrame readers live in
:mod:`pipeline.db.registry`, :mod:`pipeline.db.reviews` and
:mod:`pipeline.db.frames` and are re-exported here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import and_, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from pipeline.db._rows import check_rows, plain, upsert
from pipeline.db.errors import RowError, RunStateError
from pipeline.db.frames import changes_frame, findings_frame, hotspots_frame, tile_scores_frame
from pipeline.db.models import (
    RUN_STATUSES,
    SNAPSHOT_KINDS,
    Aoi,
    AoiScore,
    Change,
    Finding,
    Hotspot,
    Run,
    RunShard,
    Snapshot,
    TileScore,
    ValidationResult,
)
from pipeline.db.registry import (
    archive,
    cached_prediction,
    drop_prediction,
    get_model_version,
    list_model_versions,
    production_model,
    promote,
    register_model_version,
    store_prediction,
)
from pipeline.db.reviews import (
    label_wrong_tiles,
    list_reviews,
    reviewed_findings,
    upsert_review,
)
from pipeline.db.types import check_geometries
from pipeline.errors import InvalidTileError, NotFoundError
from pipeline.tiles import shard_tile

__all__ = [
    "add_snapshot",
    "add_validation_result",
    "previous_snapshot",
    "unfinished_runs",
    "touch_run",
    "replace_validation_results",
    "validation_history",
    "aoi_scores",
    "archive",
    "cached_prediction",
    "drop_prediction",
    "changes_frame",
    "done_shards",
    "fail_shard",
    "findings_frame",
    "finish_run",
    "get_aoi",
    "get_model_version",
    "get_run",
    "get_snapshot",
    "hotspots_frame",
    "label_wrong_tiles",
    "latest_run",
    "latest_snapshot",
    "list_aois",
    "list_model_versions",
    "list_reviews",
    "list_runs",
    "previous_run",
    "production_model",
    "promote",
    "register_model_version",
    "replace_changes",
    "replace_findings",
    "replace_hotspots",
    "replace_shard_results",
    "reviewed_findings",
    "require_shards_done",
    "run_by_external_id",
    "start_run",
    "store_prediction",
    "tile_scores_frame",
    "add_stage_seconds",
    "update_tile_flags",
    "upsert_aoi",
    "upsert_review",
    "write_aoi_score",
]

# --- AOIs ------------------------------------------------------------------------------


def upsert_aoi(s: Session, name: str, config: Mapping[str, Any], geometry: BaseGeometry) -> Aoi:
    """Create the AOI ``name`` or update its config and outline (a lon/lat Polygon or
    MultiPolygon, stored as MultiPolygon)."""
    if not isinstance(name, str) or not name.strip():
        raise RowError(f"AOI name must be a non-empty string, got {name!r}")
    if isinstance(geometry, shapely.Polygon):
        geometry = shapely.MultiPolygon([geometry])
    geom = check_geometries([geometry], "MULTIPOLYGON", label=f"AOI {name!r} geometry")[0]
    aoi_id = upsert(
        s,
        Aoi,
        {"name": name, "config": dict(config or {}), "geometry": geom},
        ["name"],
        also_set={"updated_at": func.now()},
        returning=Aoi.id,
    )
    return s.get_one(Aoi, aoi_id, populate_existing=True)


def get_aoi(s: Session, name: str | int) -> Aoi:
    """The AOI called ``name`` (or with id ``name`` when an int); NotFoundError otherwise."""
    if isinstance(name, int):
        aoi = s.get(Aoi, name)
    else:
        aoi = s.scalars(select(Aoi).where(Aoi.name == name)).one_or_none()
    if aoi is None:
        known = s.scalars(select(Aoi.name).order_by(Aoi.name).limit(20)).all()
        hint = f"known AOIs: {', '.join(known)}" if known else "no AOI is registered yet"
        what = f"AOI id {name}" if isinstance(name, int) else f"AOI {name!r}"
        raise NotFoundError(f"{what} does not exist; {hint}")
    return aoi


def list_aois(s: Session) -> list[Aoi]:
    """All AOIs by name."""
    return list(s.scalars(select(Aoi).order_by(Aoi.name)))


# --- snapshots -------------------------------------------------------------------------


def add_snapshot(
    s: Session,
    aoi_id: int,
    kind: str,
    step: str,
    *,
    source: str,
    content_hash: str,
    uri: str | None = None,
    feature_count: int | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Snapshot:
    """Record a snapshot. An identical one (same AOI, kind, step, content hash) keeps its
    row and id but takes this fetch's source, location and metadata: the latest fetch
    is what a later fetch of the same source recognises (its fingerprint)."""
    if kind not in SNAPSHOT_KINDS:
        raise RowError(f"snapshot kind must be one of {SNAPSHOT_KINDS}, got {kind!r}")
    _aoi(s, aoi_id)
    key = {"aoi_id": aoi_id, "kind": kind, "step": step, "content_hash": content_hash}
    values = {
        **key,
        "source": source,
        "uri": uri,
        "feature_count": plain(feature_count),
        "meta": dict(meta) if meta is not None else None,
    }
    upsert(s, Snapshot, values, list(key))
    snap = s.scalars(select(Snapshot).filter_by(**key)).one()
    s.refresh(snap)
    return snap


def get_snapshot(s: Session, snapshot_id: int) -> Snapshot:
    """Snapshot by id; NotFoundError otherwise."""
    snap = s.get(Snapshot, snapshot_id)
    if snap is None:
        raise NotFoundError(f"snapshot {snapshot_id} does not exist")
    return snap


def latest_snapshot(s: Session, aoi_id: int, kind: str, step: str | None = None) -> Snapshot | None:
    """The newest snapshot of ``kind`` for the AOI at ``step`` (any step when None)."""
    q = select(Snapshot).where(Snapshot.aoi_id == aoi_id, Snapshot.kind == kind)
    if step is not None:
        q = q.where(Snapshot.step == step)
    q = q.order_by(Snapshot.step.desc(), Snapshot.created_at.desc(), Snapshot.id.desc())
    return s.scalars(q.limit(1)).first()


# --- runs ------------------------------------------------------------------------------


def start_run(
    s: Session,
    aoi_id: int,
    step: str,
    *,
    trigger: str,
    shards_total: int,
    params: Mapping[str, Any] | None = None,
    imagery_snapshot_id: int | None = None,
    opendata_snapshot_id: int | None = None,
    model_version_id: int | None = None,
    external_id: str | None = None,
    status: str = "running",
) -> Run:
    """Create a run of the AOI at ``step`` planned over ``shards_total`` shards."""
    if status not in ("queued", "running"):
        raise RunStateError(f"a run starts 'queued' or 'running', not {status!r}")
    shards_total = _shards_total(shards_total)
    _aoi(s, aoi_id)
    run = Run(
        aoi_id=aoi_id,
        step=step,
        status=status,
        trigger=trigger,
        external_id=external_id,
        params=dict(params) if params is not None else None,
        imagery_snapshot_id=imagery_snapshot_id,
        opendata_snapshot_id=opendata_snapshot_id,
        model_version_id=model_version_id,
        shards_total=shards_total,
    )
    s.add(run)
    s.flush()
    return run


def record_no_new_data(
    s: Session,
    aoi_id: int,
    step: str,
    *,
    trigger: str,
    params: Mapping[str, Any] | None = None,
    imagery_snapshot_id: int | None = None,
    opendata_snapshot_id: int | None = None,
    model_version_id: int | None = None,
    external_id: str | None = None,
) -> Run:
    """Record a finished run of the AOI at ``step`` that found no new data: its sources
    and model are those of the last succeeded run, so nothing was audited. It has no
    results and is never the "latest succeeded run" of anything."""
    _aoi(s, aoi_id)
    run = Run(
        aoi_id=aoi_id,
        step=step,
        status="no_new_data",
        trigger=trigger,
        external_id=external_id,
        params=dict(params) if params is not None else None,
        imagery_snapshot_id=imagery_snapshot_id,
        opendata_snapshot_id=opendata_snapshot_id,
        model_version_id=model_version_id,
        shards_total=0,
        finished_at=func.now(),
    )
    s.add(run)
    s.flush()
    return run


def add_stage_seconds(s: Session, run_id: int, seconds: Mapping[str, float]) -> dict[str, Any]:
    """Add stage timings to the run's ``stage_seconds`` (``{stage: {"seconds": s}}``; a
    stage recorded again adds up); the stored mapping. Each stage records its own time."""
    run = get_run(s, run_id, for_update=True)
    stored = {k: dict(v) for k, v in (run.stage_seconds or {}).items()}
    for stage, secs in seconds.items():
        entry = stored.setdefault(stage, {"seconds": 0.0})
        entry["seconds"] = round(float(entry.get("seconds", 0.0)) + float(secs), 4)
    run.stage_seconds = stored
    s.flush()
    return stored


def finish_run(
    s: Session,
    run_id: int,
    status: str,
    *,
    error: str | None = None,
    stage_seconds: Mapping[str, float] | None = None,
) -> Run:
    """Mark a run ``succeeded`` or ``failed`` and stamp ``finished_at``.

    ``succeeded`` is refused (RunStateError) unless every planned shard
    (``shards_total``) has a ``done`` run_shard row: a half-written run is never
    shown as finished.
    """
    if status not in ("succeeded", "failed"):
        raise RunStateError(
            f"run {run_id}: finish_run takes 'succeeded' or 'failed', not {status!r}"
        )
    run = get_run(s, run_id, for_update=True)
    if status == "succeeded":
        require_shards_done(s, run_id)
    run.status = status
    run.finished_at = func.now()
    run.error = error
    if stage_seconds is not None:
        run.stage_seconds = dict(stage_seconds)
    s.flush()
    return run


def require_shards_done(s: Session, run_id: int) -> None:
    """RunStateError naming the failed shards unless every planned shard of the run
    (``shards_total``) has a ``done`` row: a half-written run is never finished."""
    run = get_run(s, run_id)
    rows = s.execute(
        select(RunShard.shard_id, RunShard.status).where(RunShard.run_id == run_id)
    ).all()
    done = sum(1 for r in rows if r.status == "done")
    if done < run.shards_total:
        failed = sorted(r.shard_id for r in rows if r.status == "failed")
        detail = f"; failed shards: {', '.join(failed[:10])}" if failed else ""
        raise RunStateError(
            f"run {run_id} (step {run.step!r}): cannot mark succeeded, only {done} of "
            f"{run.shards_total} planned shards are done{detail}; re-run the missing "
            "shards or finish the run as 'failed'"
        )


def get_run(s: Session, run_id: int, *, for_update: bool = False) -> Run:
    """Run by id; NotFoundError otherwise. ``for_update`` locks the row (PostgreSQL)."""
    q = select(Run).where(Run.id == run_id)
    if for_update:
        q = q.with_for_update()
    run = s.scalars(q).one_or_none()
    if run is None:
        raise NotFoundError(f"run {run_id} does not exist")
    return run


def run_by_external_id(s: Session, external_id: str) -> Run | None:
    """The newest run carrying ``external_id`` (e.g. an Airflow run id), or None."""
    q = select(Run).where(Run.external_id == external_id).order_by(Run.id.desc()).limit(1)
    return s.scalars(q).first()


def latest_run(
    s: Session, aoi_id: int, *, step: str | None = None, status: str | None = "succeeded"
) -> Run | None:
    """The AOI's run at the highest step (or at ``step``), newest first; None if none.

    ``status=None`` accepts any status.
    """
    q = select(Run).where(Run.aoi_id == aoi_id)
    if step is not None:
        q = q.where(Run.step == step)
    if status is not None:
        q = q.where(Run.status == _run_status(status))
    q = q.order_by(Run.step.desc(), Run.started_at.desc(), Run.id.desc()).limit(1)
    return s.scalars(q).first()


def unfinished_runs(s: Session, aoi_id: int, step: str, *, scheduled: bool) -> list[Run]:
    """Queued or running runs of the AOI and step, by id: those a scheduler owns (an
    ``external_id``; their tasks come and go, so only their heartbeat tells if they
    live), or the local ones (none; while the caller holds the audit lock, their
    process is gone)."""
    owner = Run.external_id.is_not(None) if scheduled else Run.external_id.is_(None)
    q = select(Run).where(
        Run.aoi_id == aoi_id, Run.step == step, Run.status.in_(("queued", "running")), owner
    )
    return list(s.scalars(q.order_by(Run.id)))


def touch_run(s: Session, run_id: int) -> Run:
    """Record that a task of the run is alive now (``heartbeat_at``); the run."""
    run = get_run(s, run_id)
    run.heartbeat_at = dt.datetime.now(dt.UTC)
    return run


def previous_run(s: Session, aoi_id: int, before_step: str) -> Run | None:
    """The latest succeeded run of the AOI whose step sorts before ``before_step``.

    Steps compare as text, so they must sort chronologically (``2024-06``, ``2024-W23``).
    """
    q = (
        select(Run)
        .where(Run.aoi_id == aoi_id, Run.status == "succeeded", Run.step < before_step)
        .order_by(Run.step.desc(), Run.started_at.desc(), Run.id.desc())
        .limit(1)
    )
    return s.scalars(q).first()


def reusable_run(
    s: Session,
    aoi_id: int,
    step: str,
    *,
    imagery_snapshot_id: int,
    opendata_snapshot_id: int,
    model_version_id: int,
    inputs_key: str,
) -> Run | None:
    """The newest succeeded run of ``step`` made from exactly these inputs, or None.

    ``inputs_key`` (kept in ``run.params``) covers what the ids do not: thresholds,
    tiling and the previous step's run the changes were computed against.
    """
    q = (
        select(Run)
        .where(
            Run.aoi_id == aoi_id,
            Run.step == step,
            Run.status == "succeeded",
            Run.imagery_snapshot_id == imagery_snapshot_id,
            Run.opendata_snapshot_id == opendata_snapshot_id,
            Run.model_version_id == model_version_id,
        )
        .order_by(Run.id.desc())
    )
    for run in s.scalars(q):
        if (run.params or {}).get("inputs_key") == inputs_key:
            return run
    return None


def run_result_counts(s: Session, run_id: int) -> dict[str, int]:
    """How many findings, changes and hotspots a run has stored."""
    return {
        f"n_{name}": s.scalar(select(func.count()).select_from(model).where(model.run_id == run_id))
        or 0
        for name, model in (("findings", Finding), ("changes", Change), ("hotspots", Hotspot))
    }


def kinds_of_results(s: Session, run_id: int) -> dict[str, dict[str, int]]:
    """How many findings and changes of each kind a run has stored:
    ``{"findings": {kind: n}, "changes": {kind: n}}`` (kinds with none left out)."""
    return {
        name: {
            str(kind): int(n)
            for kind, n in s.execute(
                select(model.kind, func.count())
                .where(model.run_id == run_id)
                .group_by(model.kind)
                .order_by(func.count().desc(), model.kind)
            )
        }
        for name, model in (("findings", Finding), ("changes", Change))
    }


def top_hotspots(s: Session, run_id: int, k: int) -> list[Hotspot]:
    """The run's ``k`` best-ranked hotspot cells."""
    q = select(Hotspot).where(Hotspot.run_id == run_id).order_by(Hotspot.rank).limit(k)
    return list(s.scalars(q))


def list_runs(
    s: Session, aoi_id: int | None = None, *, status: str | None = None, limit: int = 100
) -> list[Run]:
    """Runs newest first (by start time), optionally of one AOI and/or status."""
    q = select(Run)
    if aoi_id is not None:
        q = q.where(Run.aoi_id == aoi_id)
    if status is not None:
        q = q.where(Run.status == _run_status(status))
    return list(s.scalars(q.order_by(Run.started_at.desc(), Run.id.desc()).limit(limit)))


def done_shards(s: Session, run_id: int) -> set[str]:
    """Ids of the run's shards whose results are written."""
    q = select(RunShard.shard_id).where(RunShard.run_id == run_id, RunShard.status == "done")
    return set(s.scalars(q))


# --- run results -----------------------------------------------------------------------


def replace_shard_results(
    s: Session,
    run_id: int,
    shard_id: str,
    tile_scores: Sequence[Mapping[str, Any]],
    stats: Mapping[str, Any] | None = None,
) -> int:
    """Replace the shard's tile scores and mark the shard ``done``; returns the row count.

    Rows are dicts of ``tile_score`` columns (``z``, ``x``, ``y`` required; the
    tile outline is filled in when ``geometry`` is left out). Re-running a shard
    overwrites it; tiles must lie inside the shard ``"z-x-y"``.
    """
    get_run(s, run_id)
    rows = check_rows(
        TileScore,
        tile_scores,
        fixed={"run_id": run_id, "shard_id": shard_id},
        label=f"run {run_id} shard {shard_id} tile_scores",
        tile_keys=("z", "x", "y"),
    )
    _check_tiles_in_shard(rows, shard_id, run_id)
    s.execute(
        delete(TileScore)
        .where(TileScore.run_id == run_id, TileScore.shard_id == shard_id)
        .execution_options(synchronize_session=False)
    )
    if rows:
        s.execute(insert(TileScore), rows)
    upsert(
        s,
        RunShard,
        {"run_id": run_id, "shard_id": shard_id, "status": "done", "stats": dict(stats or {})},
        ["run_id", "shard_id"],
        also_set={"finished_at": func.now()},
    )
    return len(rows)


def fail_shard(s: Session, run_id: int, shard_id: str, error: str) -> None:
    """Record that the shard failed (its earlier results, if any, are left as they were)."""
    get_run(s, run_id)
    upsert(
        s,
        RunShard,
        {"run_id": run_id, "shard_id": shard_id, "status": "failed", "stats": {"error": error}},
        ["run_id", "shard_id"],
        also_set={"finished_at": func.now()},
    )


def replace_findings(
    s: Session,
    run_id: int,
    findings: Sequence[Mapping[str, Any]],
    *,
    shard_id: str | None = None,
) -> int:
    """Replace the run's findings (only that shard's when ``shard_id`` is given).

    Rows are dicts of ``finding`` columns; ``kind`` and ``geometry`` are required.
    Reviews of replaced findings keep their verdict and tile (finding_id -> NULL).
    """
    get_run(s, run_id)
    fixed: dict[str, Any] = {"run_id": run_id}
    if shard_id is not None:
        fixed["shard_id"] = shard_id
    rows = check_rows(Finding, findings, fixed=fixed, label=f"run {run_id} findings")
    q = delete(Finding).where(Finding.run_id == run_id)
    if shard_id is not None:
        q = q.where(Finding.shard_id == shard_id)
    s.execute(q.execution_options(synchronize_session=False))
    if rows:
        s.execute(insert(Finding), rows)
    return len(rows)


def replace_changes(
    s: Session,
    run_id: int,
    changes: Sequence[Mapping[str, Any]],
    *,
    step_from: str | None = None,
) -> int:
    """Replace the run's changes; ``step_to`` is the run's step, ``step_from`` per row or given."""
    run = get_run(s, run_id)
    defaults = {"step_from": step_from} if step_from is not None else {}
    rows = check_rows(
        Change,
        changes,
        fixed={"run_id": run_id, "aoi_id": run.aoi_id, "step_to": run.step},
        defaults=defaults,
        label=f"run {run_id} changes",
    )
    s.execute(
        delete(Change).where(Change.run_id == run_id).execution_options(synchronize_session=False)
    )
    if rows:
        s.execute(insert(Change), rows)
    return len(rows)


def replace_hotspots(s: Session, run_id: int, rows: Sequence[Mapping[str, Any]]) -> int:
    """Replace the run's hotspots; ``rank`` defaults to the row order (1 = hottest) and
    ``geometry`` to the outline of cell ``z/x/y``.
    """
    get_run(s, run_id)
    ranked = [{"rank": i + 1, **row} for i, row in enumerate(rows)]
    clean = check_rows(
        Hotspot,
        ranked,
        fixed={"run_id": run_id},
        label=f"run {run_id} hotspots",
        tile_keys=("z", "x", "y"),
    )
    s.execute(
        delete(Hotspot).where(Hotspot.run_id == run_id).execution_options(synchronize_session=False)
    )
    if clean:
        s.execute(insert(Hotspot), clean)
    return len(clean)


def write_aoi_score(s: Session, run_id: int, values: Mapping[str, Any]) -> AoiScore:
    """Insert or replace the run's AOI score (completeness, correctness, means, counts...)."""
    run = get_run(s, run_id)
    defaults = {"model_version_id": run.model_version_id}
    (row,) = check_rows(
        AoiScore,
        [values],
        fixed={"run_id": run_id, "aoi_id": run.aoi_id, "step": run.step},
        defaults=defaults,
        label=f"run {run_id} aoi_score",
    )
    row.pop("created_at", None)
    score_id = upsert(
        s, AoiScore, row, ["run_id"], also_set={"created_at": func.now()}, returning=AoiScore.id
    )
    return s.get_one(AoiScore, score_id, populate_existing=True)


def update_tile_flags(s: Session, run_id: int, rows: Sequence[Mapping[str, Any]]) -> int:
    """Set ``flagged`` / ``n_findings`` (or other score columns) of existing tile rows.

    Rows are dicts with ``z``, ``x``, ``y`` and the columns to set; returns the
    number of tiles updated.
    """
    key = ("z", "x", "y")
    frozen = {"id", "run_id", "shard_id", "geometry", *key}
    settable = {c.name for c in TileScore.__table__.columns} - frozen
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        if not all(k in row for k in key):
            raise RowError(f"run {run_id} tile flags[{i}]: needs keys z, x, y, got {sorted(row)}")
        cols = tuple(sorted(row.keys() - set(key)))
        bad = set(cols) - settable
        if bad:
            raise RowError(
                f"run {run_id} tile flags[{i}]: cannot set {sorted(bad)}; "
                f"settable: {sorted(settable)}"
            )
        params = {f"b_{k}": plain(v) for k, v in row.items()}
        groups.setdefault(cols, []).append(params)
    table = TileScore.__table__
    updated = 0
    for cols, params in groups.items():
        if not cols:
            continue
        stmt = (
            update(table)
            .where(
                and_(
                    table.c.run_id == run_id,
                    table.c.z == bindparam("b_z"),
                    table.c.x == bindparam("b_x"),
                    table.c.y == bindparam("b_y"),
                )
            )
            .values({c: bindparam(f"b_{c}") for c in cols})
        )
        result = s.connection().execute(stmt, params)
        updated += max(result.rowcount, 0)
    return updated


def add_validation_result(
    s: Session,
    suite: str,
    success: bool,
    severity: str,
    *,
    statistics: Mapping[str, Any] | None = None,
    failed: Any = None,
    run_id: int | None = None,
    snapshot_id: int | None = None,
) -> ValidationResult:
    """Record the outcome of a validation suite on a snapshot and/or run."""
    result = ValidationResult(
        suite=suite,
        success=bool(success),
        severity=severity,
        statistics=dict(statistics) if statistics is not None else None,
        failed=failed,
        run_id=run_id,
        snapshot_id=snapshot_id,
    )
    s.add(result)
    s.flush()
    return result


def replace_validation_results(
    s: Session,
    outcomes: Sequence[Mapping[str, Any]],
    *,
    run_id: int | None,
) -> list[int]:
    """Store suite outcomes (``suite``, ``success``, ``severity``, ``statistics``,
    ``failed``, ``snapshot_id``), replacing earlier results of the same suites for the
    same run (or, without a run, for the same snapshots): re-validating is idempotent."""
    for item in outcomes:
        q = delete(ValidationResult).where(ValidationResult.suite == item["suite"])
        if run_id is not None:
            q = q.where(ValidationResult.run_id == run_id)
        else:
            q = q.where(
                ValidationResult.run_id.is_(None),
                ValidationResult.snapshot_id == item.get("snapshot_id"),
            )
        s.execute(q)
    ids = []
    for item in outcomes:
        row = add_validation_result(
            s,
            item["suite"],
            item["success"],
            item["severity"],
            statistics=item.get("statistics"),
            failed=item.get("failed"),
            run_id=run_id,
            snapshot_id=item.get("snapshot_id"),
        )
        ids.append(row.id)
    return ids


def previous_snapshot(s: Session, aoi_id: int, kind: str, before_step: str) -> Snapshot | None:
    """The newest snapshot of ``kind`` for the AOI at the latest step before ``before_step``."""
    q = (
        select(Snapshot)
        .where(Snapshot.aoi_id == aoi_id, Snapshot.kind == kind, Snapshot.step < before_step)
        .order_by(Snapshot.step.desc(), Snapshot.created_at.desc(), Snapshot.id.desc())
        .limit(1)
    )
    return s.scalars(q).first()


def validation_history(
    s: Session, aoi_id: int, suite: str, before_step: str, *, limit: int = 12
) -> list[dict[str, Any]]:
    """Statistics of the latest result of ``suite`` per earlier step of the AOI (newest
    step first), taken on that step's snapshots."""
    q = (
        select(Snapshot.step, ValidationResult.statistics)
        .join(Snapshot, Snapshot.id == ValidationResult.snapshot_id)
        .where(
            Snapshot.aoi_id == aoi_id,
            Snapshot.step < before_step,
            ValidationResult.suite == suite,
        )
        .order_by(Snapshot.step.desc(), ValidationResult.id.desc())
    )
    seen: dict[str, dict[str, Any]] = {}
    for step, stats in s.execute(q):
        if step not in seen and stats:
            seen[step] = dict(stats)
        if len(seen) >= limit:
            break
    return list(seen.values())


def aoi_scores(s: Session, aoi_id: int) -> list[AoiScore]:
    """The AOI's trend: scores of its succeeded runs by step (latest run per step)."""
    latest = (
        select(func.max(Run.id))
        .where(Run.aoi_id == aoi_id, Run.status == "succeeded")
        .group_by(Run.step)
    )
    q = (
        select(AoiScore)
        .where(AoiScore.aoi_id == aoi_id, AoiScore.run_id.in_(latest))
        .order_by(AoiScore.step)
    )
    return list(s.scalars(q))


# --- helpers ---------------------------------------------------------------------------


def _aoi(s: Session, aoi_id: int) -> Aoi:
    aoi = s.get(Aoi, aoi_id)
    if aoi is None:
        raise NotFoundError(f"AOI id {aoi_id} does not exist")
    return aoi


def _run_status(status: str) -> str:
    if status not in RUN_STATUSES:
        raise RowError(f"run status must be one of {RUN_STATUSES}, got {status!r}")
    return status


def _shards_total(value: Any) -> int:
    value = plain(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RowError(f"shards_total must be an integer >= 0, got {value!r}")
    return value


def _check_tiles_in_shard(rows: list[dict[str, Any]], shard_id: str, run_id: int) -> None:
    """Tiles must be children of the shard that ``shard_id`` names."""
    try:
        shard = shard_tile(shard_id)
    except InvalidTileError as exc:
        raise RowError(f"run {run_id}: {exc}") from exc
    for i, r in enumerate(rows):
        dz = r["z"] - shard.z
        if dz < 0 or (r["x"] >> dz, r["y"] >> dz) != (shard.x, shard.y):
            raise RowError(
                f"run {run_id} shard {shard_id} tile_scores[{i}]: tile "
                f"{r['z']}/{r['x']}/{r['y']} is not inside shard {shard.z}/{shard.x}/{shard.y}"
            )
