"""The command line, end to end on a small sample town, read as a script reads it:
every working command prints one JSON document with ``--json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.sample import STEPS

pytestmark = pytest.mark.slow

runner = CliRunner()
STEP = STEPS[0]


def json_of(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_fetch_train_predict_audit_export_speak_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOAUDIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GEOAUDIT_DATABASE_URL", raising=False)
    monkeypatch.delenv("GEOAUDIT_ARTIFACT_ROOT", raising=False)
    created = runner.invoke(app, ["sample", "create", "--size-m", "300"])
    assert created.exit_code == 0, created.output

    fetched = json_of("fetch", "sample-town", "--step", STEP)
    assert fetched["imagery"]["kind"] == "imagery" and fetched["opendata"]["kind"] == "opendata"
    assert not fetched["imagery"]["reused"] and fetched["imagery"]["step"] == STEP
    assert json_of("fetch", "sample-town", "--step", STEP)["opendata"]["reused"]

    trained = json_of(
        "train", "sample-town", "--step", STEP, "--max-steps", "3", "--promote", "always"
    )
    predicted = json_of("predict", "sample-town", "--step", STEP)
    assert predicted["model_version_id"] == trained["model_version_id"]
    assert predicted["shards"] > 0 and predicted["cache_hits"] == 0
    assert json_of("predict", "sample-town", "--step", STEP)["cache_hits"] == predicted["shards"]
    # --repredict, as on `audit`, ignores the cache
    assert json_of("predict", "sample-town", "--step", STEP, "--repredict")["cache_hits"] == 0

    audited = json_of("audit", "sample-town", "--step", STEP)
    exported = json_of(
        "export", "sample-town", "--step", STEP, "--out", str(tmp_path / "out"), "--no-composites"
    )
    assert exported["run_id"] == audited["run_id"]
    assert Path(exported["layers"]["findings"]).is_file() and exported["composites"] == []

    onnx = json_of(
        "models", "export", str(trained["model_version_id"]), "--out", str(tmp_path / "m.onnx")
    )
    assert onnx == {"model_version_id": trained["model_version_id"], "onnx": onnx["onnx"]}
    assert Path(onnx["onnx"]).stat().st_size > 0
