"""``embstore.writer(...)``: write into a store from any loop, exactly once by path.

::

    with embstore.writer("crops.store", feature_size=768, model="dinov3-vitb16") as w:
        for batch in loader:
            todo = w.missing(batch.paths)          # skip work a killed run already committed
            w.append(paths, vectors, labels={"category": cats, "subject": subs, "age_mo": ages})

Rows are buffered and committed through :class:`~embstore.store.writer.StoreWriter` in whole
row chunks (a commit never rewrites a partly filled chunk, so versions cost no extra disk);
the rest is committed when the block ends. A path already stored (or appended twice) is
skipped, so re-running a killed script adds only what is missing. Each commit is one version;
the run is one provenance entry (``running`` -> ``complete``, ``failed`` or
``interrupted``). If the block raises, the rows appended so far are still committed (they are
whole, valid rows) and the run is recorded as failed.

Commits are synchronous: ``append`` returns once the full chunks it completed are committed.
A background committer (``store/committer.py``) plugs in at :meth:`LoopWriter._commit_ready`:
hand it the ready batch instead of calling ``StoreWriter.append``, and wait for it in
:meth:`LoopWriter.close`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from ..errors import BadInputError, DuplicatePathError
from ..keys import check_keys
from ..labels import INTEGER_LABELS, MISSING_AGE, MISSING_STR
from .layout import ROOT_ATTR
from .location import StoreLike
from .repo import readonly_group, unreadable_as_store_error
from .schema import load_schema
from .writer import StoreWriter


@dataclass
class WriterReport:
    """What a :func:`writer` block committed."""

    store: str
    added: int = 0
    already_stored: int = 0
    commits: int = 0
    rows: int = 0
    nonfinite: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"added {self.added} rows in {self.commits} commit(s), store has {self.rows}"
        if self.already_stored:
            text += f"; {self.already_stored} already stored (skipped)"
        if self.nonfinite:
            text += f"; {len(self.nonfinite)} hold NaN/Inf (flagged in 'nonfinite')"
        return text


class LoopWriter:
    """The object a :func:`writer` block appends to (see the module docstring)."""

    def __init__(self, writer: StoreWriter, *, batch_rows: int | None = None) -> None:
        self.store = writer
        self.chunk = _row_chunk(writer)
        self.batch_rows = max(1, batch_rows or self.chunk)
        self.report = WriterReport(store=str(writer.path), rows=writer.rows)
        #: Extra fields for this run's provenance entry when it finishes (bad rows...).
        self.notes: dict[str, Any] = {}
        self._paths: list[str] = []
        self._queued: set[str] = set()
        self._vectors: list[np.ndarray] = []
        self._labels: dict[str, list[Any]] = {}

    def claim(self, key: str, value: dict[str, Any], *, defining: Sequence[str]) -> None:
        """Record settings under ``embstore.<key>`` once; later runs must match ``defining``
        (see :meth:`StoreWriter.claim`): extraction and aggregation settings."""
        self.store.claim(key, value, defining=defining)

    def contains(self, path: str) -> bool:
        """True if ``path`` is committed or waiting in this writer's buffer."""
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
        """Queue rows (``paths`` unique keys, ``vectors`` ``(rows, feature_size)``); return how
        many were new. Full chunks are committed before this returns.

        ``labels`` maps label names to one value per row (``age_mo`` an integer, -1 unknown;
        other labels strings, ``""`` unknown). Rows whose path is stored or queued are skipped.
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
        # labels converted (and checked) before anything is queued: a bad value queues nothing
        converted = {
            name: [_label_value(name, values[i]) for i in keep] for name, values in labels.items()
        }
        if keep:
            self._queued.update(seen)
            self._queue([paths[i] for i in keep], matrix[keep], converted)
            self._commit_ready(final=False)
        return len(keep)

    def _queue(self, paths: list[str], matrix: np.ndarray, labels: dict[str, list[Any]]) -> None:
        before = len(self._paths)
        for name in labels:
            if name not in self._labels:  # a label new in this batch: missing for earlier rows
                self._labels[name] = [_missing(name)] * before
        for name, column in self._labels.items():
            column.extend(labels[name] if name in labels else [_missing(name)] * len(paths))
        self._paths.extend(paths)
        self._vectors.append(matrix)

    def _commit_ready(self, *, final: bool) -> None:
        """Commit the queued rows that end on a chunk boundary (all of them if ``final``).

        The one place rows leave the buffer: a background committer takes over here.
        """
        queued = len(self._paths)
        if not queued:
            return
        if final:
            take = queued
        else:
            if queued < self.batch_rows:
                return
            end = (self.store.rows + queued) // self.chunk * self.chunk
            take = end - self.store.rows
            if take <= 0:
                return
        matrix = np.concatenate(self._vectors) if len(self._vectors) > 1 else self._vectors[0]
        paths = self._paths[:take]
        labels = {name: column[:take] for name, column in self._labels.items()}
        result = self.store.append(paths, matrix[:take], labels)
        self._paths = self._paths[take:]
        self._vectors = [matrix[take:]] if take < queued else []
        self._labels = {name: column[take:] for name, column in self._labels.items()}
        self._queued.difference_update(paths)
        report = self.report
        report.added += result.added
        report.already_stored += len(result.duplicates)  # committed by another writer meanwhile
        report.nonfinite += result.nonfinite
        report.rows = result.rows
        report.commits += 1

    def flush(self) -> None:
        """Commit every queued row now (also a partial chunk)."""
        self._commit_ready(final=True)


def _check_action(action: str) -> None:
    schema = load_schema()
    entry = schema["properties"]["attributes"]["properties"][ROOT_ATTR]["properties"]
    allowed = entry["provenance"]["items"]["properties"]["action"]["enum"]
    if action not in allowed:
        raise BadInputError("action", f"{action!r} is not one of {allowed}")


def _row_chunk(writer: StoreWriter) -> int:
    """Rows per embedding chunk of the writer's store (commits end on a multiple of it)."""
    _, _, group = readonly_group(writer.location)
    with unreadable_as_store_error(writer.location):
        array = group["embedding"]
    assert isinstance(array, zarr.Array)
    return int(array.chunks[0])


def _missing(name: str) -> Any:
    return MISSING_AGE if name in INTEGER_LABELS else MISSING_STR


def _label_value(name: str, value: Any) -> Any:
    if name in INTEGER_LABELS:
        if value is None or value == "" or (isinstance(value, float) and np.isnan(value)):
            return MISSING_AGE
        try:
            return int(value)
        except (TypeError, ValueError):
            raise BadInputError("labels", f"{name} {value!r} is not a whole number") from None
    return MISSING_STR if value is None else str(value)


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
        Rows buffered before a commit (default: one row chunk of the store); a commit takes
        the queued rows up to the last whole chunk. A crash loses at most these rows.
    row_chunk
        Rows per embedding chunk when the store is created (default:
        :func:`~embstore.store.layout.choose_row_chunk`).
    on_duplicate
        ``"skip"`` (default): paths already stored are skipped (a re-run adds only what is
        missing). ``"error"``: a path already stored or queued raises
        :class:`~embstore.errors.DuplicatePathError` (nothing of that batch is queued).
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
    loop = LoopWriter(base, batch_rows=batch_rows)
    base.start_run(action, **dict(info or {}))
    try:
        yield loop
    except BaseException as exc:
        with contextlib.suppress(Exception):
            loop.flush()  # rows appended so far are whole and valid: keep them
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        base.finish_run(status, error=type(exc).__name__, **loop.notes)
        raise
    loop.flush()
    base.finish_run("complete", **loop.notes)
    loop.report.rows = base.rows


__all__ = ["LoopWriter", "WriterReport", "writer"]
