from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.cpu_kernels import CPU_KERNEL_CAPS
from pipeline.errors import ModelError
from pipeline.model.dataset import to_model_input
from pipeline.model.device import (
    CPU_BATCH,
    autocast,
    batch_from_memory,
    is_cuda,
    select_device,
    to_device_input,
    windows_per_batch,
)


def test_cpu_and_auto():
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    assert select_device().type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_but_absent_is_an_error():
    with pytest.raises(ModelError, match="CUDA is not available"):
        select_device("cuda")
    with pytest.raises(ModelError, match="CUDA is not available"):
        select_device("cuda:0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_when_present():
    assert is_cuda(select_device("cuda"))


def test_unknown_preference():
    with pytest.raises(ModelError, match="must be 'auto', 'cpu' or 'cuda'"):
        select_device("tpu")


def test_autocast_is_a_no_op_on_cpu():
    with autocast(torch.device("cpu")):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32


def _capability(env: dict[str, str]) -> str:
    code = "import pipeline, torch; print(torch.backends.cpu.get_cpu_capability())"
    clean = {k: v for k, v in os.environ.items() if k not in CPU_KERNEL_CAPS}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the AVX2 cap is for x86-64")
def test_importing_pipeline_caps_torch_at_avx2_unless_the_user_says_otherwise():
    """Every x86-64 machine runs the same kernels (AVX-512 ones sum in another order)."""
    assert _capability({}) == "AVX2"
    assert _capability({"ATEN_CPU_CAPABILITY": "default"}) == "DEFAULT"


def test_batch_from_memory_fills_the_headroom_within_bounds():
    gib = 1 << 30
    assert batch_from_memory(8 * gib, gib // 4) == 16  # half of 8 GiB in 256 MiB windows
    assert batch_from_memory(8 * gib, gib // 4, headroom=0.25) == 8
    assert batch_from_memory(100 * gib, 1 << 20) == 64  # capped
    assert batch_from_memory(gib // 8, gib) == 1  # never less than one window
    assert batch_from_memory(gib, 0, cap=32) == 32


def test_on_the_cpu_a_batch_is_eight_windows_and_the_input_is_unchanged():
    cpu = torch.device("cpu")
    net = torch.nn.Conv2d(3, 1, 3)
    assert windows_per_batch(net, 320, cpu) == CPU_BATCH == 8
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    x = to_device_input(images, cpu)
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, to_model_input(images))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_batch_comes_from_free_memory_and_input_goes_as_bytes():
    device = torch.device("cuda")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU()).to(device)
    batch = windows_per_batch(net, 320, device)
    free, _ = torch.cuda.mem_get_info(device)
    assert 1 <= batch <= 64 and batch * 320 * 320 * 16 * 4 <= free
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    x = to_device_input(images, device)
    assert x.device.type == "cuda" and torch.equal(x.cpu(), to_model_input(images))
