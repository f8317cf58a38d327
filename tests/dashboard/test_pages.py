"""Every dashboard page under AppTest against a really audited town: it renders, and the
numbers it shows are the database's."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.db import repo
from pipeline.db.models import (
    Change,
    Finding,
    Hotspot,
    ModelVersion,
    Run,
    TileScore,
    ValidationResult,
)

PAGES = {
    "overview": "GeoAudit: open data against imagery",
    "trends": "Trends",
    "hotspots": "Hotspots map",
    "tile_inspector": "Tile inspector",
    "changes": "Changes",
    "review": "Review queue",
    "runs": "Runs",
    "models": "Models",
}


def _latest(ctx) -> Run:
    with Session(ctx.engine) as s:
        aoi = repo.list_aois(s)[0]
        run = repo.latest_run(s, aoi.id)
        s.expunge(run)
        return run


@pytest.mark.parametrize("page", list(PAGES))
def test_page_renders_without_errors(open_page, page):
    at = open_page(None if page == "overview" else page)
    assert [t.value for t in at.title] == [PAGES[page]]
    assert not at.error, [e.value for e in at.error]


def test_overview_shows_the_latest_scores_and_open_findings(open_page, app_env):
    run = _latest(app_env)
    with Session(app_env.engine) as s:
        score = repo.get_run(s, run.id).score
        n_findings = s.scalar(select(func.count()).where(Finding.run_id == run.id))
        previous = repo.previous_run(s, run.aoi_id, run.step)
        prev_qod = previous.score.mean_qod
    at = open_page()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["AOIs"] == "1"
    assert metrics["Mean QoD"] == f"{score.mean_qod:.1f}"
    assert metrics["Open findings"] == str(n_findings)  # nothing reviewed yet
    table = at.dataframe[0].value
    row = table.iloc[0]
    assert row["link"] == "trends?aoi=sample-town"
    assert row["latest_step"] == run.step
    assert row["qod"] == pytest.approx(score.mean_qod)
    assert row["qod_change"] == pytest.approx(score.mean_qod - prev_qod)
    assert row["open_findings"] == n_findings
    assert row["last_status"] == "succeeded"
    assert len(row["trend"]) == 2


def test_trends_table_is_the_aoi_score_history(open_page, app_env):
    with Session(app_env.engine) as s:
        scores = repo.aoi_scores(s, repo.list_aois(s)[0].id)
    at = open_page("trends")
    table = at.dataframe[0].value
    assert list(table["step"]) == [sc.step for sc in scores]
    assert list(table["mean_qod"]) == pytest.approx([sc.mean_qod for sc in scores])
    assert list(table["completeness"]) == pytest.approx([sc.completeness for sc in scores])
    assert set(table["model"]) == {"sample-town v1"}  # each AOI its own lineage


def _deck(at) -> dict:
    charts = at.get("deck_gl_json_chart")
    assert len(charts) == 1
    return json.loads(charts[0].proto.json)


def test_hotspots_map_layers_follow_the_toggles(open_page, app_env):
    run = _latest(app_env)
    with Session(app_env.engine) as s:
        n_tiles = s.scalar(select(func.count()).where(TileScore.run_id == run.id))
        n_findings = s.scalar(select(func.count()).where(Finding.run_id == run.id))
    with Session(app_env.engine) as s:
        n_hotspots = s.scalar(select(func.count()).where(Hotspot.run_id == run.id))
    at = open_page("hotspots")
    deck = _deck(at)
    assert "mapStyle" not in deck  # no basemap: works offline
    layers = {layer["id"]: layer for layer in deck["layers"]}
    # on at first: the imagery, the findings and the significant hotspots
    assert "findings" in layers and ("hotspots" in layers) == (n_hotspots > 0)
    assert "tiles" not in layers and "changes" not in layers
    assert any(name.startswith("imagery-") for name in layers)
    assert len(layers["findings"]["data"]["features"]) == n_findings
    at.toggle(key="layer_tiles").set_value(True).run()
    at.toggle(key="layer_changes").set_value(True).run()
    layers = {layer["id"]: layer for layer in _deck(at)["layers"]}
    assert len(layers["tiles"]["data"]) == n_tiles and "changes" in layers
    at.toggle(key="layer_findings").set_value(False).run()
    at.toggle(key="layer_imagery").set_value(False).run()
    ids = {layer["id"] for layer in _deck(at)["layers"]}
    assert "findings" not in ids and not any(i.startswith("imagery-") for i in ids)


def test_hotspots_map_draws_a_configured_basemap(open_page, monkeypatch, tile_server):
    url, requested = tile_server
    monkeypatch.setenv("GEOAUDIT_BASEMAP_URL", url)
    layers = _deck(open_page("hotspots"))["layers"]
    basemap = [layer for layer in layers if layer["id"].startswith("basemap-")]
    assert basemap and len(basemap) == len(requested) <= 36
    assert basemap[0]["image"].startswith("data:image/png;base64,")
    assert layers.index(basemap[-1]) < min(
        i for i, layer in enumerate(layers) if layer["id"].startswith("imagery-")
    )


def test_unreachable_basemap_is_a_warning_not_a_broken_map(open_page, monkeypatch):
    monkeypatch.setenv("GEOAUDIT_BASEMAP_URL", "http://127.0.0.1:9/{z}/{x}/{y}.png")
    at = open_page("hotspots")
    assert any("Basemap not shown" in w.value for w in at.warning)
    assert any(layer["id"] == "findings" for layer in _deck(at)["layers"])


def test_tile_inspector_shows_the_worst_flagged_tile_and_steps_through(open_page, app_env):
    run = _latest(app_env)
    with Session(app_env.engine) as s:
        flagged = s.execute(
            select(TileScore.z, TileScore.x, TileScore.y, TileScore.qod)
            .where(TileScore.run_id == run.id, TileScore.flagged.is_(True))
            .order_by(TileScore.qod, TileScore.n_findings.desc())
        ).all()
    at = open_page("tile_inspector")
    first = f"{flagged[0].z}/{flagged[0].x}/{flagged[0].y}"
    assert at.selectbox(key="inspect_tile").value == first
    assert len(at.get("image")) == 4
    assert {m.label: m.value for m in at.metric}["QoD"] == f"{flagged[0].qod:.1f}"
    at.button(key="next_tile").click().run()
    second = f"{flagged[1].z}/{flagged[1].x}/{flagged[1].y}"
    assert at.selectbox(key="inspect_tile").value == second
    at.button(key="prev_tile").click().run()
    assert at.selectbox(key="inspect_tile").value == first


def test_changes_page_counts_each_kind_and_filters(open_page, app_env):
    run = _latest(app_env)
    with Session(app_env.engine) as s:
        by_kind = dict(
            s.execute(
                select(Change.kind, func.count())
                .where(Change.run_id == run.id)
                .group_by(Change.kind)
            ).all()
        )
    at = open_page("changes")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {kind: str(n) for kind, n in by_kind.items()}
    assert len(at.dataframe[0].value) == sum(by_kind.values())
    keep = sorted(by_kind)[:1]
    at.multiselect(key="change_kinds").set_value(keep).run()
    assert len(at.dataframe[0].value) == by_kind[keep[0]]
    assert len(at.get("image")) == 2  # before / after
    assert len(at.get("download_button")) == 2


def test_runs_page_lists_every_run(open_page, app_env):
    with Session(app_env.engine) as s:
        runs = s.scalars(select(Run).order_by(Run.started_at.desc(), Run.id.desc())).all()
    at = open_page("runs")
    table = at.dataframe[0].value
    assert list(table["run_id"]) == [r.id for r in runs]
    assert list(table["status"]) == [r.status for r in runs]
    assert {m.label: m.value for m in at.metric}["Succeeded"] == str(
        sum(r.status == "succeeded" for r in runs)
    )


def test_runs_page_shows_the_validation_suites_of_a_run(open_page, app_env):
    with Session(app_env.engine) as s:
        run = s.scalars(select(Run).order_by(Run.started_at.desc(), Run.id.desc())).first()
        # the run's own suites and those of the snapshots it audited
        snapshots = (run.imagery_snapshot_id, run.opendata_snapshot_id)
        stored = s.scalars(
            select(ValidationResult).where(
                (ValidationResult.run_id == run.id) | ValidationResult.snapshot_id.in_(snapshots)
            )
        ).all()
    at = open_page("runs")
    assert at.selectbox(key="run_detail").value == run.id
    table = at.dataframe[1].value
    assert sorted(table["suite"]) == sorted(r.suite for r in stored)
    assert list(table["result"]) == [
        "passed" if r.success else "failed" for r in sorted(stored, key=lambda r: -r.id)
    ]
    assert at.selectbox(key="docs_suite").options
    (button,) = [b for b in at.get("download_button") if b.proto.label.startswith("Download Data")]
    assert "Data Docs" in button.proto.label


def test_triggering_needs_an_identified_reviewer(open_page, monkeypatch):
    monkeypatch.setenv("GEOAUDIT_REVIEW_PASSWORD", "s3cret")
    at = open_page("runs")
    assert any("identify yourself in the sidebar to trigger" in i.value for i in at.info)
    (button,) = [b for b in at.button if b.label == "Trigger audit"]
    assert button.disabled  # (AppTest, like a browser, cannot press a disabled button)
    assert not at.error


def test_trigger_against_unreachable_airflow_says_so(open_page, monkeypatch):
    monkeypatch.setenv("GEOAUDIT_REVIEW_PASSWORD", "s3cret")
    at = open_page("runs", reviewer="ada")
    assert not [b for b in at.button if b.label == "Trigger audit"][0].disabled
    at.date_input(key="trigger_step").set_value("2026-06-01")
    _submit(at, "Trigger audit")
    errors = [e.value for e in at.error]
    assert any("not reachable at http://127.0.0.1:9" in e for e in errors), errors


def test_trigger_with_a_bad_bbox_names_it(open_page, monkeypatch):
    monkeypatch.setenv("GEOAUDIT_REVIEW_PASSWORD", "s3cret")
    at = open_page("runs", reviewer="ada")
    at.text_input(key="trigger_bbox").set_value("8.55 47.37 8.54")
    _submit(at, "Trigger audit")
    assert any("bbox must be 4 numbers" in e.value for e in at.error), [e.value for e in at.error]


def test_models_page_shows_the_production_version(open_page, app_env):
    with Session(app_env.engine) as s:
        versions = s.scalars(select(ModelVersion).order_by(ModelVersion.id)).all()
        prod = [mv for mv in versions if mv.stage == "production"]
    at = open_page("models")
    assert set(at.dataframe[0].value["id"]) == {mv.id for mv in versions}
    labels = {m.label: m.value for m in at.metric}
    assert labels[f"In production: {prod[0].name}"] == f"v{prod[0].version}"
    # metrics read as numbers, not float noise (train_seconds 242.61910015900003)
    shown = json.loads(at.json[0].value)
    floats = [v for v in shown.values() if isinstance(v, float)]
    assert floats and all(round(v, 3) == v for v in floats)


def _submit(at, label: str) -> None:
    buttons = [b for b in at.button if b.label == label]
    assert buttons, f"no button {label!r}: {[b.label for b in at.button]}"
    buttons[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
