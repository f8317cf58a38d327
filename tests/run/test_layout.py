"""The artifact layout: every key is a safe store key, keys of different artifacts never
collide, and no other engine module builds an artifact key."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import StoreError
from pipeline.run import layout
from pipeline.store import ArtifactStore, check_key
from pipeline.tiles import Shard, Tile

PIPELINE = Path(__file__).resolve().parents[2] / "pipeline"
LAYOUT = PIPELINE / "run" / "layout.py"
KEY_PREFIXES = ("aois/", "runs/", "models/")

names = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")
steps = st.dates().map(lambda d: d.isoformat())
hashes = st.text("0123456789abcdef", min_size=16, max_size=64)
ids = st.integers(min_value=1, max_value=2**31 - 1)
suites = st.sampled_from(
    [
        "opendata.features",
        "opendata.snapshot",
        "imagery.shards",
        "imagery.snapshot",
        "outputs.tiles",
        "outputs.run",
    ]
)


@st.composite
def shard_ids(draw: st.DrawFn) -> str:
    z = draw(st.integers(4, 22))
    tile = Tile(draw(st.integers(0, 2**z - 1)), draw(st.integers(0, 2**z - 1)), z)
    return Shard(tile, min(z + draw(st.integers(0, 2)), 24)).id


@st.composite
def all_keys(draw: st.DrawFn) -> dict[str, str]:
    aoi, step, h, sid = draw(names), draw(steps), draw(hashes), draw(shard_ids())
    run_id, mv_id, suite = draw(ids), draw(ids), draw(suites)
    tag = draw(st.sampled_from([f"run-{run_id}", f"snapshots-{run_id}-{mv_id}"]))
    return {
        "imagery_folder": layout.imagery_folder(aoi, step, h),
        "imagery": layout.imagery_key(aoi, step, h, sid),
        "opendata": layout.opendata_key(aoi, step, h),
        "opendata_profile": layout.opendata_profile_key(aoi, step, h),
        "labels": layout.labels_key(aoi, h, sid),
        "predictions_folder": layout.predictions_folder(aoi, mv_id),
        "prediction": layout.prediction_key(aoi, mv_id, h, sid),
        "validation_folder": layout.validation_folder(aoi, step, tag),
        "validation_page": layout.validation_page_key(aoi, step, tag, suite),
        "validation_index": layout.validation_index_key(aoi, step, tag),
        "shard_buildings": layout.shard_buildings_key(run_id, sid),
        "run_buildings": layout.run_buildings_key(run_id),
        "model_weights": layout.model_weights_key(aoi, h),
    }


@given(all_keys())
def test_every_key_is_a_safe_store_key(keys: dict[str, str]) -> None:
    for what, key in keys.items():
        assert check_key(key) == key, what
        assert key.startswith(KEY_PREFIXES), what


@given(all_keys())
def test_files_sit_in_their_folders_and_never_collide(keys: dict[str, str]) -> None:
    assert keys["imagery"].startswith(keys["imagery_folder"] + "/")
    assert keys["prediction"].startswith(keys["predictions_folder"] + "/")
    assert keys["validation_page"].startswith(keys["validation_folder"] + "/")
    assert keys["validation_index"] == keys["validation_folder"] + "/index.html"
    files = [v for k, v in keys.items() if not k.endswith("_folder")]
    assert len(set(files)) == len(files)


def test_hashes_are_cut_to_16_characters() -> None:
    full = "0123456789abcdef" * 4
    assert (
        layout.imagery_folder("a", "2025-06-01", full)
        == "aois/a/imagery/2025-06-01/0123456789abcdef"
    )
    assert layout.opendata_key("a", "2025-06-01", full) == (
        "aois/a/opendata/2025-06-01/0123456789abcdef.parquet"
    )
    assert layout.opendata_profile_key("a", "2025-06-01", full) == (
        "aois/a/opendata/2025-06-01/0123456789abcdef.profile.parquet"
    )
    assert layout.labels_key("a", full, "18-1-2") == "aois/a/labels/0123456789abcdef/18-1-2.tif"
    assert layout.prediction_key("a", 7, full, "18-1-2") == (
        "aois/a/predictions/m7/0123456789abcdef/18-1-2.tif"
    )
    assert layout.model_weights_key("buildings", full) == "models/buildings/0123456789abcdef.pt"
    assert layout.shard_buildings_key(3, "18-1-2") == "runs/3/buildings/18-1-2.parquet"
    assert layout.run_buildings_key(3) == "runs/3/buildings.parquet"


def test_labels_depend_on_the_open_data_and_predictions_on_model_and_imagery() -> None:
    a, b = "a" * 64, "b" * 64
    assert layout.labels_key("x", a, "18-1-2") != layout.labels_key("x", b, "18-1-2")
    assert layout.prediction_key("x", 1, a, "18-1-2") != layout.prediction_key("x", 2, a, "18-1-2")
    assert layout.prediction_key("x", 1, a, "18-1-2") != layout.prediction_key("x", 1, b, "18-1-2")


def test_validation_without_a_step_goes_to_unknown() -> None:
    assert layout.validation_folder("a", "", "run-1") == "aois/a/validation/unknown/run-1"
    assert check_key(layout.validation_index_key("a", "", "run-1"))


def test_keys_are_refused_by_the_store_when_a_part_is_unsafe(tmp_path: Path) -> None:
    # the layout trusts its inputs (AOI names and steps are validated upstream); the
    # store is what refuses a key that would escape its root
    store = ArtifactStore(tmp_path)
    with pytest.raises(StoreError, match="not a safe relative path"):
        store.write_bytes(layout.labels_key("..", "a" * 16, "18-1-2"), b"x")


def _key_literals(path: Path) -> list[tuple[int, str]]:
    """String literals and f-strings of a module that start like an artifact key."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif (
            isinstance(node, ast.JoinedStr)
            and node.values
            and isinstance(node.values[0], ast.Constant)
        ):
            text = node.values[0].value
        if isinstance(text, str) and text.startswith(KEY_PREFIXES):
            found.add((node.lineno, text))
    return sorted(found)


def test_the_scan_finds_the_keys_layout_builds() -> None:
    # the static check below would pass vacuously if the scan found nothing anywhere
    prefixes = {text.split("/")[0] for _, text in _key_literals(LAYOUT)}
    assert prefixes == {"aois", "runs", "models"}


def test_no_other_engine_module_builds_an_artifact_key() -> None:
    offenders = {
        str(path.relative_to(PIPELINE.parent)): hits
        for path in sorted(PIPELINE.rglob("*.py"))
        if path != LAYOUT and (hits := _key_literals(path))
    }
    assert offenders == {}, f"artifact keys built outside pipeline/run/layout.py: {offenders}"
