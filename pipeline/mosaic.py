"""Shard mosaics on disk: tiled, ZSTD-compressed GeoTIFFs in EPSG:3857 that QGIS opens.

Three kinds, one file per shard and kind:

* ``image``: 3 bands uint8 (RGB) + internal mask for the valid-data mask;
* ``label``: 1 band uint8, open-data labels in {0, 1};
* ``prob``: 1 band uint8, building probability ``round(p * 255)``.

Writes are atomic: the GeoTIFF is written to a temporary file in the target's folder
and moved over the target with ``os.replace``, so a crash never leaves a half-written
mosaic visible under the final name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioError
from rasterio.io import MemoryFile

from pipeline.errors import StoreError
from pipeline.tiles import Shard, shard_transform

log = logging.getLogger(__name__)

MosaicKind = Literal["image", "label", "prob"]
CRS_3857 = "EPSG:3857"
BLOCK = 256
KIND_TAG = "GEOAUDIT_KIND"
SHARD_TAG = "GEOAUDIT_SHARD"
_DESCRIPTIONS = {
    "image": ("red", "green", "blue"),
    "label": ("open-data label (0/1)",),
    "prob": ("building probability x255",),
}


class MosaicData(NamedTuple):
    """A mosaic read back: ``array`` as stored, ``valid`` mask or None when the file has none.

    ``array`` is (3, H, W) uint8 for images and (H, W) uint8 for labels and probabilities.
    """

    array: np.ndarray
    valid: np.ndarray | None


def encode_prob(prob: np.ndarray) -> np.ndarray:
    """Probability in [0, 1] (float) to uint8: ``round(clip(p, 0, 1) * 255)``."""
    return np.rint(np.clip(np.nan_to_num(prob, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)


def decode_prob(stored: np.ndarray) -> np.ndarray:
    """uint8 0..255 back to float32 probability ``v / 255``."""
    return stored.astype(np.float32) / np.float32(255.0)


def _as_bands(array: np.ndarray, shard: Shard, kind: MosaicKind) -> np.ndarray:
    """Validate shape/dtype and return a (bands, H, W) uint8 array."""
    size = shard.size
    if kind == "image":
        if array.shape != (3, size, size) or array.dtype != np.uint8:
            raise ValueError(
                f"image mosaic of shard {shard.id} must be (3, {size}, {size}) uint8, "
                f"got {array.shape} {array.dtype}"
            )
        return array
    band = array[0] if array.ndim == 3 and array.shape[0] == 1 else array
    if band.shape != (size, size):
        raise ValueError(
            f"{kind} mosaic of shard {shard.id} must be ({size}, {size}), got {array.shape}"
        )
    if kind == "prob" and np.issubdtype(band.dtype, np.floating):
        band = encode_prob(band)
    elif band.dtype == np.bool_:
        band = band.astype(np.uint8)
    elif band.dtype != np.uint8:
        raise ValueError(f"{kind} mosaic of shard {shard.id} must be uint8, got {band.dtype}")
    return band[None]


def _profile(shard: Shard, count: int, nodata: float | None) -> dict:
    profile = {
        "driver": "GTiff",
        "width": shard.size,
        "height": shard.size,
        "count": count,
        "dtype": "uint8",
        "crs": CRS_3857,
        "transform": shard_transform(shard),
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "zstd",  # as small as deflate here, 3x faster to write
        "zstd_level": 1,
        "predictor": 2,
        "interleave": "pixel",
        "nodata": nodata,
        "bigtiff": "IF_SAFER",
    }
    if count == 3:
        profile["photometric"] = "RGB"
    return profile


def _write(
    dst: rasterio.io.DatasetWriter,
    bands: np.ndarray,
    valid: np.ndarray | None,
    shard: Shard,
    kind: MosaicKind,
) -> None:
    dst.write(bands)
    if kind == "image":
        dst.colorinterp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
    for i, text in enumerate(_DESCRIPTIONS[kind], start=1):
        dst.set_band_description(i, text)
    dst.update_tags(**{KIND_TAG: kind, SHARD_TAG: shard.id, "WORK_ZOOM": str(shard.work_zoom)})
    if valid is not None:
        dst.write_mask(np.where(valid, 255, 0).astype(np.uint8))


def write_mosaic(
    path_or_file: str | os.PathLike[str] | BinaryIO,
    array: np.ndarray,
    shard: Shard,
    *,
    kind: MosaicKind,
    valid: np.ndarray | None = None,
    nodata: float | None = None,
) -> None:
    """Write a shard mosaic GeoTIFF (EPSG:3857, ``shard_transform(shard)``, 256 px ZSTD tiles).

    ``array``: image (3, H, W) uint8; label (H, W) uint8/bool; prob (H, W) float in [0, 1]
    (stored ``round(p * 255)``) or uint8 already encoded. ``valid`` (H, W) bool becomes an
    internal mask (any kind). A path is written atomically (temp file + ``os.replace``;
    missing parent folders are created); a binary file object receives the GeoTIFF bytes.
    """
    bands = _as_bands(np.asarray(array), shard, kind)
    if valid is not None and np.shape(valid) != (shard.size, shard.size):
        raise ValueError(
            f"valid mask of shard {shard.id} must be ({shard.size}, {shard.size}), "
            f"got {np.shape(valid)}"
        )
    profile = _profile(shard, bands.shape[0], nodata)
    env = rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True)
    if hasattr(path_or_file, "write"):
        try:
            with env, MemoryFile() as mem:
                with mem.open(**profile) as dst:
                    _write(dst, bands, valid, shard, kind)
                path_or_file.write(mem.read())  # type: ignore[union-attr]
        except RasterioError as exc:
            raise StoreError(f"cannot write {kind} mosaic of shard {shard.id}: {exc}") from exc
        return

    target = Path(os.fspath(path_or_file))  # type: ignore[arg-type]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise StoreError(
            f"{target}: cannot write {kind} mosaic of shard {shard.id}: {exc}"
        ) from exc
    tmp = Path(tmp_name)
    try:
        with env, rasterio.open(tmp, "w", **profile) as dst:
            _write(dst, bands, valid, shard, kind)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; mosaics are shared artifacts
        os.replace(tmp, target)
    except (RasterioError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(
            f"{target}: cannot write {kind} mosaic of shard {shard.id}: {exc}"
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.debug("wrote %s mosaic %s", kind, target)


def read_mosaic(path_or_file: str | os.PathLike[str] | BinaryIO) -> MosaicData:
    """Read a mosaic written by :func:`write_mosaic` (or any 1/3-band GeoTIFF).

    ``valid`` comes from the internal mask, an alpha band or the nodata value, and is None
    when the file declares none of them.
    """
    name = getattr(path_or_file, "name", path_or_file)
    try:
        with rasterio.open(path_or_file) as src:
            alpha = [i for i, c in enumerate(src.colorinterp, start=1) if c == ColorInterp.alpha]
            indexes = [i for i in src.indexes if i not in alpha]
            data = src.read(indexes)
            has_mask = any(
                flag
                in (
                    rasterio.enums.MaskFlags.per_dataset,
                    rasterio.enums.MaskFlags.alpha,
                    rasterio.enums.MaskFlags.nodata,
                )
                for flags in src.mask_flag_enums
                for flag in flags
            )
            valid = src.dataset_mask() > 0 if has_mask else None
    except RasterioError as exc:
        raise StoreError(f"{name}: cannot read mosaic ({exc})") from exc
    array = data[0] if data.shape[0] == 1 else data
    return MosaicData(array, valid)


def array_hash(array: np.ndarray, valid: np.ndarray | None = None) -> str:
    """sha256 of ``dtype|shape|`` + the C-order bytes (+ the valid mask's), as hex.

    Used as the shard imagery content hash: equal arrays give equal hashes.
    """
    digest = hashlib.sha256()
    arr = np.ascontiguousarray(array)
    digest.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    digest.update(arr.tobytes())
    if valid is not None:
        mask = np.ascontiguousarray(valid, dtype=np.bool_)
        digest.update(f"|valid{mask.shape}|".encode())
        digest.update(mask.tobytes())
    return digest.hexdigest()


__all__ = [
    "MosaicData",
    "MosaicKind",
    "array_hash",
    "decode_prob",
    "encode_prob",
    "read_mosaic",
    "write_mosaic",
]
