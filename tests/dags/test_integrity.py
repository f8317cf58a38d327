"""DAG integrity: the files in dags/ import, build one audit and one retraining DAG per
valid AOI file, and report a malformed AOI file as an import error naming it."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

# `make test` installs the 'airflow' extra: a missing Airflow is a failure, not a skip.
# (airflow itself is imported inside the fixtures, after AIRFLOW_HOME points at tmp.)
assert importlib.util.find_spec("airflow"), "Airflow missing: pip install -e '.[test,airflow]'"

DAGS = Path(__file__).resolve().parents[2] / "dags"
DATA = Path(__file__).resolve().parents[1] / "data"
AUDIT_TASKS = {
    "fetch_imagery",
    "fetch_opendata",
    "validate",
    "plan",
    "shard_ids",
    "shard",
    "changes",
    "publish",
}


def _aoi_yaml(name: str, schedule: str = "@weekly") -> str:
    return (
        f"name: {name}\n"
        "bbox: [85.3240, 27.6710, 85.3260, 27.6725]\n"
        "work_zoom: 19\nshard_zoom: 17\n"
        f"imagery: {{kind: xyz, path: {DATA / 'oam-lalitpur' / 'tiles'}, zoom: 20}}\n"
        f"opendata: {{kind: vector, path: {DATA / 'oam-lalitpur' / 'buildings.geojson'}}}\n"
        f"schedule: '{schedule}'\nowner: mapping-team\ntags: [test]\n"
    )


@pytest.fixture
def dagbag(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "aois").mkdir(parents=True)
    (home / "aois" / "good-town.yaml").write_text(_aoi_yaml("good-town"), encoding="utf-8")
    (home / "aois" / "other-town.yaml").write_text(_aoi_yaml("other-town", "0 4 * * 1"))
    (home / "aois" / "broken-town.yaml").write_text(
        "name: broken-town\nbbox: [1, 2]\nunknown_key: 1\n", encoding="utf-8"
    )
    monkeypatch.setenv("GEOAUDIT_HOME", str(home))
    monkeypatch.delenv("GEOAUDIT_AOI_DIR", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_valid_aoi_gets_an_audit_and_a_retrain_dag(dagbag) -> None:
    assert set(dagbag.dag_ids) == {
        "audit__good-town",
        "retrain__good-town",
        "audit__other-town",
        "retrain__other-town",
    }


def test_a_malformed_aoi_is_an_import_error_naming_it(dagbag) -> None:
    assert list(dagbag.import_errors) == [str(DAGS / "geoaudit_aoi_errors.py")]
    message = next(iter(dagbag.import_errors.values()))
    assert "AOI 'broken-town'" in message and "broken-town.yaml" in message
    assert "unknown_key" in message and "good-town" not in message


def test_audit_dag_shape(dagbag) -> None:
    dag = dagbag.dags["audit__good-town"]
    assert {t.task_id for t in dag.tasks} == AUDIT_TASKS
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert {"geoaudit", "audit", "test"} <= set(dag.tags)
    assert dag.doc_md and "good-town" in dag.doc_md
    assert dagbag.dags["audit__other-town"].timetable.expression == "0 4 * * 1"
    for task in dag.tasks:
        assert task.owner == "mapping-team"
    retries = {t.task_id: t.retries for t in dag.tasks}
    assert retries["fetch_imagery"] >= 1 and retries["fetch_opendata"] >= 1
    assert retries["validate"] == 0 and retries["plan"] == 0
    fetch = dag.get_task("fetch_imagery")
    assert fetch.retry_exponential_backoff
    # the graph: (fetch imagery, fetch open data) -> plan -> validate -> mapped shards
    # -> changes -> publish; the open-data fetch does not wait for the imagery
    assert dag.get_task("fetch_opendata").upstream_task_ids == set()
    assert dag.get_task("plan").upstream_task_ids == {"fetch_imagery", "fetch_opendata"}
    # the gate sits between the plan (the run exists, so a failure is recorded on it)
    # and the first shard
    assert dag.get_task("validate").upstream_task_ids == {"plan"}
    assert dag.get_task("shard_ids").upstream_task_ids == {"plan"}
    assert dag.get_task("shard").upstream_task_ids == {"plan", "shard_ids", "validate"}
    assert dag.get_task("changes").upstream_task_ids == {"plan", "shard"}
    assert dag.get_task("publish").upstream_task_ids == {"plan", "changes"}
    assert [t.task_id for t in dag.topological_sort()][-1] == "publish"
    assert set(dag.params) == {"step", "model_version", "bbox", "force", "repredict"}


def test_the_dag_is_the_declared_stage_sequence(dagbag) -> None:
    """Every stage is a task, upstream of it exactly the stages it takes or follows
    (a per-shard stage also its list of shard ids), as ``geoaudit audit`` runs them."""
    from pipeline.run.stages import AUDIT_STAGES

    dag = dagbag.dags["audit__good-town"]
    for stage in AUDIT_STAGES:
        task = dag.get_task(stage.name)
        expected = set(stage.inputs) | set(stage.after)
        if stage.per_shard:
            expected.add("shard_ids")
        assert task.upstream_task_ids == expected, stage.name
        assert task.retries == (0 if not stage.retry else task.retries)


def test_publish_updates_the_aoi_asset_and_retraining_listens_to_reviews(dagbag) -> None:
    audit = dagbag.dags["audit__good-town"]
    outlets = audit.get_task("publish").outlets
    assert [a.uri for a in outlets] == ["geoaudit://aoi/good-town/results"]
    retrain = dagbag.dags["retrain__good-town"]
    assert {t.task_id for t in retrain.tasks} == {"train_challenger"}
    assert "geoaudit://aoi/good-town/reviews" in str(retrain.timetable.asset_condition)


def test_no_aoi_folder_means_no_dags_and_no_errors(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GEOAUDIT_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("GEOAUDIT_AOI_DIR", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.dag_ids == [] and bag.import_errors == {}
    shutil.rmtree(tmp_path / "empty", ignore_errors=True)
