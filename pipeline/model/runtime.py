"""Where a model version's networks run when the audit predicts: PyTorch, or ONNX
Runtime on the CPU.

``GEOAUDIT_RUNTIME``: ``auto`` (the default) and ``torch`` run PyTorch; ``onnx`` runs
the same networks exported (:func:`pipeline.model.export.export_onnx`, once per fold
model; the caller caches the files) in ONNX Runtime on the CPU, called like the torch
module by the prediction code (:class:`OnnxNet`): float ``(N, C, H, W)`` 0..255 in,
logits out, equal to PyTorch's up to float rounding (a test holds them within 1e-4).
``auto`` is PyTorch because it measured faster: on 2 cores, the 1 km demo's 3-fold
model through the audit path ran 75.7 tiles/s in PyTorch and 68.2 in ONNX Runtime
(``bench/predict_path.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pipeline.errors import ModelError
from pipeline.model.device import is_cuda

Runtime = Literal["torch", "onnx"]
RUNTIMES = ("auto", "torch", "onnx")


def choose_runtime(preference: str, device: torch.device) -> Runtime:
    """The runtime for ``preference`` on ``device``: ``auto`` is PyTorch (the faster one
    measured, see above); ``onnx`` on a CUDA device is refused."""
    if preference not in RUNTIMES:
        raise ModelError(f"runtime {preference!r} is not one of {', '.join(RUNTIMES)}")
    if preference == "onnx" and is_cuda(device):
        raise ModelError("runtime 'onnx' runs on the CPU only: use 'torch' or 'auto' on CUDA")
    return "torch" if preference == "auto" else preference  # type: ignore[return-value]


class OnnxNet:
    """An exported network in an ONNX Runtime session, called as its torch module is by
    the prediction code: a float tensor ``(N, C, H, W)`` in, a logits tensor out. It only
    predicts: ``eval``/``train``/``to`` change nothing."""

    training = False

    def __init__(self, path: Path, *, output_stride: int, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{path}: ONNX Runtime cannot load the network ({exc})") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.output_stride = output_stride

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        image = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        (logits,) = self.session.run(None, {self.input_name: image})
        return torch.from_numpy(logits)

    def eval(self) -> OnnxNet:
        return self

    def train(self, mode: bool = True) -> OnnxNet:
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxNet:
        return self
