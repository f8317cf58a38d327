"""``geoaudit`` in a new Python process on a test's home and database, reporting which
heavy libraries the command imported (start-up cost is what a shell user waits for)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

from pipeline.settings import Settings

#: libraries that a read-only command or an unchanged re-audit should not load
HEAVY_LIBRARIES = ("torch", "geopandas", "rasterio", "great_expectations", "pandas")
#: what ``--help`` does without: the database layer, arrays, geometries, projections,
#: the log renderer (pydantic is not here: Typer loads it to build a command's options)
HELP_FREE_OF = (*HEAVY_LIBRARIES, "sqlalchemy", "numpy", "shapely", "pyproj", "structlog")


@dataclass(frozen=True)
class CliRun:
    """A finished ``geoaudit`` process: its exit code, output, and the heavy libraries
    it imported."""

    exit_code: int
    output: str
    imported: list[str]


def run_cli(settings: Settings, *args: str, libraries: tuple[str, ...] = HEAVY_LIBRARIES) -> CliRun:
    """Run ``geoaudit ARGS`` in a new process with ``settings``' home, database, artifact
    store and AOI folder; report which of ``libraries`` it imported."""
    script = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from pipeline.cli.main import app\n"
        f"out = CliRunner().invoke(app, {list(args)!r})\n"
        "sys.stdout.write(out.output)\n"
        f"print('IMPORTED', json.dumps([m for m in {libraries!r} if m in sys.modules]))\n"
        "sys.exit(out.exit_code)\n"
    )
    env = {
        **os.environ,
        "GEOAUDIT_HOME": str(settings.home),
        "GEOAUDIT_DATABASE_URL": settings.resolved_database_url,
        "GEOAUDIT_ARTIFACT_ROOT": str(settings.resolved_artifact_root),
        "GEOAUDIT_AOI_DIR": str(settings.resolved_aoi_dir),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    output, _, imported = done.stdout.rpartition("IMPORTED ")
    return CliRun(
        done.returncode,
        output + done.stderr,
        json.loads(imported) if imported else list(libraries),
    )
