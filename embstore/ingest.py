"""Ingest: sources in any format of ``embstore.formats`` -> labelled rows -> the store."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import zipfile
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .constants import DEFAULT_BATCH_ROWS
from .errors import BadInputError, EmbstoreError
from .formats import open_source
from .formats.base import BadRow, Source, SourceBatch
from .formats.pt import PtDictSource
from .keys import check_keys
from .labels import Layout, get_layout, read_categories
from .labels_csv import LabelsTable, label_columns, read_labels_csv
from .store import AppendResult, StoreWriter, is_store

log = logging.getLogger(__name__)

#: Batches that may wait for their commit while the next ones are read.
COMMITS_IN_FLIGHT = 2
#: How many bad rows and non-finite paths the provenance log keeps (the report keeps all).
PROVENANCE_LIST_LIMIT = 100

ProgressCallback = Callable[[int, int], None]


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

    def summary(self) -> str:
        parts = [f"added {self.rows_added} rows", f"store has {self.rows}"]
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
    store: str | os.PathLike[str],
    layout: str | Layout | None = None,
    pattern: str | None = None,
    labels_csv: str | os.PathLike[str] | None = None,
    labels_key: str = "path",
    categories: str | os.PathLike[str] | Sequence[str] | None = None,
    skip_bad: bool = False,
    on_duplicate: str = "skip",
    model: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    row_chunk: int | None = None,
    jobs: int = 1,
    progress: ProgressCallback | None = None,
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
    layout, pattern
        How labels are read from each path: ``"babyview"``, ``"mimic-echo"``, or a regex whose
        named groups become labels (``age_mo`` is parsed as an integer).
    labels_csv, labels_key
        A CSV whose ``labels_key`` column holds paths; its other columns become labels.
        Without a layout, pattern or CSV no labels are derived (a warning says so); add them
        later with :func:`embstore.relabel.label`.
    categories
        An allow-list (a file with one category per line, ``#`` comments allowed, or the
        names): only rows whose ``category`` label is listed are ingested; the others are
        counted in the report (``outside_categories``).
    skip_bad
        By default the first bad row (unreadable, wrong shape or dtype, a key that breaks the
        path policy, unparseable path, no CSV row) fails the command and nothing of its batch
        is committed. With ``skip_bad`` every bad row is skipped and listed in the report and
        the store's provenance.
    on_duplicate
        ``"skip"`` rows whose path is already stored, or ``"error"``.
    batch_rows
        Rows per commit. A crash loses at most the batch in flight; re-running the same
        ingest completes the store with no row lost or duplicated.
    jobs
        Processes that load ``.pt`` files at once when every source is a ``.pt`` file
        (unpickling is single-threaded Python; each process commits into the same store under
        its lock). Default 1: a worker costs ~3 s of imports, so this pays off for many files on
        many cores (10 per-folder files on a 16-core node), not for two files on two cores.
    progress
        Called with ``(rows_done, rows_total)`` after each batch (after each file when
        ``.pt`` files load in parallel).

    Examples
    --------
    >>> report = embstore.ingest(["emb/"], store="bv.zarr", layout="babyview")  # doctest: +SKIP
    >>> report.summary()                                                        # doctest: +SKIP
    'added 34550 rows, store has 34550'
    """
    options = {
        "store": store,
        "layout": layout,
        "pattern": pattern,
        "labels_csv": labels_csv,
        "labels_key": labels_key,
        "categories": categories,
        "skip_bad": skip_bad,
        "on_duplicate": on_duplicate,
        "model": model,
        "batch_rows": batch_rows,
        "row_chunk": row_chunk,
    }
    files = [Path(s) for s in sources]
    if (
        jobs > 1
        and len(files) > 1
        and all(f.is_file() and f.suffix.lower() in (".pt", ".pth") for f in files)
    ):
        return _ingest_pt_files_in_parallel(files, jobs, options, progress)
    resolved = get_layout(layout, pattern=pattern)
    table = read_labels_csv(labels_csv, key=labels_key, layout=resolved) if labels_csv else None
    allowed = read_categories(categories) if categories is not None else None
    opened = [open_source(s) for s in sources]
    unlabelled = (
        resolved is None
        and table is None
        and not any(getattr(s, "label_names", ()) for s in opened)
    )
    sized = [s for s in opened if not isinstance(s, PtDictSource)]  # a .pt's size costs a load
    remaining = sum(len(s) for s in sized)
    writer = StoreWriter(store, on_duplicate=on_duplicate) if is_store(store) else None
    report = IngestReport(store=str(store), rows=writer.rows if writer else 0)
    run_info = {
        "sources": [s.name for s in opened],
        "layout": resolved.pattern
        if resolved and resolved.name == "pattern"
        else (resolved.name if resolved else None),
        "labels_csv": str(labels_csv) if labels_csv else None,
        "categories": allowed,
    }
    if writer is not None:
        writer.start_run("ingest", **run_info)
    done = skipped = 0  # progress leaves out rows stored by an earlier run: its rate is this run's

    def already_stored(path: str) -> bool:  # sees ``writer`` once it is created below
        return writer is not None and on_duplicate == "skip" and writer.contains(path)

    # Commits run in order on one background thread, overlapping the reading of the next
    # batches (file writes release the GIL); at most COMMITS_IN_FLIGHT batches wait, so memory
    # stays bounded.
    committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embstore-commit")
    pending: deque[Future[AppendResult]] = deque()

    def collect(keep: int = 0) -> None:
        while len(pending) > keep:
            result = pending.popleft().result()
            report.rows_added += result.added
            report.already_stored += len(result.duplicates)
            report.nonfinite.extend(result.nonfinite)
            report.rows = result.rows

    try:
        for source in opened:
            remaining -= len(source) if source in sized else 0
            # len() loads a .pt now, as it is about to be read
            total = done + skipped + len(source) + remaining
            for batch in source.batches(
                batch_rows=batch_rows,
                feature_size=writer.feature_size if writer else None,
                skip=already_stored,
            ):
                done += len(batch.paths) + len(batch.bad)
                skipped += batch.skipped
                report.already_stored += batch.skipped
                paths, vectors, labels = _label_batch(
                    batch, source, resolved, table, report, skip_bad
                )
                if allowed is not None:
                    paths, vectors, labels = _in_categories(paths, vectors, labels, allowed, report)
                if writer is None and len(paths):
                    writer = StoreWriter(
                        store,
                        feature_size=vectors.shape[1],
                        model=model,
                        on_duplicate=on_duplicate,
                        row_chunk=row_chunk,
                    )
                    writer.start_run("ingest", **run_info)
                collect(keep=COMMITS_IN_FLIGHT - 1)
                if writer is not None and len(paths):
                    pending.append(committer.submit(writer.append, paths, vectors, labels))
                if progress is not None:
                    progress(done, total - skipped)
        collect()
    except BaseException as exc:
        with contextlib.suppress(BaseException):
            collect()  # a good batch in flight is still committed
        committer.shutdown()
        if writer is not None:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            writer.finish_run(status, error=str(exc) or type(exc).__name__)
        raise
    committer.shutdown()
    if writer is not None:
        writer.finish_run(
            "complete",
            bad_count=len(report.bad),
            bad=[str(b) for b in report.bad[:PROVENANCE_LIST_LIMIT]],
            nonfinite_count=len(report.nonfinite),
            outside_categories=report.outside_categories,
        )
        report.rows = writer.rows
    for row in report.bad:
        log.warning("skipped %s", row)
    if unlabelled and report.rows_added:
        log.warning(
            "%s: no labels derived (no layout, pattern or labels CSV); add them with "
            "embstore.label / `embstore label`",
            store,
        )
    return report


def _ingest_pt_files_in_parallel(
    files: list[Path], workers: int, options: dict[str, Any], progress: ProgressCallback | None
) -> IngestReport:
    """One ``ingest`` per file in worker processes, all committing into the same store.

    Every file is ingested even if another fails; the first failure is raised at the end
    (nothing of its failing batch was committed, as in a sequential ingest).
    """
    get_layout(options["layout"], pattern=options["pattern"])  # fail fast on a bad layout
    total = sum(_pt_entries(f) for f in files)
    report = IngestReport(store=str(options["store"]))
    errors: list[BaseException] = []
    context = multiprocessing.get_context("spawn")  # no fork of a process running zarr threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(ingest, [f], jobs=1, **options) for f in files]
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
            if progress is not None:
                done = report.rows_added + len(report.bad)  # rows stored earlier left out
                progress(done, total - report.already_stored)
    if errors:
        raise errors[0]
    report.rows = StoreWriter(options["store"]).rows
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
        more = f" (and {len(bad) - 1} more bad rows; --skip-bad skips them)" if len(bad) > 1 else ""
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


__all__ = ["DEFAULT_BATCH_ROWS", "IngestReport", "ingest"]
