"""The geoaudit command: help everywhere, clear errors with non-zero exit codes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.errors import ExitCode

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
    assert "``" not in result.output  # docstring markup rendered, not shown raw


def test_help_starts_without_the_engine_in_a_new_process(home: Path) -> None:
    """``geoaudit --help`` and a command's help load the CLI alone: each command imports
    what it uses when it runs."""
    from cli_process import HELP_FREE_OF, run_cli

    from pipeline.settings import Settings

    for args in (["--help"], ["audit", "--help"], ["aoi", "list", "--help"]):
        done = run_cli(Settings(home=home), *args, libraries=HELP_FREE_OF)
        assert done.exit_code == 0 and "Usage" in done.output, done.output
        assert done.imported == [], args


def test_a_quiet_command_never_loads_the_log_renderer(home: Path) -> None:
    """At the default level nothing is logged by ``aoi list``, so structlog (and rich's
    traceback renderer it pulls in) stays unloaded; the light commands need no projection
    library either."""
    from cli_process import run_cli

    from pipeline.settings import Settings

    done = run_cli(Settings(home=home), "aoi", "list", libraries=("structlog", "pyproj"))
    assert done.exit_code == 0, done.output
    assert done.imported == []


def test_version() -> None:
    from importlib import metadata

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"geoaudit {metadata.version('geoaudit')}"


def test_init_creates_the_embedded_database(home: Path) -> None:
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    assert (home / "geoaudit.gpkg").exists() and not (home / "geoaudit.db").exists()
    assert str(home / "artifacts") in result.output


def test_a_home_made_before_keeps_its_store(home: Path) -> None:
    """A home whose store is the old ``geoaudit.db`` goes on using it (migrated in place)."""
    from pipeline.settings import load_settings

    home.mkdir(parents=True, exist_ok=True)
    (home / "geoaudit.db").write_bytes(b"")
    assert load_settings().resolved_database_url == f"sqlite:///{home / 'geoaudit.db'}"
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    assert not (home / "geoaudit.gpkg").exists()


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
    import json

    as_json = json.loads(runner.invoke(app, ["aoi", "show", "town", "--json"]).stdout)
    assert as_json["name"] == "town" and as_json["bbox"] == [8.54, 47.36, 8.545, 47.365]
    again = runner.invoke(app, ["aoi", "add", str(aoi), "--json"])
    assert again.exit_code == 0, again.output
    added = json.loads(again.stdout)
    assert added["name"] == "town" and added["tiles"] > 0 and added["work_zoom"] == 18
    init = json.loads(runner.invoke(app, ["init", "--json"]).stdout)
    assert init["database"].startswith("sqlite:///") and init["database"].endswith(".gpkg")


def test_every_command_speaks_json() -> None:
    """Scripts get one JSON document from any command: each has --json."""
    import typer.main

    def commands(group, prefix=()):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from commands(command, (*prefix, name))
            else:
                yield (*prefix, name), command

    missing = [
        " ".join(path)
        for path, command in commands(typer.main.get_command(app))
        if not any("--json" in p.opts for p in command.params)
    ]
    assert missing == []


def test_malformed_aoi_file_exits_3_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbbox: [0, 0, 1]\n")
    result = runner.invoke(app, ["aoi", "add", str(bad)])
    assert result.exit_code == ExitCode.BAD_INPUT == 3
    assert "bad.yaml" in result.output and "bbox" in result.output
    assert "Traceback" not in result.output


def test_unknown_aoi_exits_3() -> None:
    result = runner.invoke(app, ["audit", "nowhere", "--step", "2025-06-01"])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "'nowhere'" in result.output


def test_usage_errors_exit_2_and_bad_values_exit_3() -> None:
    usage = runner.invoke(app, ["train", "x", "--step", "2025-06-01", "--promote", "sometimes"])
    assert usage.exit_code == ExitCode.USAGE == 2
    assert runner.invoke(app, ["audit", "x", "--no-such-option"]).exit_code == ExitCode.USAGE
    assert runner.invoke(app, ["audit"]).exit_code == ExitCode.USAGE  # the AOI missing
    assert runner.invoke(app, ["audit", "x", "--step", "2025-13-45"]).exit_code == 3
    assert runner.invoke(app, ["models", "promote", "12345"]).exit_code == ExitCode.BAD_INPUT


def test_an_unreachable_database_is_one_masked_line_and_exit_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a real PostgreSQL client connecting to a loopback port where nothing listens
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://geoaudit:hunter2@127.0.0.1:{port}/geoaudit"
    monkeypatch.setenv("GEOAUDIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GEOAUDIT_DATABASE_URL", url)
    for args in (["aoi", "list"], ["audit", "town", "--step", "2025-06-01"], ["report", "x"]):
        result = runner.invoke(app, args)
        assert result.exit_code == ExitCode.FAULT == 4, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: database "), result.output
        assert f"127.0.0.1:{port}" in lines[0] and "Connection refused" in lines[0]
        assert "hunter2" not in result.output and "geoaudit:***@" in lines[0]


def test_progress_is_a_line_now_and_then_off_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Redirected to a log, 5,000 quick steps write a first and a last line, not one per
    refresh; on a terminal the same work draws a bar (carriage returns)."""
    import sys

    from pipeline import progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    for _ in progress.progress_bar(range(5000), enabled=True, desc="work", unit="step"):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert 1 <= len(lines) <= 3, lines
    assert "\r" not in "".join(lines) and lines[-1].startswith("work: 100%")
    assert "5000/5000" in lines[-1]
    # set_postfix draws at once in tqdm: here it waits for the interval too
    with progress.progress_bar(total=2000, enabled=True, desc="train") as bar:
        for _ in range(2000):
            bar.update()
            bar.set_postfix(loss=0.5)
    lines = capsys.readouterr().err.splitlines()
    assert 1 <= len(lines) <= 3 and "2000/2000" in lines[-1], lines
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)  # every refresh is due
    for _ in progress.progress_bar(range(3), enabled=True, desc="slow"):
        pass
    assert len(capsys.readouterr().err.splitlines()) >= 3  # a line per due refresh
    for _ in progress.progress_bar(range(5000), enabled=False, desc="off"):
        pass
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    for _ in progress.progress_bar(range(10), enabled=True, desc="tty"):
        pass
    assert "\r" in capsys.readouterr().err


def test_export_refuses_an_unknown_format(home: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["export", "sample-town", "--out", str(tmp_path / "out"), "--format", "shp"]
    )
    assert result.exit_code == 2, result.output
    assert "must be one of gpkg, geojson, parquet" in result.output
    assert not (tmp_path / "out").exists()
