"""GeoAudit from Python: register an AOI, run or load an audit, get GeoDataFrames.

The functions a notebook needs, on the same database and artifact store as the CLI
(``GEOAUDIT_HOME``, ``GEOAUDIT_DATABASE_URL``; see :mod:`pipeline.settings`)::

    from pipeline import api

    api.register_aoi("examples/lisbon.yaml")       # or a dict, or an AoiConfig
    api.train("lisbon", ["2024-06"])               # the AOI's first model
    audit = api.audit("lisbon", "2024-06")         # runs it, or loads it when unchanged
    audit.findings.explore(column="kind")          # GeoDataFrames, EPSG:4326
    api.results("lisbon").tile_scores              # the latest succeeded audit
    api.trend("lisbon")                            # one row per audited step

Every result is a :class:`~pipeline.results.layers.RunLayers`: ``outline``,
``tile_scores``, ``findings``, ``changes``, ``hotspots`` as GeoDataFrames, plus
``run_id``, ``aoi`` and ``step``. Errors are :class:`pipeline.errors.GeoAuditError`
subclasses whose message names the input and what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.aoi.config import AoiConfig, parse_aoi
from pipeline.context import Context, open_context
from pipeline.results.layers import RunLayers

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "RunLayers",
    "aoi_names",
    "audit",
    "context",
    "register_aoi",
    "results",
    "train",
    "trend",
]

_context: Context | None = None


def context() -> Context:
    """The process's context (database + artifact store), opened and migrated once."""
    global _context
    if _context is None:
        _context = open_context()
    return _context


def register_aoi(aoi: str | Path | Mapping[str, Any] | AoiConfig) -> AoiConfig:
    """Register an AOI from a YAML/JSON file, a mapping or a config; returns the config."""
    from pipeline.aoi.registry import add_aoi_file
    from pipeline.aoi.registry import register_aoi as register

    ctx = context()
    if isinstance(aoi, AoiConfig):
        return register(ctx, aoi)
    if isinstance(aoi, Mapping):
        return register(ctx, parse_aoi(dict(aoi)))
    return add_aoi_file(ctx, Path(aoi))


def aoi_names() -> list[str]:
    """Names of the registered AOIs, sorted."""
    from sqlalchemy.orm import Session

    from pipeline.db import repo

    with Session(context().engine) as s:
        return sorted(a.name for a in repo.list_aois(s))


def train(aoi: str, steps: list[str], *, max_steps: int | None = None) -> int:
    """Train a model of the AOI on its open data at ``steps`` (each fetched when not
    yet); returns the new model version's id (promoted when it beats the champion)."""
    from pipeline.training.challenger import train_aoi_model

    outcome = train_aoi_model(context(), aoi, list(steps), max_steps=max_steps)
    return int(outcome.model_version_id)


def audit(
    aoi: str,
    step: str,
    *,
    force: bool = False,
    repredict: bool = False,
    model_version_id: int | None = None,
) -> RunLayers:
    """Audit ``aoi`` at ``step`` and return its layers. With unchanged inputs the
    earlier run is loaded, not redone (``force`` audits again, ``repredict`` also
    ignores the prediction cache)."""
    from pipeline.results.layers import run_layers
    from pipeline.run.local import run_audit

    ctx = context()
    result = run_audit(
        ctx,
        aoi,
        step,
        trigger="api",
        force=force,
        repredict=repredict,
        model_version_id=model_version_id,
    )
    return run_layers(ctx, result.run_id)


def results(aoi: str, step: str | None = None) -> RunLayers:
    """The layers of the latest succeeded audit of ``aoi`` (at ``step`` when given)."""
    from pipeline.results.layers import run_layers
    from pipeline.results.report import run_for_step

    ctx = context()
    return run_layers(ctx, run_for_step(ctx, aoi, step))


def trend(aoi: str) -> pd.DataFrame:
    """The AOI's scores per audited step, oldest first (the dashboard's trend)."""
    import pandas as pd

    from pipeline.results.report import aoi_report

    return pd.DataFrame(aoi_report(context(), aoi)["trend"])
