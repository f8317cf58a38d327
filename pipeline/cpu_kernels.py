"""One set of CPU kernels on every x86-64 machine, so figures reproduce across machines.

PyTorch, oneDNN and MKL pick their kernels by the CPU's instruction set: on an AVX-512
machine they sum floats in other orders than on an AVX2 one, and a training run of
1,200 steps drifts apart from the same seed (the demo's figures differed between two
machines of this project's CI). Capping all three at AVX2, which every x86-64 server
of the last decade has, gives the same kernels everywhere; threads are fixed
separately (:func:`pipeline.model.device.repeatable`).

The caps are environment variables read when each library first runs a kernel, so
:func:`pin_cpu_kernels` runs when ``pipeline`` is imported, before any model code.
A variable the user already set is kept (``ATEN_CPU_CAPABILITY=default`` lifts the cap).
"""

from __future__ import annotations

import os

#: environment variable -> the AVX2 cap it sets
CPU_KERNEL_CAPS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (MKL-DNN): convolutions
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility: matmuls
}


def pin_cpu_kernels() -> None:
    """Set each cap of :data:`CPU_KERNEL_CAPS` that is not set already."""
    for name, value in CPU_KERNEL_CAPS.items():
        os.environ.setdefault(name, value)
