"""docker-compose.yml checked without a Docker engine: parsed, and every service's
image/build, command, environment and dependencies checked against what the code and
the installed Airflow expect."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES = COMPOSE["services"]
AIRFLOW_SERVICES = [name for name in SERVICES if name.startswith("airflow-")]
VAR = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")
ENV_EXAMPLE = dict(
    line.split("=", 1)
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    if line and not line.startswith("#")
)
# variables the DAG files read besides the Settings fields
DAG_ENV = {
    "GEOAUDIT_GPU_QUEUE",
    "GEOAUDIT_GPU_POOL",
    "GEOAUDIT_TASK_RETRIES",
    "GEOAUDIT_AIRFLOW_TRIGGER_ROLE",
}


# what an operator puts into .env for the secrets .env.example leaves empty
OPERATOR_SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret-1",
    "AIRFLOW_SECRET_KEY": "api-secret-2",
    "AIRFLOW_JWT_SECRET": "jwt-secret-3",
    "AIRFLOW_FERNET_KEY": "7i2uBTIo0PLoH3l7xYsH2iRdd0Vsr0Wk4jOlGAd1fZA=",
    "AIRFLOW_ADMIN_USERNAME": "ops",
    "AIRFLOW_ADMIN_PASSWORD": "admin-secret-4",
    "GEOAUDIT_AIRFLOW_PASSWORD": "dashboard-secret-5",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|USERS|USERNAME")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose interpolation: ``${X:-d}`` takes ``env`` (.env.example plus the operator's
    secrets) else ``d``; ``${X:?msg}`` fails like compose when X is unset or empty."""
    env = {**ENV_EXAMPLE, **OPERATOR_SECRETS} if env is None else env

    def sub(match: re.Match) -> str:
        name, default = match.group(1), match.group(2) or ""
        if ":?" in match.group(0) and not env.get(name):
            raise ValueError(f"required variable {name} is missing a value: {default}")
        return env.get(name) or default

    return VAR.sub(sub, str(value))


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    return {k: interpolate(v) for k, v in env.items()}


def bin_path(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def test_services_and_images() -> None:
    assert {"postgis", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler"} <= set(
        SERVICES
    )
    assert {"airflow-dag-processor", "airflow-triggerer", "airflow-worker"} <= set(SERVICES)
    assert "dashboard" in SERVICES
    for name, svc in SERVICES.items():
        assert "image" in svc or "build" in svc, name
        if "build" in svc:
            assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "torch==2.14.1" in dockerfile and "torchvision==0.29.1" in dockerfile
    assert "'.[airflow,dashboard]'" in dockerfile and "COPY dags ./dags" in dockerfile
    assert "COPY dashboard ./dashboard" in dockerfile
    assert "WORKDIR /opt/geoaudit" in dockerfile


def test_dependencies_exist_and_health_conditions_have_healthchecks() -> None:
    for name, svc in SERVICES.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{dep} has no healthcheck"
            if cond["condition"] == "service_completed_successfully":
                assert SERVICES[dep].get("restart") == "no"
    for name in AIRFLOW_SERVICES:
        if name != "airflow-init":
            deps = SERVICES[name]["depends_on"]
            assert "airflow-init" in deps or "airflow-apiserver" in deps, name


def test_volumes_and_mounts() -> None:
    declared = set(COMPOSE["volumes"])
    for name, svc in SERVICES.items():
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} missing"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
    # the artifact store and AOI folder are on the volume every Airflow service shares
    for name in AIRFLOW_SERVICES:
        env = environment(name)
        assert env["GEOAUDIT_ARTIFACT_ROOT"].startswith("/data/geoaudit")
        assert any(m.startswith("artifacts:/data/geoaudit") for m in SERVICES[name]["volumes"])


def test_geoaudit_environment_is_what_the_code_reads() -> None:
    from pipeline.settings import Settings

    fields = {f"GEOAUDIT_{name.upper()}" for name in Settings.model_fields}
    for name in [*AIRFLOW_SERVICES, "dashboard"]:
        for key in environment(name):
            if key.startswith("GEOAUDIT_"):
                assert key in fields | DAG_ENV, f"{name}: {key} is read by nothing"
    env = environment("airflow-worker")
    settings = Settings(
        home=env["GEOAUDIT_HOME"],
        database_url=env["GEOAUDIT_DATABASE_URL"],
        artifact_root=env["GEOAUDIT_ARTIFACT_ROOT"],
        device=env["GEOAUDIT_DEVICE"],
        log_level=env["GEOAUDIT_LOG_LEVEL"],
        log_format=env["GEOAUDIT_LOG_FORMAT"],
    )
    assert settings.resolved_database_url.startswith("postgresql+psycopg://")
    assert settings.resolved_database_url.endswith("@postgis:5432/geoaudit")
    assert environment("airflow-worker-gpu")["GEOAUDIT_DEVICE"] == "cuda"


def test_airflow_settings_are_real_config_options(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    script = (
        "import json, sys\n"
        "from airflow.configuration import conf\n"
        "known = conf.configuration_description  # core and provider options\n"
        "keys = json.loads(sys.argv[1])\n"
        "print(json.dumps([k for k in keys\n"
        "                  if k[1] not in known.get(k[0], {}).get('options', {})]))\n"
    )
    keys = sorted(  # AIRFLOW__SECTION__KEY -> (section, key)
        {
            tuple(k.lower().split("__")[1:3])
            for name in AIRFLOW_SERVICES
            for k in environment(name)
            if k.startswith("AIRFLOW__")
        }
    )

    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(keys)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "AIRFLOW_HOME": str(tmp_path)},
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    env = environment("airflow-scheduler")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/geoaudit/dags"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379")
    assert "@postgis:5432/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


def _commands() -> list[tuple[str, list[str]]]:
    out = []
    for name, svc in SERVICES.items():
        cmd = svc.get("command")
        if cmd is None:
            continue
        if cmd[:2] == ["bash", "-c"]:
            for part in interpolate(cmd[2]).split("&&"):
                words = re.findall(r'"[^"]*"|\S+', part.strip())
                out.append((name, [w.strip('"') for w in words]))
        else:
            out.append((name, [interpolate(c) for c in cmd]))
    return out


@pytest.mark.parametrize("service,command", _commands(), ids=lambda v: str(v)[:40])
def test_every_command_exists(service, command, tmp_path) -> None:
    """Each command's program and sub-command parse with --help in this environment."""
    program, args = command[0], command[1:]
    if program == "bash":  # a script of the image: it exists and parses (its airflow
        # commands run for real in tests/dags/test_distributed.py)
        script = ROOT / args[0]
        assert script.is_file(), f"{service}: no {args[0]}"
        assert f"COPY {script.parent.relative_to(ROOT)} " in (ROOT / "Dockerfile").read_text()
        subprocess.run(["bash", "-n", str(script)], check=True)
        return
    assert program in {"airflow", "geoaudit", "streamlit"}, f"{service}: unexpected {program}"
    subcommand = [a for a in args if not a.startswith("-")][
        : 2 if args[0] in {"celery", "db", "pools"} else 1
    ]
    result = subprocess.run(
        [bin_path(program), *subcommand, "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "AIRFLOW_HOME": str(tmp_path)},
        timeout=120,
    )
    assert result.returncode == 0, f"{service}: {' '.join(command)}\n{result.stderr[-2000:]}"
    if "--queues" in args:
        queue = args[args.index("--queues") + 1]
        assert queue == ("gpu" if service == "airflow-worker-gpu" else "default")


def test_gpu_worker_reserves_an_nvidia_device_behind_a_profile() -> None:
    gpu = SERVICES["airflow-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "cu1" in gpu["build"]["args"]["TORCH_INDEX_URL"]


def test_required_secrets_are_in_env_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    required = {m.group(1) for m in re.finditer(r"\$\{(\w+):\?", text)}
    assert required and required <= set(ENV_EXAMPLE)
    from pipeline.settings import Settings

    Settings(_env_file=ROOT / ".env.example")  # non-GEOAUDIT keys in .env are ignored


def test_dashboard_service_runs_the_app_on_the_shared_volume() -> None:
    svc = SERVICES["dashboard"]
    command = svc["command"]
    assert command[:3] == ["streamlit", "run", "dashboard/app.py"]
    assert (ROOT / command[2]).is_file()
    assert "--server.port=8501" in command and "--server.address=0.0.0.0" in command
    assert interpolate(svc["ports"][0]).endswith(":8501")
    assert "8501/_stcore/health" in " ".join(svc["healthcheck"]["test"])
    assert "artifacts:/data/geoaudit" in svc["volumes"]
    env = environment("dashboard")
    assert env["GEOAUDIT_AIRFLOW_URL"] == "http://airflow-apiserver:8080"
    assert env["GEOAUDIT_DATABASE_URL"] == environment("airflow-worker")["GEOAUDIT_DATABASE_URL"]
    assert env["GEOAUDIT_ARTIFACT_ROOT"] == environment("airflow-worker")["GEOAUDIT_ARTIFACT_ROOT"]
    from pipeline.settings import Settings

    # empty review password / basemap from .env.example mean "not set": read-only, offline map
    settings = Settings(
        review_password=env["GEOAUDIT_REVIEW_PASSWORD"], basemap_url=env["GEOAUDIT_BASEMAP_URL"]
    )
    assert settings.review_password is None and settings.basemap_url is None


def test_the_stack_refuses_to_start_without_its_secrets() -> None:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    required = {m.group(1) for m in re.finditer(r"\$\{(\w+):\?", text)}
    assert set(OPERATOR_SECRETS) <= required
    # no secret has a default value to fall back on (an empty one means "not set": the
    # dashboard is then read-only)
    defaults = {m.group(1): m.group(2) for m in re.finditer(r"\$\{(\w+):?-([^}]*)\}", text)}
    assert {n: d for n, d in defaults.items() if SECRET_NAME.search(n) and d} == {}
    # .env.example ships none of them: copied as is, the stack does not start
    assert all(ENV_EXAMPLE.get(name, "") == "" for name in OPERATOR_SECRETS)
    for name in OPERATOR_SECRETS:
        env = {**ENV_EXAMPLE, **OPERATOR_SECRETS, name: ""}
        with pytest.raises(ValueError, match=rf"required variable {name} is missing"):
            interpolate(text, env)
    interpolate(text)  # with every secret set it does


def test_published_ports_listen_on_loopback_unless_the_operator_says_otherwise() -> None:
    published = {name: svc["ports"] for name, svc in SERVICES.items() if "ports" in svc}
    assert set(published) == {"airflow-apiserver", "dashboard"}  # not PostgreSQL, not Redis
    for ports in published.values():
        for port in ports:
            assert port.startswith("${GEOAUDIT_BIND_ADDRESS:-127.0.0.1}:"), port
            assert interpolate(port).startswith("127.0.0.1:")
            assert interpolate(port, {"GEOAUDIT_BIND_ADDRESS": "0.0.0.0"}).startswith("0.0.0.0:")


def test_geoaudit_containers_run_as_the_unprivileged_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "useradd --create-home --uid 50000 geoaudit" in dockerfile
    assert dockerfile.rstrip().splitlines()[-2:] == ["USER geoaudit", 'CMD ["geoaudit", "--help"]']
    ours = [n for n, svc in SERVICES.items() if "geoaudit" in str(svc.get("image", ""))]
    assert {"dashboard", "airflow-worker", "airflow-apiserver"} <= set(ours)
    for name in ours:
        assert str(SERVICES[name]["user"]).split(":")[0] == "50000", name


def test_airflow_runs_with_roles_and_the_dashboard_has_its_own_limited_account() -> None:
    """The FAB auth manager (roles per DAG); the DAGs grant the trigger role its rights
    and docker/airflow/accounts.sh creates that role and the dashboard's account."""
    from pipeline.airflow_api import trigger_role_access

    env = environment("airflow-scheduler")
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("fab_auth_manager.FabAuthManager")
    role = env["GEOAUDIT_AIRFLOW_TRIGGER_ROLE"]
    assert all(environment(n)["GEOAUDIT_AIRFLOW_TRIGGER_ROLE"] == role for n in AIRFLOW_SERVICES)
    assert trigger_role_access(role, audit=True) == {
        role: {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read", "can_create"}}
    }
    assert trigger_role_access(role, audit=False) == {
        role: {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}}
    }
    init = environment("airflow-init")
    dashboard = environment("dashboard")
    for key in ("GEOAUDIT_AIRFLOW_USERNAME", "GEOAUDIT_AIRFLOW_PASSWORD"):
        assert init[key] == dashboard[key] != ""
    assert init["AIRFLOW_ADMIN_USERNAME"] != init["GEOAUDIT_AIRFLOW_USERNAME"]
    assert "bash docker/airflow/accounts.sh" in SERVICES["airflow-init"]["command"][2]
    script = (ROOT / "docker" / "airflow" / "accounts.sh").read_text(encoding="utf-8")
    assert "GEOAUDIT_AIRFLOW_TRIGGER_ROLE:-GeoAuditTrigger" in script
    assert role == "GeoAuditTrigger"
