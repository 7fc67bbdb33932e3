"""Ingest: sources in any format of ``embstore.formats`` -> labelled rows -> the store."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import zipfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._progress import Progress
from .errors import BadInputError, EmbstoreError
from .formats import open_source
from .formats.base import BadRow, Source, SourceBatch
from .formats.pt import PtDictSource
from .ingest_config import IngestConfig
from .keys import check_keys
from .labels import Layout, get_layout, read_categories
from .labels_csv import LabelsTable, label_columns, read_labels_csv
from .store import AppendResult, StoreWriter, is_store
from .store.committer import AlignedCommitter
from .store.layout import DEFAULT_BATCH_ROWS, row_chunk_for_ingest
from .store.location import StoreLike
from .store.writer import RunRecord

log = logging.getLogger(__name__)

#: Batches that may wait for their commit while the next ones are read.
COMMITS_IN_FLIGHT = 2


@dataclass
class IngestReport:
    """What :func:`ingest` did."""

    store: str
    rows_added: int = 0
    already_stored: int = 0
    bad: list[BadRow] = field(default_factory=list)
    nonfinite: list[str] = field(default_factory=list)
    rows: int = 0
    outside_categories: int = 0
    #: True when this ingest created the store (a mistyped path shows).
    created: bool = False

    def summary(self) -> str:
        parts = [f"added {self.rows_added} rows", f"store has {self.rows}"]
        if self.created:
            parts[0] = f"created a new store; {parts[0]}"
        if self.already_stored:
            parts.append(f"{self.already_stored} already stored (skipped)")
        if self.bad:
            parts.append(f"{len(self.bad)} bad (skipped)")
        if self.nonfinite:
            parts.append(f"{len(self.nonfinite)} hold NaN/Inf (flagged in 'nonfinite')")
        if self.outside_categories:
            parts.append(f"{self.outside_categories} outside the categories (skipped)")
        return ", ".join(parts)


def ingest(
    sources: Sequence[str | os.PathLike[str]],
    *,
    store: StoreLike,
    config: IngestConfig | None = None,
    progress: Progress | None = None,
    **settings: Any,
) -> IngestReport:
    """Append the vectors of ``sources`` to ``store`` (created if missing), exactly once.

    Parameters
    ----------
    sources
        Anything a format of :data:`embstore.formats.FORMATS` reads, recognised by what it is:
        folders of ``.npy`` files (one 1-D float vector each), ``.pt`` dict files
        ``{relative_path: tensor}``, HDF5/netCDF files or Zarr datasets with an ``embedding``
        and ``path`` labels (what :func:`embstore.export` writes). Every row key must pass
        :func:`embstore.keys.key_problem` (a relative POSIX path; see :mod:`embstore.keys`).
    store
        The store; created with the sources' feature size if it does not exist.
    config
        How rows are labelled, filtered, batched and loaded
        (:class:`~embstore.ingest_config.IngestConfig`: ``layout``, ``pattern``,
        ``labels_csv``, ``labels_key``, ``categories``, ``skip_bad``, ``on_duplicate``,
        ``model``, ``batch_rows``, ``row_chunk``, ``jobs``).
    progress
        Called with ``(rows_done, rows_total)`` after each batch (after each file when
        ``.pt`` files load in parallel).
    **settings
        :class:`~embstore.ingest_config.IngestConfig` fields, instead of ``config`` or
        overriding it (``ingest(["emb/"], store=s, layout="babyview")``).

    Examples
    --------
    >>> report = embstore.ingest(["emb/"], store="new.store", layout="babyview")
    >>> report.summary()
    'created a new store; added 24 rows, store has 24'
    """
    config = (config or IngestConfig()).with_(**settings)
    files = [Path(s) for s in sources]
    if (
        config.jobs > 1
        and len(files) > 1
        and all(f.is_file() and f.suffix.lower() in (".pt", ".pth") for f in files)
    ):
        return _ingest_pt_files_in_parallel(files, store, config, progress)
    plan = _Plan.make(sources, config)
    with contextlib.ExitStack() as stack:  # the run record: complete, failed or interrupted
        run = _Run(plan, store=store, config=config, stack=stack)
        batch_rows = config.batch_rows or DEFAULT_BATCH_ROWS
        run.read_all(batch_rows=batch_rows, skip_bad=config.skip_bad, progress=progress)
        report = run.finish()
    if run.writer is not None:
        report.rows = run.writer.rows
    for row in report.bad:
        log.warning("skipped %s", row)
    if plan.unlabelled and report.rows_added:
        log.warning(
            "%s: no labels derived (no layout, pattern or labels CSV); add them with "
            "embstore.label / `embstore label`",
            store,
        )
    return report


@dataclass
class _Plan:
    """What an ingest reads and how it labels rows, decided before anything is written."""

    sources: list[Source]
    layout: Layout | None
    table: LabelsTable | None
    allowed: list[str] | None
    run_info: dict[str, Any]

    @classmethod
    def make(cls, sources: Sequence[str | os.PathLike[str]], config: IngestConfig) -> _Plan:
        resolved = get_layout(config.layout, pattern=config.pattern)
        labels_csv, categories = config.labels_csv, config.categories
        table = (
            read_labels_csv(labels_csv, key=config.labels_key, layout=resolved)
            if labels_csv
            else None
        )
        allowed = read_categories(categories) if categories is not None else None
        opened = [open_source(s) for s in sources]
        named = resolved is not None and resolved.name != "pattern"  # a regex records itself
        run_info = {
            "sources": [s.name for s in opened],
            "layout": (resolved.name if named else resolved.pattern) if resolved else None,
            "labels_csv": str(labels_csv) if labels_csv else None,
            "categories": allowed,
        }
        return cls(opened, resolved, table, allowed, run_info)

    @property
    def unlabelled(self) -> bool:
        """True when no layout, CSV or source gives any label."""
        return (
            self.layout is None
            and self.table is None
            and not any(getattr(s, "label_names", ()) for s in self.sources)
        )


class _Run:
    """One ingest: reads batches, labels them, and commits them in order, cut at chunk edges,
    on a background thread (:class:`~embstore.store.committer.AlignedCommitter`; file writes
    release the GIL), overlapping the reading of the next batches; at most COMMITS_IN_FLIGHT
    batches wait, so memory stays bounded. The store's run record and the committer live in
    ``stack``."""

    def __init__(
        self,
        plan: _Plan,
        *,
        store: StoreLike,
        config: IngestConfig,
        stack: contextlib.ExitStack,
    ) -> None:
        self.plan, self.store, self.stack = plan, store, stack
        self.on_duplicate, self.model, self.row_chunk = (
            config.on_duplicate,
            config.model,
            config.row_chunk,
        )
        self.report = IngestReport(store=str(store))
        self.writer: StoreWriter | None = None
        self.record: RunRecord | None = None
        self.committer: AlignedCommitter | None = None
        if is_store(store):
            self._open(StoreWriter(store, on_duplicate=self.on_duplicate))

    def _open(self, writer: StoreWriter) -> None:
        self.writer = writer
        self.report.rows = writer.rows
        self.record = self.stack.enter_context(writer.run("ingest", self.plan.run_info))
        committer = AlignedCommitter(writer, in_flight=COMMITS_IN_FLIGHT, on_result=self._count)
        # leaves before the run record; commits end on chunk edges: no chunk is written twice
        self.committer = self.stack.enter_context(committer)

    def _already_stored(self, path: str) -> bool:
        return (
            self.on_duplicate == "skip" and self.writer is not None and self.writer.contains(path)
        )

    def read_all(self, *, batch_rows: int, skip_bad: bool, progress: Progress | None) -> None:
        """Read, label and commit every source's batches; on an error, what was read and is
        good (the rows kept back for a chunk edge too) is committed (as the committer leaves
        ``stack``) before it is raised."""
        sized = [s for s in self.plan.sources if not isinstance(s, PtDictSource)]  # a .pt's
        remaining = sum(len(s) for s in sized)  # size costs a load: counted when it is read
        done = skipped = 0  # progress leaves out rows stored by an earlier run
        for source in self.plan.sources:
            remaining -= len(source) if source in sized else 0
            total = done + skipped + len(source) + remaining
            for batch in source.batches(
                batch_rows=batch_rows,
                feature_size=self.writer.feature_size if self.writer else None,
                skip=self._already_stored,
            ):
                done += len(batch.paths) + len(batch.bad)
                skipped += batch.skipped
                self.report.already_stored += batch.skipped
                self._commit(self._rows_of(batch, source, skip_bad))
                if progress is not None:
                    progress(done, total - skipped)
        if self.committer is not None:
            self.committer.flush()

    def _rows_of(
        self, batch: SourceBatch, source: Source, skip_bad: bool
    ) -> tuple[list[str], np.ndarray, dict[str, list[Any]]]:
        plan = self.plan
        rows = _label_batch(batch, source, plan.layout, plan.table, self.report, skip_bad)
        if plan.allowed is not None:
            rows = _in_categories(*rows, plan.allowed, self.report)
        return rows

    def _commit(self, rows: tuple[list[str], np.ndarray, dict[str, list[Any]]]) -> None:
        paths, vectors, labels = rows
        if self.writer is None and len(paths):
            writer = StoreWriter(
                self.store,
                feature_size=vectors.shape[1],
                model=self.model,
                on_duplicate=self.on_duplicate,
                row_chunk=self.row_chunk or row_chunk_for_ingest(vectors.shape[1], len(paths)),
            )
            self._open(writer)
            self.report.created = writer.created
        if self.committer is not None and len(paths):
            self.committer.submit(paths, vectors, labels)

    def _count(self, result: AppendResult) -> None:
        self.report.rows_added += result.added
        self.report.already_stored += len(result.duplicates)
        self.report.nonfinite.extend(result.nonfinite)
        self.report.rows = result.rows

    def finish(self) -> IngestReport:
        """Wait for the last commits; give the run record its summary."""
        report = self.report
        if self.committer is not None and self.record is not None:
            self.committer.flush()
            self.record.update(
                bad_count=len(report.bad),
                bad=[str(b) for b in report.bad],
                nonfinite_count=len(report.nonfinite),
                outside_categories=report.outside_categories,
            )
        return report


def _ingest_pt_files_in_parallel(
    files: list[Path], store: StoreLike, config: IngestConfig, progress: Progress | None
) -> IngestReport:
    """One ``ingest`` per file in worker processes, all committing into the same store.

    Every file is ingested even if another fails; the first failure is raised at the end
    (nothing of its failing batch was committed, as in a sequential ingest).
    """
    get_layout(config.layout, pattern=config.pattern)  # fail fast on a bad layout
    total = sum(_pt_entries(f) for f in files)
    report = IngestReport(store=str(store))
    one = config.with_(jobs=1)
    errors: list[BaseException] = []
    context = multiprocessing.get_context("spawn")  # no fork of a process running zarr threads
    with ProcessPoolExecutor(max_workers=config.jobs, mp_context=context) as pool:
        futures = [pool.submit(ingest, [f], store=store, config=one) for f in files]
        for future in as_completed(futures):
            try:
                part = future.result()
            except EmbstoreError as exc:
                errors.append(exc)
                continue
            report.rows_added += part.rows_added
            report.already_stored += part.already_stored
            report.bad += part.bad
            report.nonfinite += part.nonfinite
            report.outside_categories += part.outside_categories
            report.created |= part.created  # the worker that made the store says so
            if progress is not None:
                done = report.rows_added + len(report.bad)  # rows stored earlier left out
                progress(done, total - report.already_stored)
    if errors:
        raise errors[0]
    report.rows = StoreWriter(store).rows
    return report


def _pt_entries(file: Path) -> int:
    """Tensors in a ``torch.save`` zip (one storage record each): a size estimate for progress."""
    try:
        with zipfile.ZipFile(file) as archive:
            return sum(1 for name in archive.namelist() if "/data/" in name)
    except (OSError, zipfile.BadZipFile):
        return 0


def _label_batch(
    batch: SourceBatch,
    source: Source,
    layout: Layout | None,
    table: LabelsTable | None,
    report: IngestReport,
    skip_bad: bool,
) -> tuple[list[str], np.ndarray, dict[str, list[Any]]]:
    """Check keys, attach layout and CSV labels; drop (or fail on) rows that break either."""
    paths = batch.paths
    bad = list(batch.bad)
    violations = check_keys(paths, source=source.name, skip_bad=skip_bad)
    bad += [BadRow(source.name, str(v)) for v in violations]
    columns, problems = label_columns(paths, layout=layout, table=table, given=batch.labels)
    problems.update({v.index: "" for v in violations})  # reported above, by key
    bad += [BadRow(source.locate(paths[i]), problems[i]) for i in sorted(problems) if problems[i]]
    if bad and not skip_bad:
        more = f" (and {len(bad) - 1} more bad rows; skip_bad skips them)" if len(bad) > 1 else ""
        raise BadInputError(bad[0].source, bad[0].problem + more)
    report.bad.extend(bad)
    if not problems:
        return paths, batch.vectors, columns
    keep = np.ones(len(paths), dtype=bool)
    keep[list(problems)] = False
    columns = {
        name: [v for v, k in zip(values, keep, strict=True) if k]
        for name, values in columns.items()
    }
    return [p for p, k in zip(paths, keep, strict=True) if k], batch.vectors[keep], columns


def _in_categories(
    paths: list[str],
    vectors: np.ndarray,
    labels: dict[str, list[Any]],
    allowed: list[str],
    report: IngestReport,
) -> tuple[list[str], np.ndarray, dict[str, list[Any]]]:
    """Keep the rows whose ``category`` is allowed; count the others in ``report``."""
    if not paths:
        return paths, vectors, labels
    if "category" not in labels:
        msg = "no 'category' label to filter by: give a layout, pattern or CSV that yields one"
        raise BadInputError("categories", msg)
    keep = np.isin(np.asarray(labels["category"], dtype=object), np.asarray(allowed, dtype=object))
    report.outside_categories += int((~keep).sum())
    if keep.all():
        return paths, vectors, labels
    kept = {
        name: [v for v, k in zip(values, keep, strict=True) if k] for name, values in labels.items()
    }
    return [p for p, k in zip(paths, keep, strict=True) if k], vectors[keep], kept


__all__ = ["IngestReport", "ingest"]
