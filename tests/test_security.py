"""Security basics: SQL is never built from strings, secrets never reach logs or stored
errors, and names from users or configuration cannot leave the artifact root."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
import shapely
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.db.identifiers import quote_name
from pipeline.logs import configure_logging
from pipeline.redact import redact
from pipeline.settings import Settings
from pipeline.store import ArtifactStore

ROOT = Path(__file__).resolve().parents[1]
SQL_CALLS = {"text", "execute", "exec_driver_sql", "executescript", "read_sql", "read_sql_query"}
# (file, line text) of the statements built from constants only
ALLOWED = {
    ("pipeline/db/engine.py", 'cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")')
}


def _is_quote_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and getattr(node.func, "id", "") == "quote_name"


def _quoted_names(tree: ast.AST) -> set[str]:
    """Variables assigned only from ``quote_name(...)`` (alone or in a tuple)."""
    quoted, other = set(), set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            pairs = (
                zip(target.elts, node.value.elts, strict=False)
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                else [(target, node.value)]
            )
            for name, value in pairs:
                if isinstance(name, ast.Name):
                    (quoted if _is_quote_call(value) else other).add(name.id)
    return quoted - other


def _only_identifiers(text: ast.JoinedStr, quoted: set[str]) -> bool:
    """An f-string whose every interpolation is an identifier quoted by quote_name."""
    return all(
        _is_quote_call(part.value) or (isinstance(part.value, ast.Name) and part.value.id in quoted)
        for part in text.values
        if isinstance(part, ast.FormattedValue)
    )


def _innermost_scopes(tree: ast.Module) -> dict[ast.AST, ast.AST]:
    """Each node's innermost enclosing function (or the module): quoted variables are
    looked up in the scope that uses them."""
    scope_of: dict[ast.AST, ast.AST] = {}

    def visit(node: ast.AST, scope: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else scope
            scope_of[child] = inner
            visit(child, inner)

    visit(tree, tree)
    return scope_of


def _built_sql() -> list[str]:
    found = []
    for folder in ("pipeline", "dashboard", "dags"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            lines = path.read_text().splitlines()
            tree = ast.parse(path.read_text())
            scope_of = _innermost_scopes(tree)
            quoted = {scope: _quoted_names(scope) for scope in {tree, *scope_of.values()}}
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and node.args):
                    continue
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                first = node.args[0]
                built = (
                    isinstance(first, ast.JoinedStr)
                    and not _only_identifiers(first, quoted[scope_of[node]])
                ) or (isinstance(first, ast.BinOp) and isinstance(first.op, ast.Add | ast.Mod))
                formatted = isinstance(first, ast.Call) and getattr(first.func, "attr", "") in (
                    "format",
                    "replace",
                )
                if name in SQL_CALLS and (built or formatted):
                    line = lines[node.lineno - 1].strip()
                    if (rel, line) not in ALLOWED:
                        found.append(f"{rel}:{node.lineno}: {line}")
    return found


def test_no_sql_statement_is_built_from_strings() -> None:
    assert _built_sql() == []


@pytest.mark.parametrize("name", ['tile"; DROP TABLE run; --', "a b", "", "1abc", "x" * 64])
def test_only_plain_identifiers_are_quoted_into_sql(name: str) -> None:
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        quote_name(name)
    assert quote_name("rtree_finding_geometry") == '"rtree_finding_geometry"'


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("could not connect to postgresql+psycopg://geo:s3cr3t@db:5432/geo", "s3cr3t"),
        ("GET https://user:pa55@tiles.example.org/z/x/y.png failed", "pa55"),
        ("source https://host/a.geojson?token=abc123xyz&bbox=1", "abc123xyz"),
        ("airflow login with password='hunter2' refused", "hunter2"),
    ],
)
def test_redact_masks_passwords_and_tokens(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and "***" in out


def test_logs_never_show_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    log = logging.getLogger("pipeline.test")
    log.info(
        "connecting to postgresql://geo:s3cr3t@db/geo",
        extra={"airflow_password": "hunter2", "url": "https://u:pa55@h/x"},
    )
    try:
        raise RuntimeError("lost postgresql://geo:s3cr3t@db/geo")
    except RuntimeError:
        log.exception("publish failed")
    err = capsys.readouterr().err
    assert "connecting to postgresql://geo:***@db/geo" in err
    for secret in ("s3cr3t", "hunter2", "pa55"):
        assert secret not in err
    configure_logging("WARNING")


def test_settings_repr_hides_the_database_url_and_passwords() -> None:
    settings = Settings(
        database_url="postgresql://geo:s3cr3t@db/geo",
        airflow_password="hunter2",
        review_password="letmein",
    )
    text = repr(settings) + str(settings)
    for secret in ("s3cr3t", "hunter2", "letmein"):
        assert secret not in text
    # what Airflow tasks hand to its log masker
    assert sorted(settings.secret_values()) == ["hunter2", "letmein", "s3cr3t"]


def test_a_failed_run_stores_its_error_without_the_secret(engine, tmp_path: Path) -> None:
    from pipeline.context import Context
    from pipeline.db import repo
    from pipeline.db.models import Run
    from pipeline.run.lifecycle import fail_run
    from pipeline.tiles import Tile, lnglat_bounds

    ctx = Context(settings=Settings(home=tmp_path), engine=engine, store=ArtifactStore(tmp_path))
    with Session(engine) as s, s.begin():
        aoi = repo.upsert_aoi(s, "town", {}, shapely.box(*lnglat_bounds(Tile(1, 1, 3))))
        run_id = repo.start_run(s, aoi.id, "2025-01-01", trigger="test", shards_total=1).id
    fail_run(ctx, run_id, OSError("cannot open https://u:pa55@host/data.geojson"))
    with Session(engine) as s:
        error = s.scalars(select(Run.error).where(Run.id == run_id)).one()
    assert error == "cannot open https://u:***@host/data.geojson"


@pytest.mark.parametrize(
    "key",
    ["../outside.bin", "aois/../../etc/passwd", "/etc/passwd", "aois/a/../../b", "a\\..\\b"],
)
def test_artifact_keys_cannot_leave_the_root(tmp_path: Path, key: str) -> None:
    from pipeline.errors import StoreError

    store = ArtifactStore(tmp_path / "root")
    with pytest.raises(StoreError, match="not a safe relative path"):
        store.write_bytes(key, b"x")
    assert not (tmp_path / "outside.bin").exists()
