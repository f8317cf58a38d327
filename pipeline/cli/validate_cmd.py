"""``geoaudit validate``: run the data-quality suites from the shell."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.common import AoiName, JsonFlag, StepOption, console, context, guarded, print_json
from pipeline.errors import ExitCode


@guarded
def validate(
    aoi: AoiName,
    step: StepOption,
    run: Annotated[
        int | None,
        typer.Option(help="Validate the inputs of this run (stored on it) instead of fetching."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Validate the AOI's imagery and open data for a time step (Great Expectations).

    Fetches the step's snapshots (reusing unchanged ones), runs the suites, stores the
    results and Data Docs pages, and exits with code 1 when a critical expectation
    fails (2 for unusable input).
    """
    from sqlalchemy.orm import Session

    from pipeline.aoi.registry import get_aoi_config
    from pipeline.db import repo
    from pipeline.errors import ConfigError
    from pipeline.run.fetch import fetch_imagery, fetch_opendata
    from pipeline.run.validate import validate_inputs, validate_snapshots

    ctx = context()
    config = get_aoi_config(ctx, aoi)
    if run is not None:
        with Session(ctx.engine) as s:
            stored = repo.get_run(s, run)
            if stored.aoi.name != aoi or stored.step != step:
                raise ConfigError(
                    f"run {run} is of {stored.aoi.name!r} {stored.step}, not {aoi!r} {step}"
                )
        report = validate_inputs(ctx, run)
    else:
        imagery = fetch_imagery(ctx, config, step)
        opendata = fetch_opendata(ctx, config, step)
        report = validate_snapshots(ctx, config, imagery.snapshot_id, opendata.snapshot_id)
    if as_json:
        print_json(report.summary())
    else:
        table = Table("suite", "input", "result", "failed expectations")
        for item in report.checked:
            outcome = item.outcome
            result = "passed" if outcome.success else f"[bold]{outcome.severity}[/]"
            failures = "\n".join(f"{f.severity}: {f.describe()}" for f in outcome.failed)
            table.add_row(outcome.suite, item.input_name, result, failures or "-")
        console.print(table)
        console.print(f"Data Docs: {report.index_uri}")
    if report.critical:
        console.print(f"[bold red]{report.reason()}[/]")
        raise typer.Exit(code=int(ExitCode.BAD_INPUT))
