"""Building segmentation model: build, train, predict, save/load and export.

Pure model code on numpy arrays and files; the model registry (database rows,
artifact store) lives elsewhere and calls these functions.
"""

from __future__ import annotations

from pipeline.model.checkpoint import file_sha256, load_model, save_model
from pipeline.model.dataset import ChipDataset, TrainingSample, to_model_input
from pipeline.model.device import select_device
from pipeline.model.export import export_onnx, export_torchscript
from pipeline.model.losses import LovaszBCELoss
from pipeline.model.net import GeoAuditNet, ModelSpec, build_model
from pipeline.model.predict import predict_batch, predict_mosaic
from pipeline.model.train import TrainConfig, TrainResult, evaluate_iou, train_model

__all__ = [
    "ChipDataset",
    "GeoAuditNet",
    "LovaszBCELoss",
    "ModelSpec",
    "TrainConfig",
    "TrainResult",
    "TrainingSample",
    "build_model",
    "evaluate_iou",
    "export_onnx",
    "export_torchscript",
    "file_sha256",
    "load_model",
    "predict_batch",
    "predict_mosaic",
    "save_model",
    "select_device",
    "to_model_input",
    "train_model",
]
