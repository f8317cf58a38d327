"""``geoaudit fetch|train|predict|audit``: the stages of an audit from the shell."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.common import (
    AoiName,
    AuditStepOption,
    JsonFlag,
    StepOption,
    console,
    context,
    err_console,
    guarded,
    print_json,
)


@guarded
def fetch(aoi: AoiName, step: StepOption, as_json: JsonFlag = False) -> None:
    """Snapshot the AOI's imagery and open data for a time step."""
    from pipeline.aoi.registry import get_aoi_config
    from pipeline.run.fetch import fetch_imagery, fetch_opendata

    ctx = context()
    config = get_aoi_config(ctx, aoi)
    imagery = fetch_imagery(ctx, config, step)
    opendata = fetch_opendata(ctx, config, step)
    if as_json:
        print_json({"imagery": imagery.to_xcom(), "opendata": opendata.to_xcom()})
        return
    for kind, ref in (("imagery", imagery), ("open data", opendata)):
        state = "unchanged, reused" if ref.reused else "stored"
        console.print(f"{kind}: snapshot {ref.snapshot_id} ({ref.content_hash[:12]}) {state}")


@guarded
def train(
    aoi: AoiName,
    steps: Annotated[list[str], typer.Option("--step", "-s", help="Time step(s) to train on.")],
    max_seconds: Annotated[
        float | None, typer.Option(help="Training time budget (default: the AOI's).", min=1)
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(help="Training steps; stops at whichever budget comes first.", min=1),
    ] = None,
    promote: Annotated[
        str, typer.Option(help="auto (if it beats the champion), always or never.")
    ] = "auto",
    warm_start: Annotated[
        bool, typer.Option(help="Start from the production model's weights.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Train a challenger on the AOI's open data; promote it if it beats the champion."""
    from pipeline.training.challenger import train_aoi_model

    if promote not in ("auto", "always", "never"):
        raise typer.BadParameter("must be auto, always or never", param_hint="--promote")
    ctx = context()
    out = train_aoi_model(
        ctx,
        aoi,
        steps,
        max_seconds=max_seconds,
        max_steps=max_steps,
        promote=promote,  # type: ignore[arg-type]
        warm_start=warm_start,
    )
    if as_json:
        print_json(out.to_xcom())
        return
    champ = "none" if out.champion_val_iou is None else f"{out.champion_val_iou:.3f}"
    console.print(
        f"model version {out.model_version_id} (v{out.version}): val IoU {out.val_iou:.3f}, "
        f"champion {champ}, {'promoted' if out.promoted else 'kept as candidate'} "
        f"({out.steps} steps, {out.seconds:.0f} s)"
    )


@guarded
def predict(
    aoi: AoiName,
    step: StepOption,
    model_version: Annotated[
        int | None, typer.Option(help="Model version id; default production.")
    ] = None,
    repredict: Annotated[
        bool, typer.Option(help="Ignore the prediction cache (as `audit --repredict`).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Predict building masks for every shard (cached per imagery hash and model)."""
    from sqlalchemy.orm import Session

    from pipeline.aoi.registry import get_aoi_config
    from pipeline.run import layout
    from pipeline.run.fetch import fetch_imagery
    from pipeline.run.lifecycle import resolve_model_version
    from pipeline.run.predict import predict_imagery
    from pipeline.run.snapshots import imagery_snapshot

    ctx = context()
    config = get_aoi_config(ctx, aoi)
    fetched = fetch_imagery(ctx, config, step)
    mv_id = resolve_model_version(ctx, config, model_version)
    with Session(ctx.engine) as s:
        imagery = imagery_snapshot(s, fetched.snapshot_id)
    predictions = predict_imagery(ctx, config, imagery, mv_id, repredict=repredict)
    hits = sum(p.cache_hit for p in predictions.values())
    folder = ctx.store.uri(layout.predictions_folder(aoi, mv_id))
    if as_json:
        print_json(
            {
                "model_version_id": mv_id,
                "shards": len(predictions),
                "cache_hits": hits,
                "mosaics": folder,
            }
        )
        return
    console.print(
        f"{len(predictions)} shards predicted with model version {mv_id} ({hits} from cache)"
    )
    console.print(f"mosaics under {folder}")


@guarded
def audit(
    aoi: AoiName,
    step: AuditStepOption = None,
    model_version: Annotated[
        int | None, typer.Option(help="Model version id; default production.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Audit again even when nothing changed.")] = False,
    repredict: Annotated[
        bool, typer.Option(help="Audit again and ignore the prediction cache.")
    ] = False,
    bbox: Annotated[
        tuple[float, float, float, float] | None,
        typer.Option(help="Audit only the shards touching WEST SOUTH EAST NORTH (degrees)."),
    ] = None,
    wait: Annotated[
        float,
        typer.Option(help="Seconds to wait while another process audits the same AOI and step."),
    ] = 0.0,
    as_json: JsonFlag = False,
) -> None:
    """Run a full audit of an AOI at a time step and store the results.

    When the imagery, open data, model and AOI settings are unchanged since a
    succeeded run of the step, that run's results are shown and nothing is redone.
    Without --step the audit is today's, as a scheduler runs it: each source at its
    newest snapshot, and "no new data" when none changed since the last audit.
    """
    import datetime as dt

    from pipeline.run.local import run_audit

    ctx = context()
    pinned = step is not None
    step = step or dt.date.today().isoformat()
    result = run_audit(
        ctx,
        aoi,
        step,
        pinned=pinned,
        model_version_id=model_version,
        force=force,
        repredict=repredict,
        bbox=list(bbox) if bbox else None,
        wait_s=wait,
    )
    summary = result.summary
    if as_json:
        print_json(
            {
                **summary.to_xcom(),
                "seconds": result.seconds,
                "cache_hits": result.cache_hits,
                "reused": result.reused,
            }
        )
        return
    agg = summary.aggregates
    if summary.no_new_data:
        console.print(
            f"run {result.run_id}: {aoi} {step}: no new data (same imagery, open data and "
            f"model as run {summary.run_id}); its results stay current. --force audits again."
        )
    elif result.reused:
        console.print(
            f"run {result.run_id}: {aoi} {step} is up to date (same imagery, open data, "
            "model and settings); its results are shown. --force audits again."
        )
    else:
        console.print(
            f"run {result.run_id}: {aoi} {step} succeeded in {result.seconds:.1f} s "
            f"({result.cache_hits} shards from the prediction cache)"
        )
    console.print(
        f"completeness {agg['completeness']:.3f}  correctness {agg['correctness']:.3f}  "
        f"mean IoU {agg['mean_iou']:.3f}  mean QoD {agg['mean_qod']:.1f}  "
        f"flagged tiles {agg['flagged_tile_share']:.1%}"
    )
    if agg.get("model_trusted") is False:
        err_console.print(
            f"[bold red]warning:[/] the model's out-of-sample IoU "
            f"({agg.get('model_oof_iou') or 0:.2f} on {agg.get('model_validated_tiles')} tiles) "
            "is below the AOI's floor: its findings are marked low-confidence"
        )
    console.print(
        f"findings: {summary.n_findings} {agg.get('findings_by_kind', {})}; "
        f"changes: {summary.n_changes}; hotspots: {summary.n_hotspots}"
    )
