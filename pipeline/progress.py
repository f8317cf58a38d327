"""Progress of long work: a tqdm bar on a terminal, a plain line now and then elsewhere.

Redirected to a log file or a pipe, a bar would write one line per refresh; there
the same progress is one line at most every :data:`LINE_INTERVAL_S` seconds (and
one at the end), so a log shows that work moves without filling up.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

LINE_INTERVAL_S = 10.0


class _Lines:
    """A file for tqdm that turns its carriage-return refreshes into whole lines."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


class _LineBar(tqdm):
    """tqdm that draws at most one line per :data:`LINE_INTERVAL_S` (``set_postfix`` and
    ``refresh`` included, which tqdm itself draws at once) and always the last state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._drawn_at = float("-inf")
        self._closing = False
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool | None:
        now = time.monotonic()
        if not self._closing and now - self._drawn_at < LINE_INTERVAL_S:
            return None
        self._drawn_at = now
        return super().display(msg, pos)

    def close(self) -> None:
        self._closing = True
        super().close()


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``: silent unless ``enabled``; a bar on a terminal (stderr),
    otherwise plain lines every :data:`LINE_INTERVAL_S` seconds."""
    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if sys.stderr.isatty():
        return tqdm(iterable, **kwargs)
    return _LineBar(
        iterable,
        file=_Lines(sys.stderr),
        mininterval=LINE_INTERVAL_S,
        maxinterval=LINE_INTERVAL_S,
        miniters=1,
        ascii=True,
        ncols=100,
        **kwargs,
    )
