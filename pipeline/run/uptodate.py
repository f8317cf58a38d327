"""Whether an audit is answered already, told from the sources' files and the database
alone: the question ``geoaudit audit`` asks first, so that an unchanged re-audit
answers before any raster, vector, model or validation library is imported.

It applies the rules the stages apply, from their one home each: the source's date
(:func:`~pipeline.run.snapshots.source_step`), its fingerprint
(:func:`~pipeline.sources.identity.local_file_fingerprint`, the same the opened source
gives), the snapshot it stands for (:func:`~pipeline.run.snapshots.reusable_snapshot`)
and the run those snapshots would reuse (:func:`~pipeline.run.lifecycle.reusable_run_id`).
Whenever one of them cannot be told so cheaply (a service, a URL, a VRT, a scheduled
audit that records "no new data"), the answer is None and the stages decide.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from pipeline.aoi.registry import get_aoi_config
from pipeline.context import Context
from pipeline.db import repo
from pipeline.run.handoffs import AuditRequest, FetchedSnapshot, RunSummary, SnapshotKind
from pipeline.run.lifecycle import reusable_run_id
from pipeline.run.snapshots import reusable_snapshot, snapshot_fingerprint, source_step
from pipeline.run.summary import stored_run_summary
from pipeline.sources.identity import local_file_fingerprint, reads_local_files


def up_to_date_summary(ctx: Context, request: AuditRequest) -> RunSummary | None:
    """The summary of the earlier run that answers ``request`` (pinned, over the whole
    AOI, neither forced nor re-predicting) when its sources' files are unchanged since
    that run's snapshots; None when there is none or it takes the stages to tell."""
    if not request.pinned or request.force or request.repredict or request.bbox is not None:
        return None
    config = get_aoi_config(ctx, request.aoi)
    if not (reads_local_files(config.imagery) and reads_local_files(config.opendata)):
        return None
    with Session(ctx.engine) as s:
        aoi_id = repo.get_aoi(s, config.name).id
    snapshots: dict[SnapshotKind, FetchedSnapshot] = {}
    for kind, spec in (("imagery", config.imagery), ("opendata", config.opendata)):
        dated = source_step(config, kind, request.step)
        fingerprint = local_file_fingerprint(spec, step=dated, base_dir=config.base_dir)
        if fingerprint is None:
            return None
        snapshot = reusable_snapshot(
            ctx, aoi_id, kind, request.step, snapshot_fingerprint(config, kind, fingerprint), dated
        )
        if snapshot is None:
            return None
        snapshots[kind] = snapshot
    run_id = reusable_run_id(ctx, config, request, snapshots["imagery"], snapshots["opendata"])
    return None if run_id is None else stored_run_summary(ctx, run_id, reused=True)
