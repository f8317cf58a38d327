"""Talk to Airflow 3's REST API (v2): trigger an ad-hoc audit, follow its state, and
tell the retraining DAG that reviewers gave new verdicts (an Asset event).

DAG ids and Asset URIs are defined here, once, for the DAG files and the dashboard.
Credentials come from settings (``GEOAUDIT_AIRFLOW_*``, i.e. the environment) and
are never logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from pipeline.errors import ConfigError, GeoAuditError

log = logging.getLogger(__name__)

FINISHED_STATES = frozenset({"success", "failed"})


def audit_dag_id(aoi: str) -> str:
    """Id of the audit DAG of ``aoi``."""
    return f"audit__{aoi}"


def retrain_dag_id(aoi: str) -> str:
    """Id of the retraining DAG of ``aoi``."""
    return f"retrain__{aoi}"


def results_asset_uri(aoi: str) -> str:
    """Asset updated when an audit of ``aoi`` publishes results."""
    return f"geoaudit://aoi/{aoi}/results"


def reviews_asset_uri(aoi: str) -> str:
    """Asset updated when reviewers give verdicts on ``aoi`` (it triggers retraining)."""
    return f"geoaudit://aoi/{aoi}/reviews"


def trigger_role_access(role: str | None, *, audit: bool) -> dict[str, dict[str, set[str]]] | None:
    """The ``access_control`` of a GeoAudit DAG for the dashboard's Airflow role (FAB
    auth manager; ``GEOAUDIT_AIRFLOW_TRIGGER_ROLE``): on an audit DAG, read it and its
    runs and start runs (FAB asks for "edit" on the DAG to start one); on a retraining
    DAG, read only (reviews start it through an Asset event). Never delete. None without
    a role: the deployment manages access by its own roles."""
    if not role:
        return None
    if audit:
        return {role: {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read", "can_create"}}}
    return {role: {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}}}


def audit_conf(
    step: str | None = None,
    *,
    bbox: list[float] | tuple[float, float, float, float] | None = None,
    model_version: int | None = None,
    force: bool = False,
    repredict: bool = False,
) -> dict[str, Any]:
    """The ``conf`` of an ad-hoc audit run, checked the way the audit DAG's params are."""
    from pipeline.aoi.steps import check_step
    from pipeline.tiles import check_bbox

    conf: dict[str, Any] = {"force": bool(force), "repredict": bool(repredict)}
    if step is not None:
        conf["step"] = check_step(step)
    if bbox is not None:
        conf["bbox"] = [float(v) for v in check_bbox(bbox)]
    if model_version is not None:
        if int(model_version) < 1:
            raise ConfigError(f"model_version must be a model version id >= 1, got {model_version}")
        conf["model_version"] = int(model_version)
    return conf


class AirflowError(GeoAuditError):
    """Airflow answered, but refused or failed the request."""


class AirflowUnreachable(AirflowError, OSError):
    """Nothing answered at the configured Airflow URL."""


@dataclass(frozen=True)
class DagRunState:
    """A DAG run as Airflow reports it."""

    dag_id: str
    run_id: str
    state: str
    conf: dict[str, Any]
    start_date: str | None = None
    end_date: str | None = None

    @property
    def finished(self) -> bool:
        """True once the run succeeded or failed."""
        return self.state in FINISHED_STATES


class AirflowClient:
    """A small client of the REST API v2 with a JWT from ``/auth/token``."""

    def __init__(
        self,
        base_url: str,
        username: str | None = None,
        password: str | None = None,
        *,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self._token: str | None = None

    def __repr__(self) -> str:
        return f"AirflowClient({self.base_url!r}, username={self._username!r})"

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests -----------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._access_token()}"}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise AirflowUnreachable(
                f"Airflow is not reachable at {self.base_url}: {exc.__class__.__name__}: {exc}"
            ) from exc
        if response.status_code == 401:
            raise AirflowError(
                f"Airflow at {self.base_url} refused {method} {path} for user "
                f"{self._username!r} (HTTP 401): check the credentials"
            )
        if response.status_code == 403:
            raise AirflowError(
                f"Airflow at {self.base_url} does not allow user {self._username!r} to "
                f"{method} {path} (HTTP 403): its Airflow role does not grant it"
            )
        return response

    def _access_token(self) -> str:
        if self._token is not None:
            return self._token
        if not self._username:
            raise AirflowError(
                f"no Airflow user configured for {self.base_url}: set GEOAUDIT_AIRFLOW_USERNAME "
                "and GEOAUDIT_AIRFLOW_PASSWORD"
            )
        try:
            response = self._http.post(
                "/auth/token", json={"username": self._username, "password": self._password or ""}
            )
        except httpx.TransportError as exc:
            raise AirflowUnreachable(
                f"Airflow is not reachable at {self.base_url}: {exc.__class__.__name__}: {exc}"
            ) from exc
        if response.status_code not in (200, 201):
            raise AirflowError(
                f"Airflow at {self.base_url} did not log in user {self._username!r} "
                f"(HTTP {response.status_code}): check the credentials"
            )
        self._token = str(response.json()["access_token"])
        return self._token

    # --- DAG runs -----------------------------------------------------------------------

    def trigger(
        self,
        dag_id: str,
        conf: dict[str, Any],
        *,
        run_id: str | None = None,
        note: str | None = None,
    ) -> DagRunState:
        """Start a run of ``dag_id`` now with ``conf`` (the DAG's params) and a ``note``
        (who started it). A paused DAG is refused, never unpaused: pausing is an
        operator's decision."""
        if self.dag(dag_id).get("is_paused"):
            raise AirflowError(
                f"{dag_id} is paused in Airflow, so a run started now would only wait; an "
                f"operator unpauses it (`airflow dags unpause {dag_id}`)"
            )
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if run_id is not None:
            body["dag_run_id"] = run_id
        if note is not None:
            body["note"] = note
        response = self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)
        if response.status_code not in (200, 201):
            raise AirflowError(
                f"Airflow refused to start {dag_id} with {conf}: HTTP {response.status_code} "
                f"{_detail(response)}"
            )
        run = _dag_run(response.json())
        log.info("triggered %s run %s", dag_id, run.run_id)
        return run

    def dag_run(self, dag_id: str, run_id: str) -> DagRunState:
        """The current state of one run."""
        response = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        if response.status_code == 404:
            raise AirflowError(f"Airflow has no run {run_id!r} of {dag_id}")
        response.raise_for_status()
        return _dag_run(response.json())

    def dag(self, dag_id: str) -> dict[str, Any]:
        """The DAG's description; AirflowError when Airflow has no such DAG."""
        response = self._request("GET", f"/api/v2/dags/{dag_id}")
        if response.status_code == 404:
            raise AirflowError(
                f"Airflow at {self.base_url} has no DAG {dag_id!r}: is the AOI's file in the AOI "
                "folder the DAG processor reads (GEOAUDIT_HOME/aois)?"
            )
        if response.status_code != 200:
            raise AirflowError(f"Airflow could not read {dag_id}: HTTP {response.status_code}")
        return dict(response.json())

    # --- assets -------------------------------------------------------------------------

    def emit_asset_event(self, uri: str, extra: dict[str, Any] | None = None) -> int:
        """Record an event on the Asset ``uri`` (DAGs scheduled on it run); the event id."""
        response = self._request(
            "POST",
            "/api/v2/assets/events",
            json={"asset_id": self._asset_id(uri), "extra": extra or {}},
        )
        if response.status_code not in (200, 201):
            raise AirflowError(
                f"Airflow refused an event on {uri}: "
                f"HTTP {response.status_code} {_detail(response)}"
            )
        return int(response.json()["id"])

    def asset_events(self, uri: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """Events of the Asset ``uri`` (id, extra, timestamp, ...), at most ``limit``."""
        response = self._request(
            "GET",
            "/api/v2/assets/events",
            params={"asset_id": self._asset_id(uri), "limit": limit},
        )
        response.raise_for_status()
        return list(response.json().get("asset_events", []))

    def _asset_id(self, uri: str) -> int:
        response = self._request("GET", "/api/v2/assets", params={"uri_pattern": uri})
        response.raise_for_status()
        matches = [a for a in response.json().get("assets", []) if a.get("uri") == uri]
        if not matches:
            raise AirflowError(
                f"Airflow at {self.base_url} knows no asset {uri!r} (no DAG uses it yet)"
            )
        return int(matches[0]["id"])


def _dag_run(body: dict[str, Any]) -> DagRunState:
    return DagRunState(
        dag_id=body["dag_id"],
        run_id=body["dag_run_id"],
        state=str(body.get("state")),
        conf=body.get("conf") or {},
        start_date=body.get("start_date"),
        end_date=body.get("end_date"),
    )


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("detail", body))[:300] if isinstance(body, dict) else str(body)[:300]
