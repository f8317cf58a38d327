"""Do two machines train the same model? A fingerprint of 30 training steps.

    .venv/bin/python bench/cpu_kernels.py                 # capped at AVX2 (the default)
    ATEN_CPU_CAPABILITY=avx512 ONEDNN_MAX_CPU_ISA=ALL MKL_CBWR=AUTO \\
        .venv/bin/python bench/cpu_kernels.py             # this CPU's own kernels

Builds the default model from a fixed seed, takes 30 AdamW steps on a fixed random
batch with 2 threads, and prints the CPU kernels torch used, the last loss and the sum
of the weights. Equal lines on two machines: they train alike. On an AVX-512 machine
the two commands above print different weights (6083.64 vs 6148.24 on 2026-12-03):
the cap in :mod:`pipeline.cpu_kernels` is what makes it agree with AVX2-only machines.
"""

from __future__ import annotations

import torch

import pipeline  # noqa: F401  (caps the CPU kernels before torch runs one)
from pipeline.model import ModelSpec, build_model
from pipeline.model.device import repeatable


def main() -> None:
    repeatable(2)
    torch.manual_seed(0)
    model = build_model(ModelSpec()).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-3)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 128, 128, generator=g).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(8, 1, 128, 128, generator=g) > 0.7).float()
    for _ in range(30):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        optimizer.step()
    weights = float(sum(p.detach().double().sum() for p in model.parameters()))
    kernels = torch.backends.cpu.get_cpu_capability()
    print(f"kernels {kernels}  loss {loss.item()!r}  weight sum {weights!r}")


if __name__ == "__main__":
    main()
