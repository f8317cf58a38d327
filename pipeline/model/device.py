"""Pick the torch device a model runs on."""

from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch

from pipeline.errors import ModelError

log = logging.getLogger(__name__)

DevicePreference = Literal["auto", "cpu", "cuda"]


def select_device(preference: DevicePreference | str = "auto") -> torch.device:
    """Return the device for ``preference``.

    ``"auto"`` is CUDA when a GPU is usable, else CPU; ``"cpu"`` is always CPU;
    ``"cuda"`` (or ``"cuda:N"``) raises :class:`ModelError` when CUDA is absent.
    """
    pref = str(preference).strip().lower()
    if pref == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif pref == "cpu":
        device = torch.device("cpu")
    elif pref == "cuda" or pref.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ModelError(
                f"device {preference!r}: CUDA is not available on this machine "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
                "use 'auto' or 'cpu'"
            )
        device = torch.device(pref)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelError(
                f"device {preference!r}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    else:
        raise ModelError(f"device {preference!r}: must be 'auto', 'cpu' or 'cuda'")
    log.debug("selected device %s for preference %r", device, preference)
    return device


def is_cuda(device: torch.device | str) -> bool:
    """True when ``device`` is a CUDA device (bf16 autocast applies only there)."""
    return torch.device(device).type == "cuda"


def autocast(device: torch.device | str, enabled: bool = True) -> AbstractContextManager[Any]:
    """bf16 autocast on a CUDA device that supports it, otherwise a no-op (plain fp32)."""
    if enabled and is_cuda(device) and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def memory_format(device: torch.device | str) -> torch.memory_format:
    """``channels_last`` (NHWC) everywhere: faster tensor-core convolutions on CUDA, and on
    CPU the oneDNN NHWC kernels measured ~1.2x faster training and ~2x faster inference
    for the default spec on 2 cores (``bench/model_speed.py``); values are unchanged."""
    torch.device(device)  # validates the argument
    return torch.channels_last


def repeatable(threads: int = 2) -> None:
    """Make training and prediction give the same numbers on every run and machine: a fixed
    number of CPU threads (float sums depend on how work is split), deterministic kernels
    where torch has them (CUDA convolutions above all), and the CPU kernels capped at AVX2
    (:mod:`pipeline.cpu_kernels`; warns when torch did not take the cap)."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    pinned = os.environ.get("ATEN_CPU_CAPABILITY", "").upper()
    actual = torch.backends.cpu.get_cpu_capability()
    if pinned in ("AVX2", "AVX512") and actual != pinned:
        log.warning(
            "torch runs %s CPU kernels, not the pinned %s: torch ran a kernel before "
            "pipeline was imported, so figures may differ from other machines",
            actual,
            pinned,
        )
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = False
