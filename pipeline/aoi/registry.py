"""The AOI registry: YAML files in the AOI folder, mirrored in the ``aoi`` table.

The folder is what schedulers read (one audit DAG per file); the table is what
runs and the dashboard join against.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.orm import Session

from pipeline.aoi.config import AoiConfig, check_area, load_aoi, parse_aoi
from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.engine import write_session

log = logging.getLogger(__name__)


def register_aoi(ctx: Context, config: AoiConfig) -> AoiConfig:
    """Store an AOI (local source paths made absolute) in the folder and the database."""
    config = config.with_absolute_paths()
    check_area(config, ctx.settings.max_aoi_km2)
    warning = config.scale_warning()
    if warning:
        log.warning(warning, extra={"aoi": config.name})
    folder = ctx.settings.resolved_aoi_dir
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{config.name}.yaml"
    tmp = target.with_suffix(".yaml.tmp")
    tmp.write_text(config.to_yaml(), encoding="utf-8")
    with write_session(ctx.engine) as s:
        repo.upsert_aoi(
            s, config.name, config.model_dump(mode="json", exclude={"base_dir"}), config.geometry
        )
    tmp.replace(target)
    return config


def add_aoi_file(ctx: Context, path: Path) -> AoiConfig:
    """Validate an AOI YAML file and register it."""
    return register_aoi(ctx, load_aoi(path, max_km2=ctx.settings.max_aoi_km2))


def get_aoi_config(ctx: Context, name: str) -> AoiConfig:
    """The registered configuration of AOI ``name`` (:class:`NotFoundError` if unknown)."""
    with Session(ctx.engine) as s:
        row = repo.get_aoi(s, name)
        return parse_aoi(dict(row.config), source=f"AOI {name!r} in the database")
