"""Progress that counts rows, never dask tasks.

A verb takes ``progress(done, total)`` (rows). Here are the two ways a dask graph reports rows:
:func:`count_rows` wraps the array that is read (every chunk reports its rows once it is read),
:class:`RowCountingTarget` wraps the array that ``dask.array.store`` writes into.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

#: ``progress(done, total)``, both in rows.
Progress = Callable[[int, int], None]


class _Counter:
    """Thread-safe running total of rows, reported after every chunk."""

    def __init__(self, progress: Progress, total: int, *, start: int = 0) -> None:
        self._progress, self._total, self._done = progress, total, start
        self._lock = threading.Lock()

    def add(self, rows: int) -> None:
        with self._lock:
            self._done += rows
            done = self._done
        self._progress(min(done, self._total), self._total)


def count_rows(x: Any, progress: Progress | None, *, total: int | None = None) -> Any:
    """``x`` (a 2-D dask array, rows first) that reports its rows to ``progress`` as chunks
    are read. Compute every result of one pass together, so each chunk is read once."""
    if progress is None:
        return x
    counter = _Counter(progress, int(total if total is not None else x.shape[0]))

    def seen(block: Any) -> Any:
        counter.add(len(block))
        return block

    return x.map_blocks(seen, dtype=x.dtype, meta=getattr(x, "_meta", None))


class RowCountingTarget:
    """A ``dask.array.store`` target that reports the rows written through it."""

    def __init__(self, target: Any, progress: Progress, total: int) -> None:
        self._target = target
        self._counter = _Counter(progress, total)
        self.shape, self.dtype = target.shape, target.dtype

    def __setitem__(self, key: Any, value: Any) -> None:
        self._target[key] = value
        self._counter.add(len(value))
