"""The run package's tests work on real data: one cluster of OpenAerialMap z20 tiles of
Lalitpur with its OpenStreetMap buildings (``tests/data/oam-lalitpur``), audited at z20
in z18 shards, with a seeded untrained network registered as the production model
(model quality is not what these tests check; it keeps them fast)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mercantile
import pytest
from sqlalchemy.orm import Session

from audited_town import dialect_context
from pipeline.aoi import AoiConfig, parse_aoi
from pipeline.aoi.registry import register_aoi
from pipeline.context import Context
from pipeline.db import repo
from pipeline.run import layout

DATA = Path(__file__).resolve().parents[1] / "data" / "oam-lalitpur"
# One cluster of z20 tiles: x 773394..773397, y 440526..440529 (one z18 shard).
TILES = [mercantile.Tile(x, y, 20) for x in range(773394, 773398) for y in range(440526, 440530)]
STEP = "2025-06-01"


def cluster_bbox(shrink: float = 1e-7) -> list[float]:
    """The tile cluster's WGS84 bounds, shrunk a little so no neighbour tile is touched."""
    w, s, e, n = mercantile.bounds(TILES[0])
    for tile in TILES[1:]:
        b = mercantile.bounds(tile)
        w, s, e, n = min(w, b.west), min(s, b.south), max(e, b.east), max(n, b.north)
    return [w + shrink, s + shrink, e - shrink, n - shrink]


def lalitpur_config(name: str = "lalitpur", **overrides: object) -> AoiConfig:
    """An AOI over the z20 cluster: XYZ imagery, OSM open data."""
    return parse_aoi(
        {
            "name": name,
            "bbox": cluster_bbox(),
            "work_zoom": 20,
            "shard_zoom": 19,
            "imagery": {"kind": "xyz", "path": str(DATA / "tiles"), "zoom": 20},
            "opendata": {
                "kind": "vector",
                "path": str(DATA / "buildings_osm.geojson"),
                "id_field": "osm_id",
            },
            "steps": [STEP],
            # the test AOIs of a module share one registered lineage
            "model": {"name": "buildings"},
            **overrides,
        },
        source=f"test AOI {name!r}",
    )


def register_untrained_model(
    ctx: Context, name: str = "buildings", seed: int = 0, *, blind: bool = False
) -> int:
    """A seeded, untrained network registered and promoted; its model version id.

    ``blind``: its head is set to see no building anywhere (probability 0.0025), so
    every mapped footprint on the imagery is a deterministic ``unsupported`` finding.
    """
    import torch

    from pipeline.model.checkpoint import save_model
    from pipeline.model.net import ModelSpec, build_model

    torch.manual_seed(seed)
    spec = ModelSpec()
    model = build_model(spec)
    if blind:
        head = model.net.segmentation_head[0]
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_(-6.0)
    path = ctx.settings.home / "untrained.pt"
    sha = save_model(model, spec, path, meta={"seed": seed})
    key = layout.model_weights_key(name, sha)
    ctx.store.put_file(path, key)
    with Session(ctx.engine) as s, s.begin():
        mv = repo.register_model_version(
            s,
            name,
            arch=spec.arch,
            encoder=spec.encoder,
            weights_uri=key,
            weights_sha256=sha,
            metrics={"val_iou": 0.0},
            stage="production",
        )
        return mv.id


@dataclass
class RealAoi:
    """A registered real AOI with a production model."""

    ctx: Context
    config: AoiConfig
    model_version_id: int
    dialect: str


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def real_aoi(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealAoi]:
    """Lalitpur's z20 cluster registered as an AOI, with an untrained production model,
    on SQLite or PostGIS (a new home and database per test module)."""
    ctx = dialect_context(request, tmp_path_factory, "run")
    config = register_aoi(ctx, lalitpur_config())
    mv_id = register_untrained_model(ctx)
    yield RealAoi(ctx, config, mv_id, request.param)
    ctx.engine.dispose()
