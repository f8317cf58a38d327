"""``geoaudit sample create``: the synthetic sample town with known defects."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import JsonFlag, console, context, guarded, print_json

app = typer.Typer(help="Synthetic sample data with a truth file.", no_args_is_help=True)


@app.command("create")
@guarded
def create(
    out: Annotated[Path | None, typer.Option(help="Folder; default $GEOAUDIT_HOME/sample.")] = None,
    size_m: Annotated[float, typer.Option(help="Side of the town in metres.", min=200)] = 1000.0,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 7,
    name: Annotated[str, typer.Option(help="AOI name to register.")] = "sample-town",
    as_json: JsonFlag = False,
) -> None:
    """Generate imagery, open data with injected defects and truth for two time steps."""
    from pipeline.sample.demo import create_sample_aoi

    ctx = context()
    info, config = create_sample_aoi(ctx, out, size_m=size_m, seed=seed, name=name)
    if as_json:
        print_json(
            {
                "root": str(info.root),
                "steps": list(info.steps),
                "truth": str(info.truth),
                "aoi": config.name,
                "tiles": len(config.tiles()),
            }
        )
        return
    console.print(f"sample written to {info.root}")
    console.print(f"steps: {', '.join(info.steps)}; truth: {info.truth}")
    console.print(f"registered AOI [bold]{config.name}[/] ({len(config.tiles())} tiles)")
