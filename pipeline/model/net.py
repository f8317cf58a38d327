"""The segmentation network: a segmentation-models-pytorch model behind one input contract.

Every GeoAudit model takes a float32 tensor ``(N, C, H, W)`` of raw imagery values
(uint8 range 0..255) and returns building logits ``(N, 1, H, W)``; the per-channel
normalisation ``(x - mean) / std`` lives inside the module, so training, sliding-window
prediction, ONNX and TorchScript exports all normalise identically. ``H`` and ``W`` must
be multiples of ``2 ** encoder_depth`` (:attr:`GeoAuditNet.output_stride`).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.model.pretrained import to_encoder_names

log = logging.getLogger(__name__)

Arch = Literal["unet", "unetplusplus", "fpn"]
ARCHS: tuple[str, ...] = ("unet", "unetplusplus", "fpn")

#: ImageNet statistics in 0..255 units (also fine for random init: roughly centres RGB).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclass(frozen=True)
class ModelSpec:
    """What network to build; stored with every model file.

    Defaults are the CPU-fast choice measured in ``bench/model_speed.py``: a U-Net on a
    timm MobileNetV3-small encoder cut at depth 4 (output stride 16) with a slim decoder.
    ``decoder_channels`` has one entry per encoder stage for ``unet``/``unetplusplus``;
    ``fpn`` uses its first entry as pyramid and its last as segmentation channels.
    """

    arch: Arch = "unet"
    encoder: str = "tu-mobilenetv3_small_100"
    encoder_depth: int = 4
    decoder_channels: tuple[int, ...] = (32, 16, 8, 8)
    in_channels: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder_channels", tuple(int(c) for c in self.decoder_channels))
        if self.arch not in ARCHS:
            raise ModelError(f"ModelSpec.arch {self.arch!r}: must be one of {ARCHS}")
        if not _encoder_known(self.encoder):
            raise ModelError(
                f"ModelSpec.encoder {self.encoder!r}: not a segmentation-models-pytorch encoder "
                "(see smp.encoders.get_encoder_names()) nor 'tu-<timm model name>'"
            )
        low = 3 if self.arch == "fpn" else 1
        if not low <= self.encoder_depth <= 5:
            raise ModelError(
                f"ModelSpec.encoder_depth {self.encoder_depth}: must be in {low}..5 for {self.arch}"
            )
        fpn = self.arch == "fpn"
        if (
            not self.decoder_channels
            or min(self.decoder_channels) < 1
            or (not fpn and len(self.decoder_channels) != self.encoder_depth)
        ):
            need = "1 or more" if fpn else str(self.encoder_depth)
            what = "first = pyramid, last = segmentation" if fpn else "one per encoder stage"
            raise ModelError(
                f"ModelSpec.decoder_channels {self.decoder_channels}: need {need} positive "
                f"values ({what}) for {self.arch} with encoder_depth {self.encoder_depth}"
            )
        if fpn and self.decoder_channels[-1] % 32:
            raise ModelError(
                f"ModelSpec.decoder_channels {self.decoder_channels}: fpn segmentation channels "
                "(the last value) must be a multiple of 32 (GroupNorm with 32 groups)"
            )
        if self.in_channels < 1:
            raise ModelError(f"ModelSpec.in_channels {self.in_channels}: must be >= 1")

    @property
    def output_stride(self) -> int:
        """Input sides must be multiples of this: ``2 ** encoder_depth``."""
        return 2**self.encoder_depth

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        d = asdict(self)
        d["decoder_channels"] = list(self.decoder_channels)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ModelError`."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ModelError(f"ModelSpec: unknown field(s) {sorted(unknown)}")
        return cls(**data)


def _encoder_known(name: str) -> bool:
    if name.startswith("tu-"):
        return timm.is_model(name[3:].split(".")[0])
    return name in smp.encoders.encoders


def input_statistics(spec: ModelSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` in 0..255 units that the network normalises by: those
    its encoder's pretrained weights were trained with (timm's ``pretrained_cfg`` for a
    ``tu-`` encoder, ImageNet's otherwise); a neutral centring for other band counts."""
    c = spec.in_channels
    if c != 3:
        return (127.5,) * c, (64.0,) * c
    if spec.encoder.startswith("tu-"):
        cfg = timm.get_pretrained_cfg(spec.encoder[3:].split(".")[0])
        if cfg is not None and len(cfg.mean) == 3 and len(cfg.std) == 3:
            return tuple(m * 255 for m in cfg.mean), tuple(s * 255 for s in cfg.std)
    return IMAGENET_MEAN, IMAGENET_STD


class GeoAuditNet(nn.Module):
    """Normalisation + an smp segmentation model; raw 0..255 imagery in, logits out."""

    def __init__(self, spec: ModelSpec, net: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.output_stride = spec.output_stride
        self.net = net
        c = spec.in_channels
        mean, std = input_statistics(spec)
        self.register_buffer("mean", torch.tensor(mean).view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, c, 1, 1), persistent=False)

    @property
    def encoder(self) -> nn.Module:
        """The smp encoder (where pretrained encoder weights go)."""
        return self.net.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` float imagery in 0..255 -> ``(N, 1, H, W)`` logits."""
        return self.net((x - self.mean) / self.std)


def build_model(
    spec: ModelSpec, *, encoder_weights: Path | None = None, allow_hub: bool = False
) -> GeoAuditNet:
    """Build the network for ``spec``.

    Encoder weights come from ``encoder_weights`` (a local state dict for the encoder,
    ``.pt``/``.pth`` or ``.safetensors``; :class:`ModelError` if it does not fit), else
    from the smp/timm hub when ``allow_hub`` (ImageNet; a network failure logs a warning
    and falls back to random init), else random init.
    """
    if encoder_weights is not None:
        model = _create(spec, hub=False)
        _load_encoder_weights(model, spec, Path(encoder_weights))
        return model
    if allow_hub:
        try:
            with _offline_unless_reachable():
                model = _create(spec, hub=True)
            log.info("encoder %s: ImageNet weights loaded from the hub", spec.encoder)
            return model
        except OSError as exc:  # huggingface_hub / httpx network errors are OSErrors
            log.warning(
                "encoder %s: pretrained weights unavailable (%s: %s); using random init",
                spec.encoder,
                type(exc).__name__,
                exc,
            )
    return _create(spec, hub=False)


@contextmanager
def _offline_unless_reachable(timeout: float = 3.0) -> Iterator[None]:
    """Put huggingface_hub in offline (cache-only) mode while its endpoint is unreachable,
    instead of letting it retry for ~45 s; a configured proxy is trusted as is."""
    from huggingface_hub import constants

    proxied = any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY"))
    if constants.HF_HUB_OFFLINE or proxied:
        yield
        return
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        yield
        return
    except OSError as exc:
        log.info("%s unreachable (%s); using the local hub cache only", constants.ENDPOINT, exc)
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


def _create(spec: ModelSpec, *, hub: bool) -> GeoAuditNet:
    weights: str | bool | None = None
    if hub:
        weights = True if spec.encoder.startswith("tu-") else "imagenet"
    kwargs: dict[str, Any] = {"encoder_depth": spec.encoder_depth}
    if spec.arch == "fpn":
        kwargs["decoder_pyramid_channels"] = spec.decoder_channels[0]
        kwargs["decoder_segmentation_channels"] = spec.decoder_channels[-1]
        # smp's FPN head works at the stride of the 4th-deepest feature: 2 ** (depth - 3)
        kwargs["upsampling"] = 2 ** (spec.encoder_depth - 3)
    else:
        kwargs["decoder_channels"] = spec.decoder_channels
    try:
        net = smp.create_model(
            spec.arch,
            encoder_name=spec.encoder,
            encoder_weights=weights,
            in_channels=spec.in_channels,
            classes=1,
            **kwargs,
        )
    except (KeyError, ValueError) as exc:  # e.g. no ImageNet weights for this encoder
        raise ModelError(f"ModelSpec {spec}: smp cannot build it ({exc})") from exc
    return GeoAuditNet(spec, net)


def _load_encoder_weights(model: GeoAuditNet, spec: ModelSpec, path: Path) -> None:
    """Load an encoder state dict, accepting the usual key prefixes.

    Keys may be bare (torchvision/timm checkpoint), or carry ``encoder.`` / ``net.encoder.``;
    a timm checkpoint for a ``tu-`` encoder gets ``model.`` added; an EfficientNet-PyTorch
    checkpoint of a packaged encoder is renamed first (:mod:`pipeline.model.pretrained`).
    Every encoder key must be present with the right shape; extra keys (classifier heads,
    later stages) are ignored.
    """
    if not path.is_file():
        raise ModelError(f"{path}: encoder weights file does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is reported the same way
        raise ModelError(f"{path}: not a readable encoder state dict ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelError(f"{path}: not an encoder state dict (expected a dict name -> tensor)")
    state = to_encoder_names(state, spec.encoder, path)

    target = model.encoder.state_dict()
    best: dict[str, torch.Tensor] = {}
    for prefix_strip in ("", "net.encoder.", "encoder.", "module."):
        for prefix_add in ("", "model."):
            cand = {
                prefix_add + k[len(prefix_strip) :]: v
                for k, v in state.items()
                if k.startswith(prefix_strip)
            }
            cand = {k: v for k, v in cand.items() if k in target}
            if len(cand) > len(best):
                best = cand
    missing = [k for k in target if k not in best]
    if not best or missing:
        raise ModelError(
            f"{path}: encoder weights do not fit encoder {spec.encoder!r} "
            f"(depth {spec.encoder_depth}): {len(missing)} of {len(target)} encoder tensors "
            f"missing, e.g. {missing[:3]}"
        )
    wrong = [
        f"{k} {tuple(best[k].shape)} != {tuple(v.shape)}"
        for k, v in target.items()
        if best[k].shape != v.shape
    ]
    if wrong:
        raise ModelError(
            f"{path}: encoder weights do not fit encoder {spec.encoder!r} "
            f"(in_channels {spec.in_channels}): shape mismatch {wrong[:3]}"
        )
    log.info(
        "%s: %d encoder tensors loaded, %d other keys ignored",
        path,
        len(best),
        len(state) - len(best),
    )
    model.encoder.load_state_dict(best, strict=True)
