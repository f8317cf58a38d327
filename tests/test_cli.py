"""The geoaudit command: help everywhere, clear errors with non-zero exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app

runner = CliRunner()
COMMANDS = [
    [],
    ["init"],
    ["aoi"],
    ["aoi", "add"],
    ["aoi", "list"],
    ["sample", "create"],
    ["fetch"],
    ["train"],
    ["predict"],
    ["validate"],
    ["audit"],
    ["changes"],
    ["report"],
    ["export"],
    ["models"],
    ["models", "list"],
    ["models", "promote"],
    ["models", "export"],
    ["demo"],
]


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GEOAUDIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GEOAUDIT_DATABASE_URL", raising=False)
    monkeypatch.delenv("GEOAUDIT_ARTIFACT_ROOT", raising=False)
    return tmp_path / "home"


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "geoaudit")
def test_help_everywhere(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_init_creates_the_embedded_database(home: Path) -> None:
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    assert (home / "geoaudit.db").exists()
    assert str(home / "artifacts") in result.output


def test_aoi_add_and_list(tmp_path: Path) -> None:
    aoi = tmp_path / "town.yaml"
    aoi.write_text(
        "name: town\nbbox: [8.54, 47.36, 8.545, 47.365]\n"
        "imagery: {kind: geotiff, path: 'img/{step}.tif'}\n"
        "opendata: {kind: vector, path: b.geojson}\n"
    )
    result = runner.invoke(app, ["aoi", "add", str(aoi)])
    assert result.exit_code == 0, result.output
    assert "registered AOI town" in result.output
    listed = runner.invoke(app, ["aoi", "list", "--json"])
    assert listed.exit_code == 0 and '"name": "town"' in listed.output
    shown = runner.invoke(app, ["aoi", "show", "town"])
    assert str(tmp_path / "img" / "{step}.tif") in shown.output


def test_malformed_aoi_file_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbbox: [0, 0, 1]\n")
    result = runner.invoke(app, ["aoi", "add", str(bad)])
    assert result.exit_code == 2
    assert "bad.yaml" in result.output and "bbox" in result.output
    assert "Traceback" not in result.output


def test_unknown_aoi_exits_2() -> None:
    result = runner.invoke(app, ["audit", "nowhere", "--step", "2025-06-01"])
    assert result.exit_code == 2
    assert "'nowhere'" in result.output


def test_bad_option_values_exit_non_zero() -> None:
    assert (
        runner.invoke(
            app, ["train", "x", "--step", "2025-06-01", "--promote", "sometimes"]
        ).exit_code
        == 2
    )
    assert runner.invoke(app, ["audit", "x"]).exit_code == 2  # --step missing
    assert runner.invoke(app, ["models", "promote", "12345"]).exit_code == 2
