"""Values from users travel as bound parameters: SQL in them is stored verbatim, never run."""

from __future__ import annotations

from sqlalchemy import func, inspect, select
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from pipeline.db import repo
from pipeline.db.models import Review, Run
from pipeline.db.queries import read_query

from ._db_helpers import shard_tiles

HOSTILE = "x'); DROP TABLE run; -- \" OR 1=1 /* ; DELETE FROM review"


def test_hostile_reviewer_and_comment_are_stored_verbatim(engine, make_run):
    run_id = make_run()
    tile = shard_tiles()[0]
    with Session(engine) as s, s.begin():
        aoi_id = repo.get_aoi(s, "lisbon").id
        repo.upsert_review(
            s, aoi_id, "tile", "ok", tile=tile, reviewer=HOSTILE, comment=HOSTILE * 3
        )
    with Session(engine) as s:
        review = s.scalars(select(Review)).one()
        assert (review.reviewer, review.comment) == (HOSTILE, HOSTILE * 3)
        assert s.get(Run, run_id) is not None
    assert {"run", "review"} <= set(inspect(engine).get_table_names())


def test_hostile_run_values_and_query_parameters_stay_data(engine, make_run):
    run_id = make_run(external_id=HOSTILE, params={"note": HOSTILE})
    with Session(engine) as s, s.begin():
        repo.finish_run(s, run_id, "failed", error=HOSTILE)
    history = read_query(engine, "run_history", aoi_id=None, limit=10)
    assert list(history["external_id"]) == [HOSTILE]
    assert list(history["error"]) == [HOSTILE]
    # a hostile value where a number is expected stays a bound value: PostgreSQL refuses
    # its type, SQLite compares it and matches nothing; it never becomes SQL
    try:
        assert read_query(engine, "validation_results", run_id=HOSTILE).empty
    except DataError as exc:
        assert engine.dialect.name == "postgresql" and "invalid input syntax" in str(exc)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 1
        assert repo.run_by_external_id(s, HOSTILE).id == run_id
