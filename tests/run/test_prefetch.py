"""Reading the next shard while the current one is predicted."""

from __future__ import annotations

import threading

import pytest

from pipeline.run.prefetch import loaded_ahead


def test_items_come_in_order_with_their_loads_either_way() -> None:
    for enabled in (False, True):
        got = list(loaded_ahead(["a", "b", "c"], str.upper, enabled=enabled))
        assert got == [("a", "A"), ("b", "B"), ("c", "C")]
        assert list(loaded_ahead([], str.upper, enabled=enabled)) == []


def test_the_next_load_runs_while_the_caller_works_on_the_current_item() -> None:
    second_loading = threading.Event()

    def load(item: int) -> int:
        if item == 2:
            second_loading.set()
        return item * 10

    items = loaded_ahead([1, 2, 3], load, enabled=True)
    assert next(items) == (1, 10)
    # the caller is still on item 1: item 2 is being read in the background
    assert second_loading.wait(timeout=10)
    assert list(items) == [(2, 20), (3, 30)]


def test_without_prefetch_nothing_is_read_before_it_is_asked_for() -> None:
    loaded: list[int] = []
    items = loaded_ahead([1, 2, 3], lambda i: loaded.append(i) or i, enabled=False)
    assert next(items) == (1, 1) and loaded == [1]


def test_a_failed_load_is_raised_at_its_items_turn() -> None:
    def load(item: str) -> str:
        if item == "bad":
            raise OSError(f"{item}: cannot read")
        return item

    items = loaded_ahead(["ok", "bad", "late"], load, enabled=True)
    assert next(items) == ("ok", "ok")
    with pytest.raises(OSError, match="bad: cannot read"):
        next(items)


def test_a_consumer_that_stops_early_leaves_no_thread_behind() -> None:
    before = {t.name for t in threading.enumerate()}
    items = loaded_ahead(list(range(5)), lambda i: i, enabled=True)
    next(items)
    items.close()
    assert not [
        t for t in threading.enumerate() if t.name.startswith("prefetch") and t.name not in before
    ]
