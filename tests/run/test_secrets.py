"""Secrets in source URLs: an AOI writes ``${ENV_VAR}``; the key reaches the tile server
and nothing stored or shown holds it. The tile server is real (loopback HTTP over the
Lalitpur tiles) and answers 403 without the key."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sources.imagery_servers import TileServer, tile_server
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.db import repo
from pipeline.db.models import Aoi, Run, Snapshot
from pipeline.errors import ConfigError
from pipeline.run.local import run_audit
from pipeline.tiles import Tile

from ._helpers import register, small_config_overrides
from .conftest import DATA, RealAoi

KEY = "s3cret-tile-key-0123"
AREA = [Tile(773394, 440526, 20), Tile(773395, 440526, 20)]


@pytest.fixture(scope="module")
def keyed() -> Iterator[TileServer]:
    with tile_server(DATA / "tiles") as server:
        server.required_query = {"key": KEY}
        yield server


def _everything_stored(real_aoi: RealAoi, aoi_name: str) -> str:
    """Every stored text of the AOI: its config, snapshots' sources and meta, runs."""
    with Session(real_aoi.ctx.engine) as s:
        aoi = s.scalars(select(Aoi).where(Aoi.name == aoi_name)).one()
        snaps = s.scalars(select(Snapshot).where(Snapshot.aoi_id == aoi.id)).all()
        runs = s.scalars(select(Run).where(Run.aoi_id == aoi.id)).all()
        parts = [json.dumps(aoi.config)]
        parts += [f"{x.source} {x.uri} {json.dumps(x.meta)}" for x in snaps]
        parts += [f"{json.dumps(r.params)} {r.error}" for r in runs]
    return "\n".join(parts)


def test_an_env_reference_reaches_the_server_and_is_never_stored(
    real_aoi: RealAoi, keyed: TileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOAUDIT_TEST_TILE_KEY", KEY)
    template = keyed.url + "/{z}/{x}/{y}.png?key=${GEOAUDIT_TEST_TILE_KEY}"
    config = register(
        real_aoi.ctx,
        "keyed",
        imagery={"kind": "xyz", "path": template, "zoom": 20},
        model={"name": "buildings"},
        **small_config_overrides(AREA),
    )
    result = run_audit(real_aoi.ctx, config.name, "2025-06-01")
    with Session(real_aoi.ctx.engine) as s:
        assert repo.get_run(s, result.run_id).status == "succeeded"
    assert keyed.paths(200) and not keyed.paths(403)  # the key was sent

    stored = _everything_stored(real_aoi, config.name)
    assert KEY not in stored
    assert "${GEOAUDIT_TEST_TILE_KEY}" in stored  # the AOI keeps the reference

    # without the variable: a clear error naming it, and the earlier run stays
    monkeypatch.delenv("GEOAUDIT_TEST_TILE_KEY")
    with pytest.raises(ConfigError, match="GEOAUDIT_TEST_TILE_KEY, which is not set") as err:
        run_audit(real_aoi.ctx, config.name, "2025-06-02")
    assert KEY not in str(err.value)
    with Session(real_aoi.ctx.engine) as s:
        assert repo.get_run(s, result.run_id).status == "succeeded"


def test_aoi_show_masks_query_strings(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOAUDIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GEOAUDIT_DATABASE_URL", raising=False)
    aoi = tmp_path / "signed.yaml"
    aoi.write_text(
        "name: signed\nbbox: [85.3, 27.6, 85.301, 27.601]\n"
        "imagery: {kind: geotiff, path: "
        "'https://b.example.org/o.tif?X-Amz-Signature=abcdef123456&X-Amz-Credential=AK'}\n"
        "opendata: {kind: vector, path: 'https://h.example.org/b.geojson?sig=zz99&key=${K}'}\n"
    )
    runner = CliRunner()
    assert runner.invoke(app, ["aoi", "add", str(aoi)]).exit_code == 0
    shown = runner.invoke(app, ["aoi", "show", "signed"])
    assert shown.exit_code == 0, shown.output
    assert "abcdef123456" not in shown.output and "zz99" not in shown.output
    assert "https://b.example.org/o.tif?***" in shown.output
