"""Commits on a background thread, so the loop that produces rows (a GPU) never waits for them.

:class:`BackgroundCommitter` hands each batch to :meth:`StoreWriter.append
<embstore.store.writer.StoreWriter.append>` on one thread, in the order given. Everything the
writer promises still holds: each batch is one version, all or nothing; a killed process loses
only the batches not yet committed, and a rerun skips every committed path. What the thread adds:

- a bound: at most ``in_flight`` batches are handed over and not yet committed; a further
  :meth:`~BackgroundCommitter.submit` waits for the oldest, so memory stays bounded;
- errors come back: a commit's exception is raised in the caller's thread at the next
  ``submit``, ``flush`` or on leaving the ``with`` block, and nothing after it is committed
  (batches still waiting are dropped, never committed out of order);
- results come back in the caller's thread: ``on_result(AppendResult)`` is called from
  ``submit`` and ``flush``, never from the commit thread.

:class:`AlignedCommitter` puts :class:`~embstore.store.writer.AlignedBatches` in front of it:
rows go in in any batch sizes, commits end on chunk edges (ingest, ``embstore.writer``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import numpy as np

from .writer import AlignedBatches, AppendResult, StoreWriter

log = logging.getLogger(__name__)

_STOP = object()


class BackgroundCommitter:
    """Commit ``writer``'s batches on one background thread (see the module docstring).

    Parameters
    ----------
    writer
        The writer every batch goes through. Nothing else may append through it while the
        committer is open.
    in_flight
        Batches that may be handed over and not yet committed (>= 1).
    on_result
        Called with each batch's :class:`~embstore.store.writer.AppendResult`, in order, in
        the thread that calls :meth:`submit` / :meth:`flush`.

    Examples
    --------
    >>> writer = StoreWriter("new.store", feature_size=4)
    >>> batches = [([f"{b}/{i}.npy" for i in range(3)], np.full((3, 4), b)) for b in range(4)]
    >>> added = []
    >>> with BackgroundCommitter(writer, in_flight=2, on_result=added.append) as committer:
    ...     for paths, vectors in batches:
    ...         committer.submit(paths, vectors)  # returns while the previous one commits
    >>> [result.added for result in added], embstore.info("new.store")["rows"]
    ([3, 3, 3, 3], 12)
    """

    def __init__(
        self,
        writer: StoreWriter,
        *,
        in_flight: int = 2,
        on_result: Callable[[AppendResult], None] | None = None,
    ) -> None:
        if in_flight < 1:
            raise ValueError(f"in_flight must be >= 1, got {in_flight}")
        self.writer, self.on_result = writer, on_result
        self._slots = threading.Semaphore(in_flight)
        self._jobs: deque[Any] = deque()
        self._ready = threading.Condition()
        self._results: deque[AppendResult] = deque()
        self._pending = 0
        self._error: BaseException | None = None
        self._raised = False
        self._thread = threading.Thread(target=self._work, name="embstore-commit", daemon=True)
        self._thread.start()

    # -- caller's side ---------------------------------------------------------------------

    def submit(
        self,
        paths: Sequence[str],
        vectors: np.ndarray,
        labels: Mapping[str, Sequence[Any]] | None = None,
        *,
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Queue one batch for :meth:`StoreWriter.append`; waits while ``in_flight`` batches
        are uncommitted; raises an earlier commit's error."""
        self._deliver()
        self._slots.acquire()
        if self._error is not None:  # failed while we waited for a slot
            self._slots.release()
            self._deliver()
        with self._ready:
            self._pending += 1
            self._jobs.append((paths, vectors, labels, extra))
            self._ready.notify_all()

    def flush(self) -> None:
        """Wait until every submitted batch is committed; raise a commit's error."""
        with self._ready:
            self._ready.wait_for(lambda: self._pending == 0)
        self._deliver()

    def close(self) -> None:
        """Stop the commit thread after the batches already handed over."""
        with self._ready:
            self._jobs.append(_STOP)
            self._ready.notify_all()
        self._thread.join()

    def __enter__(self) -> BackgroundCommitter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                self.flush()
            else:  # keep what is good and already handed over; the caller's error wins
                with self._ready:
                    self._ready.wait_for(lambda: self._pending == 0)
                already_raised = self._raised  # the caller saw this commit's error already
                try:
                    self._deliver()
                except BaseException:  # noqa: BLE001
                    if not already_raised:
                        log.warning("%s: a commit failed as the run stopped", self.writer.path)
        finally:
            self.close()

    def _deliver(self) -> None:
        while self._results:
            result = self._results.popleft()
            if self.on_result is not None:
                self.on_result(result)
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error
        if self._error is not None:
            raise RuntimeError("the commit thread failed earlier") from self._error

    # -- commit thread ---------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: bool(self._jobs))
                job = self._jobs.popleft()
            if job is _STOP:
                return
            paths, vectors, labels, extra = job
            try:
                if self._error is None:  # after a failure nothing more is committed
                    self._results.append(self.writer.append(paths, vectors, labels, extra=extra))
            except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
                self._error = exc
            finally:
                self._slots.release()
                with self._ready:
                    self._pending -= 1
                    self._ready.notify_all()


class AlignedCommitter:
    """Rows in any batch sizes -> commits that end on chunk edges, on a background thread.

    :class:`~embstore.store.writer.AlignedBatches` (rows kept back until a chunk edge) in
    front of a :class:`BackgroundCommitter` (same parameters). Leaving the block, also on an
    exception, commits the rows kept back and waits for every commit: rows handed over before
    an error are kept (unless a commit failed: nothing after a failed commit is committed).

    Examples
    --------
    >>> writer = StoreWriter("aligned.store", feature_size=4, row_chunk=4)
    >>> with AlignedCommitter(writer) as commits:
    ...     for b in range(3):  # batches of 3 rows, commits of whole 4-row chunks
    ...         commits.submit([f"{b}/{i}.npy" for i in range(3)], np.full((3, 4), b))
    >>> writer.rows
    9
    """

    def __init__(
        self,
        writer: StoreWriter,
        *,
        in_flight: int = 2,
        batch_rows: int = 1,
        on_result: Callable[[AppendResult], None] | None = None,
    ) -> None:
        self.aligned = AlignedBatches(writer.rows, writer.row_chunk, batch_rows=batch_rows)
        self.committer = BackgroundCommitter(writer, in_flight=in_flight, on_result=on_result)

    def submit(
        self,
        paths: Sequence[str],
        vectors: np.ndarray,
        labels: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        """Keep the rows; hand the ones that reach a chunk edge to the commit thread."""
        columns = {name: list(values) for name, values in (labels or {}).items()}
        for batch in self.aligned.take((list(paths), vectors, columns)):
            self.committer.submit(*batch)

    def flush(self) -> None:
        """Commit the rows kept back (a partial chunk) and wait for every commit."""
        self._submit_tail()
        self.committer.flush()

    def _submit_tail(self) -> None:
        tail = self.aligned.flush()
        if len(tail[0]):
            self.committer.submit(*tail)

    def __enter__(self) -> AlignedCommitter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:  # the rows kept back are whole and good; the caller's error wins
            with contextlib.suppress(Exception):
                self._submit_tail()
            self.committer.__exit__(exc_type, exc, tb)
            return
        try:
            self._submit_tail()
        except BaseException as error:  # an earlier commit failed: that is the error raised
            self.committer.__exit__(type(error), error, error.__traceback__)
            raise
        self.committer.__exit__(None, None, None)


__all__ = ["AlignedCommitter", "BackgroundCommitter"]
