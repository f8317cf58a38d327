"""AOIs that are not rectangles, audited end to end: a polygon with a hole is scored
around the hole, and nothing is reported inside it."""

from __future__ import annotations

import pytest
import shapely
from shapely.geometry import Polygon, box, mapping
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.aoi.registry import register_aoi
from pipeline.db.models import Finding, Run, TileScore
from pipeline.run.local import run_audit
from pipeline.sample.demo import SAMPLE_AOI
from pipeline.tiles import lnglat_bounds

pytestmark = pytest.mark.slow


def test_an_aoi_with_a_hole_is_audited_around_it(small_town) -> None:  # noqa: ANN001
    ctx, config = small_town.ctx, small_town.config
    outline = box(*config.bounds)
    # the hole is one whole tile inside the town: it is not the AOI's any more
    hole_tile = next(t for t in config.tiles() if outline.contains(box(*lnglat_bounds(t))))
    hole = box(*lnglat_bounds(hole_tile))
    holed = register_aoi(
        ctx,
        config.model_copy(
            update={
                "name": "holed-town",
                "bbox": None,
                "polygon": mapping(Polygon(outline.exterior.coords, [hole.exterior.coords])),
                # audited with the town's model
                "model": config.model.model_copy(update={"name": SAMPLE_AOI}),
                "schedule": None,
            }
        ),
    )
    assert set(holed.tiles()) == set(config.tiles()) - {hole_tile}

    result = run_audit(ctx, holed.name, small_town.info.steps[0])

    with Session(ctx.engine) as s:
        run = s.get(Run, result.run_id)
        assert run.status == "succeeded"
        scored = {
            (z, x, y)
            for z, x, y in s.execute(
                select(TileScore.z, TileScore.x, TileScore.y).where(TileScore.run_id == run.id)
            )
        }
        findings = s.scalars(select(Finding.geometry).where(Finding.run_id == run.id)).all()
    assert scored == {(t.z, t.x, t.y) for t in holed.tiles()}
    # a finding may reach into the hole from a scored tile, never lie wholly inside it
    inside = [g for g in findings if shapely.within(g, hole)]
    assert not inside, f"{len(inside)} findings inside the hole"
