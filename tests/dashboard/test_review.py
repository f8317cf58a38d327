"""Verdicts through the review page: only an identified reviewer writes, the verdict is
stored with who and when, it can be changed, and label_wrong feeds retraining."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.db import repo
from pipeline.db.models import Review
from pipeline.tiles import Tile


def _reviews(ctx) -> list[Review]:
    with Session(ctx.engine) as s:
        return list(s.scalars(select(Review).order_by(Review.id)))


def _login(at, name: str, password: str):
    at.text_input(key="reviewer_name").set_value(name)
    at.text_input(key="reviewer_password").set_value(password)
    _click(at, "Start reviewing")
    return at


def _click(at, label: str, *, form: str | None = None):
    buttons = [
        b for b in at.button if b.label == label and (form is None or b.proto.form_id == form)
    ]
    assert buttons, f"no button {label!r}: {[b.label for b in at.button]}"
    buttons[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_without_identity_the_page_is_read_only(open_page, app_env):
    at = open_page("review")
    assert not [b for b in at.button if b.label == "Save verdict"]
    assert any("Read-only" in i.value for i in at.info)
    assert any("Read-only" in c.value for c in at.caption)
    assert _reviews(app_env) == []


def test_a_wrong_password_gives_no_write_access(open_page, app_env, monkeypatch):
    monkeypatch.setenv("GEOAUDIT_REVIEW_PASSWORD", "s3cret")
    at = _login(open_page("review"), "ada", "guess")
    assert any("Wrong review password" in e.value for e in at.error)
    assert not [b for b in at.button if b.label == "Save verdict"]


def test_a_name_is_required_even_with_the_password(open_page, monkeypatch):
    monkeypatch.setenv("GEOAUDIT_REVIEW_PASSWORD", "s3cret")
    at = _login(open_page("review"), "  ", "s3cret")
    assert any("Enter your name" in e.value for e in at.error)


def test_tile_verdict_is_stored_changed_and_excluded_from_training(open_page, app_env, monkeypatch):
    monkeypatch.setenv("GEOAUDIT_REVIEW_PASSWORD", "s3cret")
    at = _login(open_page("review"), "ada", "s3cret")
    assert any("Reviewing as **ada**" in c.value for c in at.caption)
    tile_text = at.selectbox(key="review_tile").value
    z, x, y = (int(v) for v in tile_text.split("/"))

    at.radio(key="tile_verdict-verdict").set_value("label_wrong")
    at.text_area(key="tile_verdict-comment").set_value("building demolished in 2025")
    _click(at, "Save verdict", form="tile_verdict")
    assert any("Saved **label_wrong** on tile" in s.value for s in at.success)
    (review,) = _reviews(app_env)
    assert (review.target, review.tile_z, review.tile_x, review.tile_y) == ("tile", z, x, y)
    assert review.verdict == "label_wrong" and review.reviewer == "ada"
    assert review.comment == "building demolished in 2025"
    assert review.updated_at is not None
    with Session(app_env.engine) as s:
        assert Tile(x, y, z) in repo.label_wrong_tiles(s, review.aoi_id)

    # the queue shows the verdict; changing it updates the same row
    table = at.dataframe[0].value
    assert table.loc[table["tile"] == tile_text, "verdict"].item() == "label_wrong"
    at.radio(key="tile_verdict-verdict").set_value("ok")
    _click(at, "Save verdict", form="tile_verdict")
    (changed,) = _reviews(app_env)
    assert changed.id == review.id and changed.verdict == "ok"
    with Session(app_env.engine) as s:
        assert Tile(x, y, z) not in repo.label_wrong_tiles(s, review.aoi_id)


def test_finding_verdict_is_stored_with_its_tile(open_page, app_env, monkeypatch):
    monkeypatch.setenv("GEOAUDIT_REVIEW_PASSWORD", "s3cret")
    at = _login(open_page("review"), "grace", "s3cret")
    finding_id = at.selectbox(key="review_finding").value
    at.radio(key="finding_verdict-verdict").set_value("real_change")
    _click(at, "Save verdict", form="finding_verdict")
    (review,) = _reviews(app_env)
    assert (review.target, review.finding_id, review.verdict, review.reviewer) == (
        "finding",
        finding_id,
        "real_change",
        "grace",
    )
    assert review.tile_z is not None


def test_oidc_login_identity_is_the_reviewer(open_page, app_env):
    at = open_page("review")
    at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback"}
    at.user = {"is_logged_in": True, "email": "reviewer@city.example"}
    at.run()
    assert any("reviewer@city.example" in c.value for c in at.caption)
    at.radio(key="tile_verdict-verdict").set_value("model_wrong")
    _click(at, "Save verdict", form="tile_verdict")
    (review,) = _reviews(app_env)
    assert review.reviewer == "reviewer@city.example"


def test_oidc_without_login_is_read_only(open_page, app_env, monkeypatch):
    monkeypatch.setenv("GEOAUDIT_REVIEW_PASSWORD", "s3cret")  # OIDC wins over the password
    at = open_page("review")
    at.secrets["auth"] = {"redirect_uri": "http://localhost:8501/oauth2callback"}
    at.user = {"is_logged_in": False}
    at.run()
    assert [b for b in at.button if b.label == "Log in"]
    assert not [b for b in at.button if b.label in ("Save verdict", "Start reviewing")]


def test_retraining_request_against_unreachable_airflow_keeps_the_verdicts(
    open_page, app_env, monkeypatch
):
    monkeypatch.setenv("GEOAUDIT_REVIEW_PASSWORD", "s3cret")
    at = _login(open_page("review"), "ada", "s3cret")
    at.radio(key="tile_verdict-verdict").set_value("label_wrong")
    _click(at, "Save verdict", form="tile_verdict")
    _click(at, "Done reviewing: ask Airflow to retrain")
    assert any("not reachable at http://127.0.0.1:9" in e.value for e in at.error)
    with Session(app_env.engine) as s:
        assert s.scalar(select(func.count()).select_from(Review)) == 1


@pytest.fixture(autouse=True)
def _no_reviews_before(app_env):
    assert _reviews(app_env) == [], "reviews leaked from an earlier test"
