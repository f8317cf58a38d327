"""Two audits of the same AOI and step at once: the second is refused with a clear
message and stores nothing; the CLI can wait instead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from audited_town import Audited
from pipeline.db.models import Run
from pipeline.locks import AuditBusyError
from pipeline.run.handoffs import AuditRequest
from pipeline.run.local import run_audit
from pipeline.run.stages import run_stage
from pipeline.sample.demo import SAMPLE_AOI

HOLDER = Path(__file__).resolve().parents[1] / "lock_holder.py"


@pytest.fixture
def held(audited: Audited):
    """The sample town's last step, locked by another process for the test."""
    ctx = audited.ctx
    aoi = SAMPLE_AOI
    step = audited.summary["runs"][-1]["step"]
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HOLDER),
            ctx.settings.resolved_database_url,
            aoi,
            step,
            str(ctx.settings.home),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    yield aoi, step, proc
    proc.kill()
    proc.wait(timeout=10)


def _runs(ctx) -> int:
    with Session(ctx.engine) as s:
        return s.scalar(select(func.count()).select_from(Run))


def test_the_second_audit_is_refused_and_stores_nothing(audited: Audited, held) -> None:
    ctx = audited.ctx
    aoi, step, _ = held
    before = _runs(ctx)
    with pytest.raises(AuditBusyError, match=f"AOI '{aoi}' step {step} is being audited"):
        run_audit(ctx, aoi, step, force=True)
    # the Airflow path refuses at its plan task, before any run row exists
    request = AuditRequest(aoi, step, force=True, trigger="airflow")
    fetched = {
        name: run_stage(ctx, name, request, {}).to_xcom()
        for name in ("fetch_imagery", "fetch_opendata")
    }
    with pytest.raises(AuditBusyError):
        run_stage(ctx, "plan", request, fetched)
    assert _runs(ctx) == before
    # another step of the same AOI is not blocked
    other = audited.summary["runs"][0]["step"]
    assert run_audit(ctx, aoi, other).reused


def test_the_cli_says_so_and_can_wait(audited: Audited, held, monkeypatch) -> None:
    from pipeline.cli.main import app

    ctx = audited.ctx
    aoi, step, proc = held
    monkeypatch.setenv("GEOAUDIT_HOME", str(ctx.settings.home))
    monkeypatch.setenv("GEOAUDIT_DATABASE_URL", ctx.settings.resolved_database_url)
    runner = CliRunner()
    refused = runner.invoke(app, ["audit", aoi, "--step", step])
    assert refused.exit_code == 4  # a runtime fault, not bad input
    assert "is being audited by another process" in refused.output
    proc.stdin.write("\n")  # the other audit ends in about a second
    proc.stdin.flush()
    waited = runner.invoke(app, ["audit", aoi, "--step", step, "--wait", "30"])
    assert waited.exit_code == 0, waited.output
