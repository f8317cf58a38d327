"""``geoaudit init``: create the home folder, database schema and artifact store."""

from __future__ import annotations

from pipeline.cli.common import JsonFlag, console, context, guarded, print_json


@guarded
def init(as_json: JsonFlag = False) -> None:
    """Create (or upgrade) the database and artifact store named by the settings."""
    ctx = context(progress=False)
    if as_json:
        print_json(
            {
                "home": str(ctx.settings.home),
                "database": ctx.engine.url.render_as_string(hide_password=True),
                "artifacts": ctx.store.url,
                "aoi_files": str(ctx.settings.resolved_aoi_dir),
            }
        )
        return
    console.print(f"home:      {ctx.settings.home}")
    console.print(f"database:  {ctx.engine.url.render_as_string(hide_password=True)}")
    console.print(f"artifacts: {ctx.store.url}")
    console.print(f"AOI files: {ctx.settings.resolved_aoi_dir}")
