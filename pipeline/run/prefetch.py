"""Read the next shard while the current one is predicted (on a GPU, where the reads and
the device work overlap; on the CPU the two cores are the model's and reads stay in line)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def loaded_ahead(
    items: Sequence[T], load: Callable[[T], R], *, enabled: bool
) -> Generator[tuple[T, R], None, None]:
    """``(item, load(item))`` for each item in order. When ``enabled``, ``load`` of the
    next item runs in a background thread while the caller works on the current one; an
    error of ``load`` is raised when its item's turn comes. A consumer that stops early
    leaves at most one load to finish."""
    if not enabled:
        for item in items:
            yield item, load(item)
        return
    if not items:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        pending = pool.submit(load, items[0])
        for i, item in enumerate(items):
            result = pending.result()
            if i + 1 < len(items):
                pending = pool.submit(load, items[i + 1])
            yield item, result
