"""``geoaudit aoi add|list|show``: register and inspect areas of interest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.orm import Session

from pipeline.aoi.registry import add_aoi_file, get_aoi_config
from pipeline.cli.common import AoiName, JsonFlag, console, context, guarded, print_json
from pipeline.db import repo
from pipeline.redact import redact

app = typer.Typer(help="Register and list areas of interest (AOIs).", no_args_is_help=True)


@app.command("add")
@guarded
def add(path: Annotated[Path, typer.Argument(help="AOI YAML file.")]) -> None:
    """Validate an AOI file and register it (database + AOI folder)."""
    ctx = context(progress=False)
    config = add_aoi_file(ctx, path)
    n_tiles = len(config.tiles())
    console.print(
        f"registered AOI [bold]{config.name}[/]: {config.area_km2():.2f} km², "
        f"{n_tiles} tiles at z{config.work_zoom} in {len(config.shards())} shards "
        f"at z{config.shard_zoom}"
    )


@app.command("list")
@guarded
def list_(as_json: JsonFlag = False) -> None:
    """List registered AOIs with their latest audit."""
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
def show(name: AoiName) -> None:
    """Print an AOI's configuration as YAML (URL query strings and passwords masked;
    ``${ENV_VAR}`` references are shown as written, never resolved)."""
    ctx = context(progress=False)
    typer.echo(redact(get_aoi_config(ctx, name).to_yaml()))
