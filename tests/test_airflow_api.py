"""The dashboard's Airflow client without an Airflow: names, the ad-hoc conf and its
checks, and a clear error when nothing answers. (Against a real api-server it runs in
``tests/dags/test_distributed.py``.)"""

from __future__ import annotations

import pytest

from pipeline.airflow_api import (
    AirflowClient,
    AirflowError,
    AirflowUnreachable,
    audit_conf,
    audit_dag_id,
    results_asset_uri,
    retrain_dag_id,
    reviews_asset_uri,
)
from pipeline.errors import ConfigError


def test_names_match_the_dag_files():
    assert audit_dag_id("town") == "audit__town"
    assert retrain_dag_id("town") == "retrain__town"
    assert results_asset_uri("town") == "geoaudit://aoi/town/results"
    assert reviews_asset_uri("town") == "geoaudit://aoi/town/reviews"


def test_audit_conf_holds_only_what_was_asked():
    assert audit_conf() == {"force": False, "repredict": False}
    assert audit_conf(
        "2026-06-01", bbox=(8.54, 47.36, 8.55, 47.37), model_version=3, force=True
    ) == {
        "step": "2026-06-01",
        "bbox": [8.54, 47.36, 8.55, 47.37],
        "model_version": 3,
        "force": True,
        "repredict": False,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"step": "2026-13-01"}, "not a calendar date"),
        ({"step": "June"}, "ISO date"),
        ({"bbox": [8.55, 47.36, 8.54, 47.37]}, "west < east"),
        ({"bbox": [8.54, 47.36, 8.55]}, "4 numbers"),
        ({"model_version": 0}, "model version id >= 1"),
    ],
)
def test_audit_conf_refuses_bad_params(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        audit_conf(**kwargs)


def test_nothing_listening_is_unreachable_and_names_the_url():
    with (
        AirflowClient("http://127.0.0.1:9", "admin", "pw", timeout=2) as client,
        pytest.raises(AirflowUnreachable, match=r"not reachable at http://127\.0\.0\.1:9"),
    ):
        client.trigger("audit__town", {})


def test_no_user_configured_is_a_clear_error():
    with (
        AirflowClient("http://127.0.0.1:9") as client,
        pytest.raises(AirflowError, match="GEOAUDIT_AIRFLOW_USERNAME"),
    ):
        client.dag_run("audit__town", "r1")


def test_the_password_is_not_in_the_repr():
    assert "s3cret" not in repr(AirflowClient("http://af:8080", "admin", "s3cret"))
