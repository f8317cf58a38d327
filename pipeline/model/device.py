"""Pick the torch device a model runs on."""

from __future__ import annotations

import logging
import os
import weakref
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

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


#: windows per forward pass on the CPU: 2 cores gain nothing from larger batches
CPU_BATCH = 8


def batch_from_memory(
    free_bytes: int, bytes_per_window: int, *, headroom: float = 0.5, cap: int = 64
) -> int:
    """Windows per forward pass that fit in ``headroom`` of ``free_bytes`` when one window
    needs ``bytes_per_window`` at its peak: ``clamp(free * headroom // per_window, 1, cap)``."""
    if bytes_per_window <= 0:
        return cap
    return max(1, min(cap, int(free_bytes * headroom) // bytes_per_window))


_measured_batches: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, str], int]] = (
    weakref.WeakKeyDictionary()
)


def windows_per_batch(model: nn.Module, window: int, device: torch.device | str) -> int:
    """Batch size for ``window`` px windows: :data:`CPU_BATCH` on the CPU; on a CUDA
    device as many as fit in half its free memory, one window's peak measured once per
    model and window size by a probe forward pass (bf16 autocast, channels_last, as
    prediction runs)."""
    if not is_cuda(device):
        return CPU_BATCH
    device = torch.device(device)
    known = _measured_batches.setdefault(model, {})
    if (window, str(device)) not in known:
        known[window, str(device)] = _probe_batch(model, window, device)
    return known[window, str(device)]


def _probe_batch(model: nn.Module, window: int, device: torch.device) -> int:
    """One window's peak CUDA memory over a forward pass, turned into a batch size."""
    channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    probe = torch.zeros(1, channels, window, window, device=device)
    with torch.inference_mode(), autocast(device):
        model(probe.contiguous(memory_format=memory_format(device)))
    torch.cuda.synchronize(device)
    per_window = torch.cuda.max_memory_allocated(device) - before
    free, _ = torch.cuda.mem_get_info(device)
    batch = batch_from_memory(free, per_window)
    log.debug(
        "%d windows of %d px per batch on %s (%d bytes each)", batch, window, device, per_window
    )
    return batch


def to_device_input(images: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """``(N, C, H, W)`` uint8 windows as the network's float32 input on ``device``,
    channels_last. To a CUDA device the bytes go as uint8 (a quarter of float32) from
    pinned memory without blocking, and become floats there."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if is_cuda(device):
        x = x.pin_memory().to(device, non_blocking=True)
    return x.float().contiguous(memory_format=memory_format(device))


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
