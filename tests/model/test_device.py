from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from pipeline.cpu_kernels import CPU_KERNEL_CAPS
from pipeline.errors import ModelError
from pipeline.model.device import autocast, is_cuda, select_device


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
