"""Artifact store: keys cannot escape the root; writes are atomic."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import StoreError
from pipeline.store import ArtifactStore


def test_round_trip_local(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "root")
    uri = store.write_bytes("aois/a/x.bin", b"hello")
    assert Path(uri).read_bytes() == b"hello"
    assert store.exists("aois/a/x.bin")
    assert store.read_bytes("aois/a/x.bin") == b"hello"


def test_round_trip_memory_fs() -> None:
    store = ArtifactStore("memory://geoaudit-test")
    store.write_bytes("a/b.txt", b"remote")
    assert store.read_bytes("a/b.txt") == b"remote"
    with store.readable_path("a/b.txt") as path:
        assert path.read_bytes() == b"remote"


@pytest.mark.parametrize(
    "key", ["../escape", "/abs/path", "a/../../b", "a//b", "", "a/.hidden/../x"]
)
def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(StoreError, match="not a safe relative path"):
        store.write_bytes(key, b"x")


def test_failed_write_leaves_nothing_visible(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    store.write_bytes("k/v.bin", b"old")
    with pytest.raises(RuntimeError), store.writable_path("k/v.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash while writing")
    assert store.read_bytes("k/v.bin") == b"old"
    assert [p.name for p in (tmp_path / "k").iterdir()] == ["v.bin"]


def test_unwritable_root_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the root folder should go")
    with pytest.raises(StoreError, match="cannot be created"):
        ArtifactStore(blocker / "artifacts")


def test_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    (tmp_path / "taken").write_text("a file where a folder should go")
    with pytest.raises(StoreError, match="not writable"):
        store.write_bytes("taken/y.bin", b"x")


def test_missing_artifact_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="'nope.bin' not found"):
        ArtifactStore(tmp_path).read_bytes("nope.bin")
