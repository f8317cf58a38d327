from __future__ import annotations

import pytest
import torch

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
