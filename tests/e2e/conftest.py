"""End-to-end tests use the ``audited`` fixture of ``tests/conftest.py``, or the cheaper
``small_town`` below where model quality does not matter."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from audited_town import dialect_context
from pipeline.aoi import AoiConfig
from pipeline.context import Context
from pipeline.run.local import AuditResult
from pipeline.sample import SampleInfo

GATE_SIZE_M = 300.0


@dataclass
class SmallTown:
    """A small sample town with a (barely) trained model and its first step audited;
    tests add steps of their own (:meth:`new_step`) and leave the first one alone."""

    ctx: Context
    info: SampleInfo
    config: AoiConfig
    first: AuditResult
    dialect: str

    def new_step(
        self,
        step: str,
        *,
        imagery: Callable[[Path], None] | None = None,
        opendata: Callable[[Path], None] | None = None,
    ) -> str:
        """Copy the sample's second step to ``step`` and spoil the copies in place."""
        src = self.info.steps[1]
        tif = self.info.root / "imagery" / f"{step}.tif"
        geojson = self.info.root / "opendata" / f"{step}.geojson"
        shutil.copyfile(self.info.imagery[src], tif)
        shutil.copyfile(self.info.opendata[src], geojson)
        if imagery is not None:
            imagery(tif)
        if opendata is not None:
            opendata(geojson)
        return step


@pytest.fixture(
    scope="session",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def small_town(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SmallTown]:
    """Sample town (300 m) → a 3-step model (quality is not the point) → audit step 1."""
    from pipeline.run.local import run_audit
    from pipeline.sample.demo import SAMPLE_AOI, create_sample_aoi
    from pipeline.training.challenger import train_aoi_model

    ctx = dialect_context(request, tmp_path_factory, "small-town")
    info, config = create_sample_aoi(ctx, size_m=GATE_SIZE_M)
    train_aoi_model(ctx, SAMPLE_AOI, [info.steps[0]], max_steps=3, promote="always")
    first = run_audit(ctx, SAMPLE_AOI, info.steps[0])
    yield SmallTown(ctx, info, config, first, request.param)
    ctx.engine.dispose()
