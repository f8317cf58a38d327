"""Import errors for malformed GeoAudit AOI files (this file defines no DAG).

``geoaudit_audits.py`` builds the DAGs of the valid AOI files and skips the others,
so one bad file never takes the other AOIs' DAGs down. This file fails to import
when an AOI file is invalid, so Airflow shows an import error naming the AOI and
what is wrong with it.
"""

# airflow: parsed by the dag processor like any dag file
from __future__ import annotations

from pipeline.aoi.config import scan_aoi_folder
from pipeline.errors import ConfigError
from pipeline.settings import load_settings


def check_aoi_files() -> None:
    """Raise ConfigError naming every malformed AOI file and its problem."""
    settings = load_settings()
    _, errors = scan_aoi_folder(settings.resolved_aoi_dir, max_km2=settings.max_aoi_km2)
    if errors:
        lines = [f"AOI {name!r}: {message}" for name, message in sorted(errors.items())]
        raise ConfigError(
            f"{len(errors)} malformed AOI file(s); their audit DAGs are not built:\n"
            + "\n".join(lines)
        )


check_aoi_files()
