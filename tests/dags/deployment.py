"""Start Airflow components as local processes: the distributed test and
``bench/airflow_overhead.py`` use this (nothing here imports Airflow)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
TRIGGER_ROLE = "GeoAuditTrigger"  # as in docker-compose.yml
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def airflow_env(
    *,
    airflow_home: Path,
    meta_url: str,
    port: int,
    executor: str,
    password: str,
    geoaudit_home: Path,
    geoaudit_url: str,
    broker_url: str | None = None,
    auth: str = "simple",
) -> dict[str, str]:
    """Environment of every component: metadata DB, executor, API, auth, GeoAudit.

    ``auth``: ``simple`` (SimpleAuthManager, user ``admin``) or ``fab`` (the FAB auth
    manager with roles, as docker-compose.yml runs it: :func:`create_fab_accounts`
    after :func:`migrate`)."""
    env = {
        **os.environ,
        "PATH": f"{Path(AIRFLOW).parent}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(Path(__file__).parent),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
        # one task per core, one thread per task: OpenMP threads of concurrent tasks
        # spinning on the same cores made prediction ~50x slower in the overhead bench
        "AIRFLOW__CORE__PARALLELISM": str(os.cpu_count() or 2),
        "OMP_NUM_THREADS": "1",
        # an idle scheduler loop waits 0.1 s instead of 1 s: every dependency level of the
        # audit (fetch -> ... -> publish) otherwise waits up to a second to be scheduled
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.1",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_name.hostname",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta_url,
        # psycopg 3 is sync and async: no asyncpg needed (Airflow would derive asyncpg)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": meta_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__SECRET_KEY": "geoaudit-local-deployment-secret",
        "AIRFLOW__API_AUTH__JWT_SECRET": "geoaudit-local-deployment-jwt-secret-long-enough",
        "GEOAUDIT_HOME": str(geoaudit_home),
        "GEOAUDIT_DATABASE_URL": geoaudit_url,
        "GEOAUDIT_TASK_RETRIES": "0",
    }
    if broker_url:
        env["AIRFLOW__CELERY__BROKER_URL"] = broker_url
        env["AIRFLOW__CELERY__RESULT_BACKEND"] = f"db+{meta_url}"
        env["AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER"] = "1"
    if auth == "fab":
        env["AIRFLOW__CORE__AUTH_MANAGER"] = FAB_AUTH_MANAGER
        env["GEOAUDIT_AIRFLOW_TRIGGER_ROLE"] = TRIGGER_ROLE
    env.pop("GEOAUDIT_AOI_DIR", None)

    (airflow_home / "passwords.json").write_text(json.dumps({"admin": password}))
    return env


def migrate(env: dict[str, str]) -> None:
    """``airflow db migrate`` of the metadata database."""
    out = subprocess.run(
        [AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600
    )
    if out.returncode:
        raise RuntimeError(f"airflow db migrate failed:\n{out.stderr[-3000:]}")


def create_fab_accounts(env: dict[str, str], admin_password: str, dashboard_password: str) -> None:
    """The accounts docker-compose.yml's airflow-init creates, by the same script
    (``docker/airflow/accounts.sh``): ``admin`` (Admin) and ``dashboard`` with the
    trigger role."""
    accounts = {
        "AIRFLOW_ADMIN_USERNAME": "admin",
        "AIRFLOW_ADMIN_PASSWORD": admin_password,
        "GEOAUDIT_AIRFLOW_USERNAME": "dashboard",
        "GEOAUDIT_AIRFLOW_PASSWORD": dashboard_password,
    }
    out = subprocess.run(
        ["bash", str(ROOT / "docker" / "airflow" / "accounts.sh")],
        env={**env, **accounts},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode:
        raise RuntimeError(f"docker/airflow/accounts.sh failed:\n{out.stderr[-3000:]}")


class Deployment:
    """Airflow components as child processes sharing one environment."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen] = {}
        self.repeated_signal = False

    def start(self, name: str, *args: str, **extra_env: str) -> None:
        """Start ``airflow <args>`` as component ``name`` (log in ``logs/<name>.log``)."""
        log = (self.logs / f"{name}.log").open("w")
        self.procs[name] = subprocess.Popen(
            [AIRFLOW, *args],
            env={**self.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() takes the children too
        )

    def check_alive(self) -> None:
        """Raise with the log tail of any component that has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> dict[str, int]:
        """SIGTERM every component (warm shutdown); SIGTERM again what still runs after
        30 s, SIGKILL what is left 30 s later. Exit codes by component.

        The second SIGTERM is for Airflow 3.3's dag-processor: its handler calls
        ``sys.exit`` and, when the signal lands inside logging's lock release, Python
        prints "Exception ignored in _releaseLock" and the process keeps running.
        """
        for attempt, sig in enumerate((signal.SIGTERM, signal.SIGTERM, signal.SIGKILL)):
            running = [p for p in self.procs.values() if p.poll() is None]
            if not running:
                break
            if attempt:
                self.repeated_signal = True
            for proc in running:
                os.killpg(proc.pid, sig)
            deadline = time.monotonic() + 30
            for proc in running:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        return {name: proc.wait() for name, proc in self.procs.items()}


def wait_for(what: str, check, timeout: float, deployment: Deployment, every: float = 2.0):
    """Poll ``check()`` until truthy (HTTP errors count as not yet); its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment.check_alive()
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what} (logs: {deployment.logs})"
    )


class Api:
    """The REST API v2 with a token of the admin user."""

    def __init__(self, base: str, password: str, deployment: Deployment) -> None:
        wait_for(
            "the api-server",
            lambda: httpx.get(f"{base}/api/v2/monitor/health", timeout=5).status_code == 200,
            180,
            deployment,
        )
        token = httpx.post(
            f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=10
        ).json()["access_token"]
        self.client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.deployment = deployment

    def wait_parsed(self, dag_id: str) -> None:
        """Wait until the dag-processor has stored ``dag_id``."""
        wait_for(
            f"{dag_id} to be parsed",
            lambda: self.client.get(f"/api/v2/dags/{dag_id}").status_code == 200,
            240,
            self.deployment,
        )

    def trigger(self, dag_id: str, run_id: str, conf: dict) -> None:
        """Wait for the DAG to be parsed, unpause it and start run ``run_id``."""
        self.wait_parsed(dag_id)
        self.client.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
        resp = self.client.post(
            f"/api/v2/dags/{dag_id}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": None, "conf": conf},
        )
        if resp.status_code not in (200, 201):
            raise AssertionError(f"trigger refused: {resp.status_code} {resp.text}")

    def wait(self, dag_id: str, run_id: str, timeout: float = 900) -> tuple[str, list[dict]]:
        """Wait for run ``run_id`` to end; (state, task instances)."""

        def finished():
            state = self.client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
            return state if state in ("success", "failed") else None

        state = wait_for(f"run {run_id}", finished, timeout, self.deployment, every=1.0)
        tis = self.client.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000}
        ).json()["task_instances"]
        return state, tis

    def trigger_and_wait(self, dag_id: str, run_id: str, conf: dict, timeout: float = 900):
        """Unpause, trigger, wait for the end; (state, seconds, task instances)."""
        t0 = time.perf_counter()
        self.trigger(dag_id, run_id, conf)
        state, tis = self.wait(dag_id, run_id, timeout)
        return state, time.perf_counter() - t0, tis


class MemorySampler:
    """Peak resident memory of each component's process tree (the Celery worker, its
    pool child and the task processes it forks), sampled every ``every`` seconds in a
    background thread while the ``with`` block runs."""

    def __init__(self, deployment: Deployment, names: list[str], every: float = 0.25) -> None:
        self.deployment, self.names, self.every = deployment, names, every
        self.peak_bytes = dict.fromkeys(names, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        import psutil

        while not self._stop.is_set():
            for name in self.names:
                self.peak_bytes[name] = max(self.peak_bytes[name], self._tree_rss(psutil, name))
            self._stop.wait(self.every)

    def _tree_rss(self, psutil, name: str) -> int:  # noqa: ANN001
        return tree_rss(self.deployment.procs[name].pid)


def tree_rss(pid: int) -> int:
    """Resident bytes of process ``pid`` and all its descendants (0 once it has ended;
    a child that ends while being read counts 0)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
    return total
