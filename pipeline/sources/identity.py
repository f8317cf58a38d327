"""What a file source is, without opening it: the files behind a GeoTIFF or a vector
file on this machine, and the fingerprint they give.

The ``geotiff`` and ``vector`` sources use these for their own fingerprints; an
unchanged re-audit (:mod:`pipeline.run.uptodate`) uses them to tell that nothing
changed without importing rasterio, rio-tiler or geopandas. Every other kind (a URL, a
VRT, a GDAL virtual path, a service, a database) needs its source opened:
:func:`local_file_fingerprint` answers None for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.sources.base import FILE_KINDS, is_remote, resolve_path, sha256_files
from pipeline.sources.env import resolve_env

#: files GDAL reads beside a raster (overviews, masks)
RASTER_SIDECARS = (".ovr", ".msk")
#: the parts of a Shapefile whose bytes define it
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx")
_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def raster_files(main: Path) -> list[Path]:
    """A local raster and the sidecars GDAL reads with it."""
    return [main] + [p for p in (Path(f"{main}{ext}") for ext in RASTER_SIDECARS) if p.exists()]


def vector_files(path: Path) -> list[Path]:
    """The files whose bytes define a local vector dataset (Shapefile parts, a folder's
    files, else the file)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if path.suffix.lower() == ".shp":
        return [p for p in (path.with_suffix(s) for s in SHAPEFILE_PARTS) if p.exists()]
    return [path]


def is_tiff(path: Path) -> bool:
    """Whether ``path`` starts as a TIFF or BigTIFF file does."""
    with open(path, "rb") as f:
        return f.read(4) in _TIFF_MAGIC


def reads_local_files(spec: Any) -> bool:
    """Whether the source of ``spec`` is files on this machine (a ``geotiff`` or
    ``vector`` kind whose path is no URL or GDAL virtual path)."""
    return spec.kind in FILE_KINDS and not is_remote(str(resolve_env(spec).path))


def local_file_fingerprint(spec: Any, *, step: str | None, base_dir: Path | None) -> str | None:
    """The fingerprint the source of ``spec`` at ``step`` gives, from its local files
    alone: the sha256 of a TIFF and its sidecars, or of a vector file's parts. None
    when only the opened source can tell (another kind, a URL or virtual path, a VRT,
    a file that is missing)."""
    if not reads_local_files(spec):
        return None
    path = Path(resolve_path(str(resolve_env(spec).path), step=step, base_dir=base_dir))
    if not path.exists():
        return None
    if spec.kind == "geotiff":
        if not path.is_file() or not is_tiff(path):
            return None
        return sha256_files(raster_files(path))
    return sha256_files(vector_files(path))
