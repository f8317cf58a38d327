"""Where every artifact lives in the artifact store: the one module that builds keys.

    aois/<aoi>/imagery/<step>/<fingerprint:16>/<shard>.tif          imagery mosaic of a shard
    aois/<aoi>/opendata/<step>/<hash:16>.parquet                     open-data snapshot
    aois/<aoi>/opendata/<step>/<hash:16>.profile.parquet             its per-feature profile
    aois/<aoi>/labels/<open-data hash:16>/<shard>.tif                label mosaic of a shard
    aois/<aoi>/predictions/m<model>/<imagery hash:16>/<shard>.tif    cached prediction
    aois/<aoi>/validation/<step>/<tag>/<suite>.html | index.html     Data Docs pages
    runs/<run>/buildings/<shard>.parquet                             predicted buildings of a shard
    runs/<run>/buildings.parquet                                     ... of the run, merged
    runs/<run>/footprints/<shard>.parquet                            prediction under each footprint
    models/<name>/<sha256:16>.pt                                     model weights
    models/<name>/<sha256:16>.fold<k>.onnx                           its fold k for ONNX Runtime

Keys are relative ``/`` paths (see :func:`pipeline.store.check_key`); hashes are cut to
16 hex characters. Labels depend on the open data only, predictions on the imagery and
the model only, so both are shared by every run that has the same inputs.
"""

from __future__ import annotations


def imagery_folder(aoi: str, step: str, fingerprint: str) -> str:
    """Folder of an imagery snapshot's shard mosaics."""
    return f"aois/{aoi}/imagery/{step}/{fingerprint[:16]}"


def imagery_key(aoi: str, step: str, fingerprint: str, shard_id: str) -> str:
    """One shard's imagery mosaic."""
    return f"{imagery_folder(aoi, step, fingerprint)}/{shard_id}.tif"


def opendata_key(aoi: str, step: str, content_hash: str) -> str:
    """An open-data snapshot (repaired footprints, GeoParquet)."""
    return f"aois/{aoi}/opendata/{step}/{content_hash[:16]}.parquet"


def opendata_profile_key(aoi: str, step: str, content_hash: str) -> str:
    """The per-feature profile of an open-data snapshot as read (the validation input)."""
    return f"aois/{aoi}/opendata/{step}/{content_hash[:16]}.profile.parquet"


def labels_key(aoi: str, opendata_hash: str, shard_id: str) -> str:
    """A shard's label mosaic (rasterized open data)."""
    return f"aois/{aoi}/labels/{opendata_hash[:16]}/{shard_id}.tif"


def predictions_folder(aoi: str, model_version_id: int) -> str:
    """Folder of a model version's cached predictions of an AOI."""
    return f"aois/{aoi}/predictions/m{model_version_id}"


def prediction_key(aoi: str, model_version_id: int, imagery_hash: str, shard_id: str) -> str:
    """A cached shard prediction (uint8 probability mosaic)."""
    return f"{predictions_folder(aoi, model_version_id)}/{imagery_hash[:16]}/{shard_id}.tif"


def validation_folder(aoi: str, step: str, tag: str) -> str:
    """Folder of one validation's Data Docs pages (``tag``: ``run-<id>`` or snapshots)."""
    return f"aois/{aoi}/validation/{step or 'unknown'}/{tag}"


def validation_page_key(aoi: str, step: str, tag: str, suite: str) -> str:
    """The Data Docs page of one suite."""
    return f"{validation_folder(aoi, step, tag)}/{suite}.html"


def validation_index_key(aoi: str, step: str, tag: str) -> str:
    """The index page of one validation's Data Docs pages."""
    return f"{validation_folder(aoi, step, tag)}/index.html"


def shard_buildings_key(run_id: int, shard_id: str) -> str:
    """A shard's vectorized predicted buildings (EPSG:3857 GeoParquet)."""
    return f"runs/{run_id}/buildings/{shard_id}.parquet"


def run_buildings_key(run_id: int) -> str:
    """A run's predicted buildings merged across shard edges (EPSG:3857 GeoParquet)."""
    return f"runs/{run_id}/buildings.parquet"


def shard_footprints_key(run_id: int, shard_id: str) -> str:
    """What a shard's prediction says under each open-data footprint (GeoParquet-free
    Parquet table: ``feature_id``, ``n_px``, ``n_valid``, ``sum_prob``, ``n_pred``)."""
    return f"runs/{run_id}/footprints/{shard_id}.parquet"


def model_weights_key(model_name: str, weights_sha256: str) -> str:
    """A model version's weights file."""
    return f"models/{model_name}/{weights_sha256[:16]}.pt"


def model_onnx_key(model_name: str, weights_sha256: str, fold: int) -> str:
    """A model version's fold model exported for ONNX Runtime (made on first use)."""
    return f"models/{model_name}/{weights_sha256[:16]}.fold{fold}.onnx"
