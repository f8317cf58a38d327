"""Artifact store: shard mosaics, snapshots, model weights and reports.

The root is a local directory by default and any fsspec URL (``s3://``,
``gs://``, ``memory://``, MinIO through s3) in production. Keys are relative,
``/``-separated paths; a key can never escape the root.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import fsspec

from pipeline.errors import StoreError

_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*$")


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative path, else raise :class:`StoreError`."""
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or any(not _KEY_PART.match(p) or p in {".", ".."} for p in parts)
    ):
        raise StoreError(
            f"artifact key {key!r} is not a safe relative path "
            "(letters, digits, '._=-' per part, no '..', no leading '/')"
        )
    return key


class ArtifactStore:
    """Read and write artifacts below one root (local path or fsspec URL)."""

    def __init__(self, root: str | Path) -> None:
        root = str(root)
        self.fs, self.root = fsspec.core.url_to_fs(root)
        self.is_local = (
            self.fs.protocol in ("file", ("file", "local")) or "file" in self.fs.protocol
        )
        self.url = root
        try:
            self.fs.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"artifact root {root!r} cannot be created: {exc}") from exc

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    def path(self, key: str) -> str:
        """Full path (or URL path) of a key inside the root."""
        return posixpath.join(self.root, check_key(key))

    def uri(self, key: str) -> str:
        """A URI that names the artifact for humans and the database."""
        full = self.path(key)
        return full if self.is_local else f"{self._protocol()}://{full}"

    def _protocol(self) -> str:
        proto = self.fs.protocol
        return proto[0] if isinstance(proto, tuple) else proto

    def exists(self, key: str) -> bool:
        """Whether an artifact exists."""
        return bool(self.fs.exists(self.path(key)))

    def read_bytes(self, key: str) -> bytes:
        """Bytes of an artifact; :class:`StoreError` naming the key when absent."""
        try:
            return self.fs.cat_file(self.path(key))
        except FileNotFoundError as exc:
            raise StoreError(f"artifact {key!r} not found under {self.url}") from exc

    def write_bytes(self, key: str, data: bytes) -> str:
        """Write atomically (temp file + rename on local roots); return the URI."""
        with self.writable_path(key) as tmp:
            Path(tmp).write_bytes(data)
        return self.uri(key)

    @contextlib.contextmanager
    def writable_path(self, key: str, suffix: str = "") -> Iterator[Path]:
        """Yield a local temporary path; on success it becomes the artifact ``key``.

        Nothing is visible under ``key`` until the block succeeds, so a crash or an
        error never leaves a half-written artifact.
        """
        target = self.path(key)
        if self.is_local:
            parent = Path(target).parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
                fd, tmp_name = tempfile.mkstemp(
                    dir=parent, prefix=".tmp-", suffix=suffix or Path(target).suffix
                )
            except OSError as exc:
                raise StoreError(f"artifact store {self.url} is not writable: {exc}") from exc
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                yield tmp
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            with tempfile.TemporaryDirectory(prefix="geoaudit-") as tmpdir:
                tmp = Path(tmpdir) / Path(target).name
                yield tmp
                try:
                    self.fs.put_file(str(tmp), target)
                except OSError as exc:
                    raise StoreError(f"cannot upload {key!r} to {self.url}: {exc}") from exc

    @contextlib.contextmanager
    def readable_path(self, key: str) -> Iterator[Path]:
        """Yield a local path with the artifact's content (downloaded if remote)."""
        target = self.path(key)
        if self.is_local:
            if not Path(target).exists():
                raise StoreError(f"artifact {key!r} not found under {self.url}")
            yield Path(target)
            return
        with tempfile.TemporaryDirectory(prefix="geoaudit-") as tmpdir:
            tmp = Path(tmpdir) / Path(target).name
            try:
                self.fs.get_file(target, str(tmp))
            except FileNotFoundError as exc:
                raise StoreError(f"artifact {key!r} not found under {self.url}") from exc
            yield tmp

    def put_file(self, local: Path, key: str) -> str:
        """Copy a local file into the store atomically; return the URI."""
        with self.writable_path(key) as tmp:
            shutil.copyfile(local, tmp)
        return self.uri(key)

    def delete(self, key: str) -> None:
        """Remove one artifact (nothing to do when it is absent)."""
        path = self.path(key)
        if self.fs.exists(path):
            self.fs.rm(path)

    def sha256(self, key: str) -> str:
        """SHA-256 of an artifact's bytes (to check it is what was written)."""
        with self.readable_path(key) as path:
            return file_sha256(path)

    def delete_prefix(self, prefix: str) -> None:
        """Remove every artifact below ``prefix`` (used when a shard is re-run)."""
        path = self.path(prefix)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a local file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
