"""Model registry (versions, champion / challenger) and the prediction cache."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipeline.db import repo
from pipeline.db.errors import RowError
from pipeline.db.models import ModelVersion
from pipeline.errors import NotFoundError


def _register(s: Session, name: str = "unet", **kw) -> ModelVersion:
    return repo.register_model_version(
        s,
        name,
        arch="Unet",
        encoder="resnet18",
        weights_uri=f"file:///models/{name}.pt",
        weights_sha256="0" * 64,
        metrics={"iou": 0.7},
        **kw,
    )


def test_versions_count_per_name(engine):
    with Session(engine) as s, s.begin():
        assert [_register(s).version for _ in range(3)] == [1, 2, 3]
        assert _register(s, "other").version == 1
        v4 = _register(s, parent_id=repo.get_model_version(s, "unet", 3).id)
        assert (v4.version, v4.parent.version, v4.stage) == (4, 3, "candidate")
    with Session(engine) as s:
        assert [m.version for m in repo.list_model_versions(s, "unet")] == [1, 2, 3, 4]
        assert len(repo.list_model_versions(s)) == 5
        assert repo.get_model_version(s, "unet").version == 4  # latest


def test_promotion_archives_the_previous_champion(engine):
    with Session(engine) as s, s.begin():
        champion = _register(s, stage="production").id
        challenger = _register(s).id
        assert repo.production_model(s, "unet").id == champion
        assert s.get(ModelVersion, champion).promoted_at is not None
    with Session(engine) as s, s.begin():
        assert repo.promote(s, challenger).stage == "production"
    with Session(engine) as s:
        assert repo.production_model(s, "unet").id == challenger
        assert s.get(ModelVersion, champion).stage == "archived"
        assert s.get(ModelVersion, challenger).promoted_at is not None
        assert repo.production_model(s, "nothing") is None


def test_one_production_version_per_name_is_a_database_rule(engine):
    with Session(engine) as s, s.begin():
        _register(s, stage="production")
        second = _register(s).id
    with pytest.raises(IntegrityError), Session(engine) as s, s.begin():
        s.execute(update(ModelVersion).where(ModelVersion.id == second).values(stage="production"))


def test_version_numbers_are_unique_per_name(engine):
    with Session(engine) as s, s.begin():
        _register(s)
    with pytest.raises(IntegrityError), Session(engine) as s, s.begin():
        s.add(
            ModelVersion(
                name="unet", version=1, arch="a", encoder="e", weights_uri="u", weights_sha256="x"
            )
        )


def test_registry_errors_name_the_model(engine):
    with Session(engine) as s, s.begin():
        _register(s)
        with pytest.raises(
            NotFoundError, match=r"model 'unet' version 7 does not exist; known versions: \[1\]"
        ):
            repo.get_model_version(s, "unet", 7)
        with pytest.raises(NotFoundError, match="model version id 42 does not exist"):
            repo.promote(s, 42)
        with pytest.raises(RowError, match="stage must be one of"):
            _register(s, stage="champion")


def test_prediction_cache(engine):
    with Session(engine) as s, s.begin():
        mv = _register(s).id
        assert repo.cached_prediction(s, "abc", mv, "16-1-2") is None
        repo.store_prediction(s, "abc", mv, "16-1-2", "file:///pred/a.tif")
    with Session(engine) as s, s.begin():
        entry = repo.cached_prediction(s, "abc", mv, "16-1-2")
        assert (entry.uri, entry.run_id) == ("file:///pred/a.tif", None)
        assert repo.cached_prediction(s, "abd", mv, "16-1-2") is None
        assert repo.cached_prediction(s, "abc", mv, "16-1-3") is None
        # replaces, and remembers which run predicted it
        repo.store_prediction(s, "abc", mv, "16-1-2", "file:///pred/b.tif", run_id=7)
    with Session(engine) as s:
        entry = repo.cached_prediction(s, "abc", mv, "16-1-2")
        assert (entry.uri, entry.run_id) == ("file:///pred/b.tif", 7)
