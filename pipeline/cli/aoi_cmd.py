"""``geoaudit aoi add|list|show``: register and inspect areas of interest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.common import AoiName, JsonFlag, console, context, guarded, print_json
from pipeline.redact import redact

app = typer.Typer(help="Register and list areas of interest (AOIs).", no_args_is_help=True)


@app.command("add")
@guarded
def add(
    path: Annotated[Path, typer.Argument(help="AOI YAML file.")], as_json: JsonFlag = False
) -> None:
    """Validate an AOI file and register it (database + AOI folder)."""
    from pipeline.aoi.registry import add_aoi_file

    ctx = context(progress=False)
    config = add_aoi_file(ctx, path)
    n_tiles = len(config.tiles())
    if as_json:
        print_json(
            {
                "name": config.name,
                "area_km2": config.area_km2(),
                "tiles": n_tiles,
                "work_zoom": config.work_zoom,
                "shards": len(config.shards()),
                "shard_zoom": config.shard_zoom,
            }
        )
        return
    console.print(
        f"registered AOI [bold]{config.name}[/]: {config.area_km2():.2f} km², "
        f"{n_tiles} tiles at z{config.work_zoom} in {len(config.shards())} shards "
        f"at z{config.shard_zoom}"
    )


@app.command("list")
@guarded
def list_(as_json: JsonFlag = False) -> None:
    """List registered AOIs with their latest audit."""
    from sqlalchemy.orm import Session

    from pipeline.db import repo

    ctx = context(progress=False)
    rows = []
    with Session(ctx.engine) as s:
        for aoi in repo.list_aois(s):
            run = repo.latest_run(s, aoi.id, status=None)
            rows.append(
                {
                    "name": aoi.name,
                    "steps": ", ".join(aoi.config.get("steps", [])),
                    "last_run": f"{run.step} {run.status}" if run else "-",
                }
            )
    if as_json:
        print_json(rows)
        return
    table = Table("name", "steps", "last run")
    for r in rows:
        table.add_row(r["name"], r["steps"], r["last_run"])
    console.print(table)


@app.command("show")
@guarded
def show(name: AoiName, as_json: JsonFlag = False) -> None:
    """Print an AOI's configuration as YAML, or JSON with --json (URL query strings and
    passwords masked; ``${ENV_VAR}`` references are shown as written, never resolved)."""
    import yaml

    from pipeline.aoi.registry import get_aoi_config

    ctx = context(progress=False)
    text = redact(get_aoi_config(ctx, name).to_yaml())
    if as_json:
        print_json(yaml.safe_load(text))
        return
    typer.echo(text)
