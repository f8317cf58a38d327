"""Entry point: ``geoaudit <command>``."""

from __future__ import annotations

import typer

from pipeline.cli import (
    aoi_cmd,
    audit_cmd,
    demo_cmd,
    export_cmd,
    models_cmd,
    sample_cmd,
    setup_cmd,
    validate_cmd,
)

app = typer.Typer(
    name="geoaudit",
    help="Audit open building footprints against imagery: fetch, train, audit, report.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    # docstrings are the help: ``code`` renders as code, not as literal backticks
    rich_markup_mode="markdown",
)


def _print_version(value: bool) -> None:
    if value:
        from importlib import metadata

        typer.echo(f"geoaudit {metadata.version('geoaudit')}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Audit open building footprints against imagery: fetch, train, audit, report."""


app.command("init")(setup_cmd.init)
app.add_typer(aoi_cmd.app, name="aoi")
app.add_typer(sample_cmd.app, name="sample")
app.command("fetch")(audit_cmd.fetch)
app.command("train")(audit_cmd.train)
app.command("predict")(audit_cmd.predict)
app.command("validate")(validate_cmd.validate)
app.command("audit")(audit_cmd.audit)
app.command("changes")(export_cmd.changes)
app.command("report")(export_cmd.report)
app.command("export")(export_cmd.export)
app.add_typer(models_cmd.app, name="models")
app.command("demo")(demo_cmd.demo)

if __name__ == "__main__":
    app()
