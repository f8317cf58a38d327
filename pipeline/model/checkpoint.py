"""GeoAudit model files: weights + spec + metadata in one torch file, loaded safely.

A model file is a ``torch.save`` of ``{"format": "geoaudit-model", "format_version": 1,
"spec": ModelSpec.to_dict(), "state_dict": {...}, "meta": {...}, "versions": {...}}``
holding only tensors and plain JSON-like values, so it loads with
``torch.load(weights_only=True)`` (no pickled code is ever executed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.model.folds import FoldPlan, FoldSet
from pipeline.model.net import GeoAuditNet, ModelSpec, build_model

log = logging.getLogger(__name__)

FORMAT = "geoaudit-model"
FORMAT_VERSION = 2  # 2: optional "folds" (a fold set: its plan and every fold's weights)
_KEYS = ("format", "format_version", "spec", "state_dict", "meta")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(model: nn.Module | FoldSet, spec: ModelSpec, path: Path, *, meta: dict) -> str:
    """Write ``model`` (weights on CPU), ``spec`` and JSON-able ``meta`` to ``path``
    atomically (temp file + rename); return the file's sha256. A :class:`FoldSet` keeps
    its plan and every fold's weights; its first fold is also the file's plain model."""
    path = Path(path)
    try:
        meta_plain = json.loads(json.dumps(meta))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: model meta must be JSON-serialisable ({exc})") from exc
    folds = model if isinstance(model, FoldSet) else None
    first = folds.models[0] if folds is not None else model
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "state_dict": _cpu_state(first),
        "meta": meta_plain,
        "versions": {"torch": str(torch.__version__), "smp": str(smp.__version__)},
    }
    if folds is not None and folds.k > 1:
        payload["folds"] = {
            "plan": folds.plan.to_dict(),
            "state_dicts": [_cpu_state(m) for m in folds.models],
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    digest = file_sha256(path)
    log.info("saved model %s (%s) sha256 %s", path, spec.encoder, digest[:12])
    return digest


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def load_model(path: Path, *, device: torch.device) -> tuple[GeoAuditNet, ModelSpec, dict]:
    """Load a file written by :func:`save_model`: ``(model in eval mode on device, spec, meta)``
    (a fold set's first fold).

    Raises :class:`ModelError` for a missing file and for anything that is not a GeoAudit
    model file (random bytes, text, other torch files, weights that do not fit the spec).
    """
    payload, spec = _read(Path(path))
    model = _built(path, spec, payload["state_dict"], device)
    return model, spec, dict(payload["meta"])


def load_fold_set(path: Path, *, device: torch.device) -> tuple[FoldSet, ModelSpec, dict]:
    """Load a model file as a :class:`FoldSet` (a plain model as a one-fold set)."""
    payload, spec = _read(Path(path))
    folds = payload.get("folds")
    if not folds:
        model = _built(path, spec, payload["state_dict"], device)
        return FoldSet.single(model), spec, dict(payload["meta"])
    plan = FoldPlan.from_dict(folds["plan"])
    models = [_built(path, spec, state, device) for state in folds["state_dicts"]]
    return FoldSet(models, plan), spec, dict(payload["meta"])


def _built(path: Path, spec: ModelSpec, state: dict, device: torch.device) -> GeoAuditNet:
    model = build_model(spec)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not fit the stored spec {spec} ({exc})") from exc
    model.to(device).eval()
    return model


def _read(path: Path) -> tuple[dict, ModelSpec]:
    """The checked payload of a model file and its spec."""
    if not path.is_file():
        raise ModelError(f"{path}: model file does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign bytes; all mean the same
        raise ModelError(
            f"{path}: not a GeoAudit model file (unreadable by torch.load: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(
            f"{path}: not a GeoAudit model file (no format={FORMAT!r} marker; "
            "write model files with pipeline.model.save_model)"
        )
    missing = [k for k in _KEYS if k not in payload]
    if missing:
        raise ModelError(f"{path}: not a GeoAudit model file (missing keys {missing})")
    if payload["format_version"] > FORMAT_VERSION:
        raise ModelError(
            f"{path}: model file format {payload['format_version']} is newer than this "
            f"GeoAudit ({FORMAT_VERSION}); upgrade GeoAudit"
        )
    try:
        spec = ModelSpec.from_dict(dict(payload["spec"]))
    except (ModelError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: GeoAudit model file with an unusable spec ({exc})") from exc
    return payload, spec
