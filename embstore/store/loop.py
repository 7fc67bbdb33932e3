"""``embstore.writer(...)``: write into a store from any loop, exactly once by path.

::

    with embstore.writer("crops.store", feature_size=768, model="dinov3-vitb16") as w:
        for batch in loader:
            todo = w.missing(batch.paths)          # skip work a killed run already committed
            w.append(paths, vectors, labels={"category": cats, "subject": subs, "age_mo": ages})

Rows are kept back and committed through :class:`~embstore.store.writer.StoreWriter` in whole
row chunks (:class:`~embstore.store.writer.AlignedBatches`: a commit never rewrites a partly
filled chunk, so versions cost no extra disk); the rest is committed when the block ends. A
path already stored (or appended twice) is skipped, so re-running a killed script adds only
what is missing. Each commit is one version; the run is one provenance entry
(:meth:`StoreWriter.run <embstore.store.writer.StoreWriter.run>`: ``running`` -> ``complete``,
``failed`` or ``interrupted``). If the block raises, the rows appended so far are still
committed (they are whole, valid rows) and the run is recorded as failed.

Commits run on a background thread (:class:`~embstore.store.committer.AlignedCommitter`), so
the loop (a GPU) does not wait for one: ``append`` returns once its rows are handed over; at
most ``COMMITS_IN_FLIGHT`` cut batches wait for their commit (a further one waits for the
oldest, so memory stays bounded), a commit's
error is raised in the loop's thread at the next ``append`` or when the block ends, and
:attr:`LoopWriter.report` is complete once the block has ended.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BadInputError, DuplicatePathError
from ..keys import check_keys
from ..labels import missing_value
from .committer import AlignedCommitter
from .layout import ROOT_ATTR
from .location import StoreLike
from .schema import load_schema
from .writer import AppendResult, RunRecord, StoreWriter

#: Cut batches that may wait for their commit while the loop goes on.
COMMITS_IN_FLIGHT = 2


@dataclass
class WriterReport:
    """What a :func:`writer` block committed."""

    store: str
    added: int = 0
    already_stored: int = 0
    commits: int = 0
    rows: int = 0
    nonfinite: list[str] = field(default_factory=list)
    #: True when the block created the store (a mistyped path shows).
    created: bool = False

    def summary(self) -> str:
        text = f"added {self.added} rows in {self.commits} commit(s), store has {self.rows}"
        if self.created:
            text = f"created a new store; {text}"
        if self.already_stored:
            text += f"; {self.already_stored} already stored (skipped)"
        if self.nonfinite:
            text += f"; {len(self.nonfinite)} hold NaN/Inf (flagged in 'nonfinite')"
        return text


class LoopWriter:
    """The object a :func:`writer` block appends to (see the module docstring).

    Parameters
    ----------
    writer
        The store's writer; the run record ``record`` is open on it.
    record
        This run's record: :attr:`notes` (extra fields for its provenance entry when it
        completes: bad rows...).
    batch_rows
        Rows kept back before a commit (default: one row chunk of the store).
    """

    def __init__(
        self, writer: StoreWriter, record: RunRecord, *, batch_rows: int | None = None
    ) -> None:
        self.store = writer
        #: Rows per embedding chunk of the store: commits end on a multiple of it.
        self.chunk = writer.row_chunk
        self.batch_rows = max(1, batch_rows or self.chunk)
        self.report = WriterReport(store=str(writer.path), rows=writer.rows, created=writer.created)
        #: Extra fields for this run's provenance entry when it completes (``notes.update``).
        self.notes = record
        self.commits = AlignedCommitter(
            writer, in_flight=COMMITS_IN_FLIGHT, batch_rows=self.batch_rows, on_result=self._count
        )
        self._queued: set[str] = set()  # appended, not committed yet
        self._order: deque[str] = deque()  # the same, in the order they commit

    def claim(self, key: str, value: dict[str, Any], *, defining: Sequence[str]) -> None:
        """Record settings under ``embstore.<key>`` once; later runs must match ``defining``
        (see :meth:`StoreWriter.claim`): extraction and aggregation settings."""
        self.commits.committer.flush()  # no commit of this run underway meanwhile
        self.store.claim(key, value, defining=defining)

    def contains(self, path: str) -> bool:
        """True if ``path`` is committed or appended to this writer (and not committed yet)."""
        return path in self._queued or self.store.contains(path)

    def missing(self, paths: Sequence[str]) -> list[str]:
        """The ``paths`` not stored yet: the work a re-run still has to do."""
        return [p for p in paths if not self.contains(p)]

    def append(
        self,
        paths: Sequence[str],
        vectors: Any,
        labels: Mapping[str, Sequence[Any]] | None = None,
    ) -> int:
        """Hand rows over (``paths`` unique keys, ``vectors`` ``(rows, feature_size)``) and
        return how many were new; full chunks are committed on the commit thread meanwhile.

        ``labels`` maps label names to one value per row (``age_mo`` an integer, -1 unknown;
        other labels strings, ``""`` unknown). Rows whose path is stored or appended are skipped.
        An earlier commit's error is raised here.
        """
        paths = [str(p) for p in paths]
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape != (len(paths), self.store.feature_size):
            msg = (
                f"vectors of shape {matrix.shape} for {len(paths)} paths; "
                f"expected ({len(paths)}, {self.store.feature_size})"
            )
            raise BadInputError("vectors", msg)
        check_keys(paths, source="paths")
        labels = dict(labels or {})
        for name, values in labels.items():
            if len(values) != len(paths):
                msg = f"label {name!r} has {len(values)} values for {len(paths)} rows"
                raise BadInputError("labels", msg)
        keep, seen = [], set()
        for i, path in enumerate(paths):
            if self.contains(path) or path in seen:
                if self.store.on_duplicate == "error":
                    raise DuplicatePathError(f"{path!r} is already in {self.store.path}")
                self.report.already_stored += 1
            else:
                seen.add(path)
                keep.append(i)
        # labels converted (and checked) before anything is handed over: a bad value adds none
        converted = {
            name: [_label_value(name, values[i]) for i in keep] for name, values in labels.items()
        }
        if keep:
            kept = [paths[i] for i in keep]
            self._queued.update(kept)
            self._order.extend(kept)
            self.commits.submit(kept, matrix[keep], converted)
        return len(keep)

    def _count(self, result: AppendResult) -> None:
        """One commit done (called in the loop's thread): its rows are now in the store."""
        for _ in range(result.added + len(result.duplicates)):
            self._queued.discard(self._order.popleft())
        report = self.report
        report.added += result.added
        report.already_stored += len(result.duplicates)  # committed by another writer meanwhile
        report.nonfinite += result.nonfinite
        report.rows = result.rows
        report.commits += 1

    def flush(self) -> None:
        """Commit every row handed over now (also a partial chunk) and wait for it."""
        self.commits.flush()


def _check_action(action: str) -> None:
    schema = load_schema()
    entry = schema["properties"]["attributes"]["properties"][ROOT_ATTR]["properties"]
    allowed = entry["provenance"]["items"]["properties"]["action"]["enum"]
    if action not in allowed:
        raise BadInputError("action", f"{action!r} is not one of {allowed}")


def _label_value(name: str, value: Any) -> Any:
    missing = missing_value(name)
    if isinstance(missing, int):
        if value is None or value == "" or (isinstance(value, float) and np.isnan(value)):
            return missing
        try:
            return int(value)
        except (TypeError, ValueError):
            raise BadInputError("labels", f"{name} {value!r} is not a whole number") from None
    return missing if value is None else str(value)


@contextlib.contextmanager
def writer(
    store: StoreLike,
    *,
    feature_size: int | None = None,
    model: str | None = None,
    batch_rows: int | None = None,
    row_chunk: int | None = None,
    on_duplicate: str = "skip",
    action: str = "write",
    info: Mapping[str, Any] | None = None,
) -> Iterator[LoopWriter]:
    """Append rows to ``store`` from any loop, exactly once by path; commit in whole chunks.

    Parameters
    ----------
    store
        A local folder or ``s3://bucket/prefix``; created if missing (then ``feature_size``
        is required).
    feature_size, model
        The vectors' length (checked against an existing store) and the model name recorded
        at creation.
    batch_rows
        Rows kept back before a commit (default: one row chunk of the store); a commit takes
        them up to the last whole chunk. A crash loses at most these rows and the
        ``COMMITS_IN_FLIGHT`` batches waiting for their commit.
    row_chunk
        Rows per embedding chunk when the store is created (default:
        :func:`~embstore.store.layout.choose_row_chunk`).
    on_duplicate
        ``"skip"`` (default): paths already stored are skipped (a re-run adds only what is
        missing). ``"error"``: a path already stored or appended raises
        :class:`~embstore.errors.DuplicatePathError` (nothing of that batch is kept).
    action, info
        The provenance entry of this run: its action (one the store's schema lists:
        ``"write"``, ``"extract"``, ``"ingest"``...) and extra fields (sources, settings...).

    Examples
    --------
    >>> import tempfile, numpy as np, embstore
    >>> store = tempfile.mkdtemp() + "/s"
    >>> with embstore.writer(store, feature_size=4, model="toy") as w:
    ...     _ = w.append(["a.jpg", "b.jpg"], np.ones((2, 4)), labels={"subject": ["s1", "s2"]})
    >>> w.report.added, w.report.rows
    (2, 2)
    """
    _check_action(action)
    base = StoreWriter(
        store,
        feature_size=feature_size,
        model=model,
        on_duplicate=on_duplicate,
        row_chunk=row_chunk,
    )
    with base.run(action, info) as record:  # the run record: complete, failed or interrupted
        loop = LoopWriter(base, record, batch_rows=batch_rows)
        with loop.commits:  # leaves before the run record: every commit is in it
            yield loop
    loop.report.rows = base.rows


__all__ = ["LoopWriter", "WriterReport", "writer"]
