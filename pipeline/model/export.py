"""Export a model for serving elsewhere: ONNX (onnxruntime, TensorRT ...) and TorchScript.

Exported graphs keep the GeoAudit input contract: input ``image`` float32
``(N, C, H, W)`` with raw 0..255 values (normalisation is inside the graph), ``H`` and
``W`` multiples of ``2 ** encoder_depth``; output ``logits`` ``(N, 1, H, W)``
(probability = sigmoid(logits)). A version trained in k spatial folds exports as one
network: the mean of its fold models' logits (:func:`servable`), since new imagery was
held out by none of them.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.model.net import ModelSpec

log = logging.getLogger(__name__)

_EXAMPLE_SIDE = 256


class FoldEnsemble(nn.Module):
    """A model version's fold models as one network: the mean of their logits."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        self.folds = nn.ModuleList(models)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.stack([model(image) for model in self.folds]).mean(dim=0)


def servable(models: Sequence[nn.Module]) -> nn.Module:
    """The network to serve for a version's fold models: the model itself when there is
    one, else their :class:`FoldEnsemble`."""
    if not models:
        raise ModelError("a model version without models cannot be exported")
    return models[0] if len(models) == 1 else FoldEnsemble(models)


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).float().eval()


def export_onnx(model: nn.Module, spec: ModelSpec, path: Path, *, opset: int = 17) -> Path:
    """Write ``model`` as ONNX to ``path`` with dynamic batch, height and width; the spec
    is stored as JSON in the model's metadata (``geoaudit_spec``). Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = _cpu_eval_copy(model)
    example = torch.zeros(1, spec.in_channels, _EXAMPLE_SIDE, _EXAMPLE_SIDE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer / deprecation chatter
            torch.onnx.export(
                net,
                (example,),
                str(path),
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={
                    "image": {0: "batch", 2: "height", 3: "width"},
                    "logits": {0: "batch", 2: "height", 3: "width"},
                },
                opset_version=opset,
                dynamo=False,  # the TorchScript-based exporter needs no onnxscript
                do_constant_folding=True,
            )
    except Exception as exc:  # exporter errors come in many types; name the model
        raise ModelError(f"{path}: ONNX export of {spec} failed ({exc})") from exc
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    for key, value in (
        ("geoaudit_spec", json.dumps(spec.to_dict())),
        (
            "geoaudit_input",
            "float32 NCHW raw 0..255, H and W multiples of "
            f"{spec.output_stride}; output logits N1HW",
        ),
    ):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    log.info("exported ONNX model %s (opset %d)", path, opset)
    return path


def export_torchscript(model: nn.Module, spec: ModelSpec, path: Path) -> Path:
    """Write a traced TorchScript module to ``path`` (``torch.jit.load`` to use it; any
    batch size and H, W multiples of the output stride). Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = _cpu_eval_copy(model)
    example = torch.zeros(1, spec.in_channels, _EXAMPLE_SIDE, _EXAMPLE_SIDE)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(net, example, check_trace=False)
            traced = torch.jit.freeze(traced)
        traced.save(str(path), _extra_files={"geoaudit_spec.json": json.dumps(spec.to_dict())})
    except Exception as exc:
        raise ModelError(f"{path}: TorchScript export of {spec} failed ({exc})") from exc
    log.info("exported TorchScript model %s", path)
    return path
