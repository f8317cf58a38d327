"""``geoaudit changes|report|export``: read results back out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.common import AoiName, JsonFlag, console, context, guarded, print_json

OptionalStep = Annotated[
    str | None, typer.Option("--step", "-s", help="Time step; default the latest.")
]


@guarded
def changes(aoi: AoiName, step: OptionalStep = None, as_json: JsonFlag = False) -> None:
    """Changes found between the previous time step and ``--step``."""
    from sqlalchemy.orm import Session

    from pipeline.db import repo
    from pipeline.results.report import run_for_step

    ctx = context(progress=False)
    run_id = run_for_step(ctx, aoi, step)
    with Session(ctx.engine) as s:
        frame = repo.changes_frame(s, run_id)
    if as_json:
        print_json(
            frame.drop(columns="geometry").assign(wkt=frame.geometry.to_wkt()).to_dict("records")
        )
        return
    if frame.empty:
        console.print(f"no changes recorded for run {run_id} (first time step, or nothing changed)")
        return
    table = Table("kind", "count", "area m²")
    for kind, group in frame.groupby("kind"):
        table.add_row(str(kind), str(len(group)), f"{group['area_m2'].sum():.0f}")
    console.print(f"run {run_id}: {frame['step_from'].iloc[0]} → {frame['step_to'].iloc[0]}")
    console.print(table)


@guarded
def report(aoi: AoiName, as_json: JsonFlag = False) -> None:
    """Quality trend of an AOI and its latest findings and hotspots."""
    from pipeline.results.report import aoi_report

    ctx = context(progress=False)
    data = aoi_report(ctx, aoi)
    if as_json:
        print_json(data)
        return
    table = Table("step", "run", "completeness", "correctness", "mean IoU", "mean QoD", "flagged")
    for row in data["trend"]:
        table.add_row(
            row["step"],
            str(row["run_id"]),
            f"{row['completeness']:.3f}",
            f"{row['correctness']:.3f}",
            f"{row['mean_iou']:.3f}",
            f"{row['mean_qod']:.1f}",
            f"{row['flagged_tile_share']:.1%}",
        )
    console.print(table)
    latest = data["latest"]
    if latest:
        console.print(
            f"latest run {latest['run_id']} ({latest['step']}): "
            f"findings {latest['findings_by_kind']}, "
            f"changes {latest['changes_by_kind']}"
        )
        if not latest["hotspots"]:
            console.print("no significant hotspot (Gi* with a false discovery rate of 5%)")
        for h in latest["hotspots"]:
            q = "" if h["q_value"] is None else f", q={h['q_value']:.3f}"
            console.print(
                f"  hotspot #{h['rank']}: cell {h['cell']} Gi*={h['gi_star']:.2f}{q} "
                f"({h['n_findings']} findings)"
            )


@guarded
def export(
    aoi: AoiName,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    step: OptionalStep = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="gpkg (one GeoPackage with every layer), geojson or parquet (GeoParquet, "
            "one file per layer).",
        ),
    ] = "gpkg",
    rasters: Annotated[
        bool, typer.Option(help="Write COGs of the probabilities and the pixel error map.")
    ] = True,
    handoff: Annotated[
        bool,
        typer.Option(help="Write a MapRoulette challenge and an .osm file of suggestions."),
    ] = True,
    composites: Annotated[bool, typer.Option(help="Write composite PNGs of tiles.")] = True,
    all_tiles: Annotated[
        bool, typer.Option("--all-tiles", help="Composites of every tile, not only flagged.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option(help="At most this many composites (worst QoD first).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Export a run: its layers (AOI, tile scores, findings, changes, hotspots), rasters,
    hand-off files for mappers (MapRoulette, JOSM) and composite PNG tiles."""
    from pipeline.results.export import VECTOR_FORMATS, export_run
    from pipeline.results.report import run_for_step

    if fmt not in VECTOR_FORMATS:
        raise typer.BadParameter(
            f"must be one of {', '.join(VECTOR_FORMATS)}", param_hint="--format"
        )
    ctx = context()
    run_id = run_for_step(ctx, aoi, step)
    result = export_run(
        ctx,
        run_id,
        out,
        fmt=fmt,  # type: ignore[arg-type]
        with_rasters=rasters,
        with_handoff=handoff,
        composites=composites,
        flagged_only=not all_tiles,
        limit=limit,
    )
    if as_json:
        print_json({"run_id": run_id, **result.files()})
        return
    for path in sorted(set(result.layers.values())):
        names = [k for k, v in result.layers.items() if v == path]
        console.print(f"{', '.join(names)}: {path}", soft_wrap=True)
    for name, path in {**result.rasters, **result.handoff}.items():
        console.print(f"{name}: {path}", soft_wrap=True)
    if composites:
        console.print(f"composites: {len(result.composites)} PNG tiles under {out / 'composites'}")
