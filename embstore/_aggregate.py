"""Aggregate rows into groups: the mean (and count) per group of labels, as a new store.

``embstore.aggregate("crops.store", "months.store", by=("category", "subject", "age_mo"))``
turns one row per crop into one row per ``(category, subject, age_mo)``: seed 000's
``<category>/<subject>_<age_mo>_month_level_avg.npy`` files, as a store.

The grouped sums are one lazy pass over the rows (dask: per row chunk, a sorted
``np.add.reduceat`` into the groups that chunk holds, float64 accumulators; partials merged in
a tree, so memory stays flat as the rows grow). Rows holding NaN/Inf are left out of the means and
counted per group (``count_nonfinite``); rows missing a grouping label (``""``, or -1 for
``age_mo``) belong to no group and are counted in the report. The new store's rows are the
groups in sorted key order: their labels are the group keys plus ``count`` (rows averaged) and
``count_nonfinite``; ``path`` a readable key (``ball/00270001_12`` by default, or
``path_template``). Its provenance names the source store and version it was computed from.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from dask.delayed import Delayed

from ._version import __version__
from .errors import BadInputError, EmbstoreError
from .keys import key_problem
from .labels import INTEGER_LABELS, MISSING_AGE, MISSING_STR
from .scheduler import dask_scheduler
from .store.layout import FEATURE, SAMPLE, now, row_chunk_for_ingest
from .store.location import Location, StoreLike, parse_location
from .store.loop import writer
from .store.read import open_store
from .store.repo import readonly_group, reads_store, unreadable_as_store_error
from .store.variables import check_fresh
from .store.views import provenance

log = logging.getLogger(__name__)

DEFAULT_BY = ("category", "subject", "age_mo")
#: Aggregation settings that must match for a re-run to continue an existing output store.
DEFINING = ("source", "variable", "by", "min_count", "path_template")
#: Group labels the output adds (integers).
COUNT, COUNT_NONFINITE = "count", "count_nonfinite"


@dataclass
class AggregateReport:
    """What :func:`aggregate` wrote."""

    store: str
    out: str
    source_version: str
    groups: int
    rows: int
    rows_used: int
    rows_missing_labels: int
    rows_nonfinite: int
    groups_below_min_count: int
    added: int

    def summary(self) -> str:
        text = (
            f"{self.groups} groups from {self.rows_used} of {self.rows} rows "
            f"(version {self.source_version[:8]}) -> {self.out} (added {self.added})"
        )
        if self.rows_missing_labels:
            text += f"; {self.rows_missing_labels} rows lack a grouping label (left out)"
        if self.rows_nonfinite:
            text += f"; {self.rows_nonfinite} rows hold NaN/Inf (left out of the means, counted)"
        if self.groups_below_min_count:
            text += f"; {self.groups_below_min_count} groups below min_count dropped"
        return text


@dataclass
class GroupPlan:
    """Which group each row belongs to, decided from labels alone (pure, no data read).

    ``codes[i]`` is row ``i``'s group (-1: a grouping label is missing); ``keys`` has one row
    per group, sorted, with one column per grouping label; ``sizes`` counts rows per group.
    """

    codes: np.ndarray
    keys: pd.DataFrame
    sizes: np.ndarray
    missing: int


def plan_groups(labels: dict[str, np.ndarray]) -> GroupPlan:
    """Group rows by the given label columns; rows missing any of them join no group.

    >>> plan = plan_groups({"category": np.array(["b", "a", "b", ""], dtype=object)})
    >>> plan.codes.tolist(), plan.keys["category"].tolist(), plan.sizes.tolist(), plan.missing
    ([1, 0, 1, -1], ['a', 'b'], [1, 2], 1)
    """
    frame = pd.DataFrame(
        {
            name: pd.Series(values, dtype="int64" if name in INTEGER_LABELS else object)
            for name, values in labels.items()
        }
    )
    present = np.ones(len(frame), dtype=bool)
    for name in frame.columns:
        missing = MISSING_AGE if name in INTEGER_LABELS else MISSING_STR
        present &= (frame[name] != missing).to_numpy()
    grouped = frame[present].groupby(list(frame.columns), sort=True)
    codes = np.full(len(frame), -1, dtype=np.int64)
    codes[present] = grouped.ngroup().to_numpy()
    sizes = grouped.size()
    keys = sizes.index.to_frame(index=False)
    return GroupPlan(codes, keys, sizes.to_numpy(), int((~present).sum()))


def group_paths(keys: pd.DataFrame, template: str | None) -> list[str]:
    """One readable row key per group: ``template`` formatted with the group's labels
    (default: the first label as a folder, the others joined by ``_``: ``ball/00270001_12``).
    Every key must pass the key policy and be unique."""
    by = list(keys.columns)
    template = template or default_template(by)
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    unknown = sorted(fields - set(by))
    if unknown:
        msg = f"{template!r} names {unknown}, which are not grouping labels {by}"
        raise BadInputError("path_template", msg)
    records = keys.to_dict(orient="records")
    paths = [template.format(**{str(k): v for k, v in record.items()}) for record in records]
    for path in paths:
        problem = key_problem(path)
        if problem is not None:
            raise BadInputError("path_template", f"group key {path!r} {problem}")
    if len(set(paths)) != len(paths):
        msg = f"{template!r} gives the same key to several groups: name every label in {by}"
        raise BadInputError("path_template", msg)
    return paths


def default_template(by: Sequence[str]) -> str:
    """``{a}/{b}_{c}`` for ``by=(a, b, c)``; ``{a}`` for one label."""
    head, *rest = by
    return f"{{{head}}}" + (("/" + "_".join(f"{{{name}}}" for name in rest)) if rest else "")


def grouped_sums(source: Any, codes: np.ndarray, groups: int, *, chunk: int) -> Delayed:
    """Lazy float64 sums of the finite rows of ``source`` per group, and finite rows per group.

    ``source`` is any ``(sample, feature)`` array that slices to numpy (a zarr array of the
    store, a numpy array); ``codes`` (numpy) gives each row's group in ``range(groups)``, -1
    for none. One pass in :data:`CHAINS` parallel chains of contiguous ``chunk``-row blocks:
    each step reads one block, sums its rows per group (sort the block's codes,
    ``np.add.reduceat``, float64) and adds them into the chain's dense ``(groups, features +
    1)`` accumulator (finite-row counts last); the chains' accumulators are added at the end.
    A step reads its own block, so nothing is read ahead: memory is ``CHAINS`` accumulators
    plus a block per running task, flat in rows. (flox's map-reduce, on the ``(feature,
    sample)`` layout it needs, measured 5-10x slower here: bench/RESULTS.md.)
    """
    rows, features = source.shape
    steps = [
        (start, min(start + chunk, rows))
        for start in range(0, rows, chunk)
        if (codes[start : start + chunk] >= 0).any()
    ]
    chains: list[Any] = []
    for part in np.array_split(np.arange(len(steps)), min(CHAINS, max(1, len(steps)))):
        accumulator: Any = None
        for k in part:
            start, stop = steps[k]
            accumulator = dask.delayed(_fold)(
                accumulator, source, start, stop, codes[start:stop], groups
            )
        chains.append(accumulator)
    return dask.delayed(_finish)(chains, groups, features)


#: Parallel chains of chunks (each holds one dense accumulator).
CHAINS = 4


def _fold(
    accumulator: np.ndarray | None,
    source: Any,
    start: int,
    stop: int,
    codes: np.ndarray,
    groups: int,
) -> np.ndarray:
    """Read rows ``start:stop`` and add their per-group sums (and, in the last column, the
    count of finite rows) into ``accumulator``: a chain's own array, changed in place."""
    block = np.asarray(source[start:stop])
    if accumulator is None:
        accumulator = np.zeros((groups, block.shape[1] + 1))
    ids, sums, counts = chunk_sums(block, codes)
    accumulator[ids, :-1] += sums  # ids are unique: no clashes
    accumulator[ids, -1] += counts
    return accumulator


def _finish(
    chains: list[np.ndarray | None], groups: int, features: int
) -> tuple[np.ndarray, np.ndarray]:
    total = np.zeros((groups, features + 1))
    for accumulator in chains:
        if accumulator is not None:
            total += accumulator
    return total[:, :-1], np.rint(total[:, -1]).astype(np.int64)


def chunk_sums(block: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group of one row chunk: the group ids (sorted), the float64 sums of its finite
    rows and their count. Rows with code -1 or holding NaN/Inf are left out.

    >>> ids, sums, counts = chunk_sums(np.array([[1.0], [2.0], [np.nan], [4.0]]),
    ...                                np.array([1, 0, 1, 1]))
    >>> ids.tolist(), sums.ravel().tolist(), counts.tolist()
    ([0, 1], [2.0, 5.0], [1, 2])
    """
    rows = np.flatnonzero((codes >= 0) & np.isfinite(block).all(axis=1))
    order = np.argsort(codes[rows], kind="stable")
    rows = rows[order]
    sorted_codes = codes[rows]
    if not len(rows):
        return sorted_codes, np.zeros((0, block.shape[1])), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    sums = np.add.reduceat(block[rows].astype(np.float64), starts, axis=0)  # one gather
    counts = np.diff(np.r_[starts, len(rows)])
    return sorted_codes[starts], sums, counts


@reads_store
def aggregate(
    store: StoreLike,
    out: StoreLike,
    *,
    by: Sequence[str] = DEFAULT_BY,
    variable: str = "embedding",
    min_count: int = 1,
    path_template: str | None = None,
    version: str | None = None,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    allow_stale: bool = False,
) -> AggregateReport:
    """Write the mean of ``variable`` per group of ``by`` labels into a new store ``out``.

    Parameters
    ----------
    store, version
        The source store and its version (default: the newest).
    out
        The new store; rows are the groups. Re-running with the same settings on the same
        source version continues (or confirms) it; other settings are refused.
    by
        Grouping labels (default ``category, subject, age_mo``).
    variable
        A ``(sample, feature)`` variable of ``store`` (``embedding``, ``normalized``...).
    min_count
        Groups with fewer finite rows are left out (counted in the report).
    path_template
        The output rows' keys, a format string over ``by`` (default ``{category}/{subject}_
        {age_mo}``); ``{category}/{subject}_{age_mo}_month_level_avg`` makes ``export
        --format npy-tree`` write seed 000's file names.
    scheduler
        dask scheduler for the one pass over the rows (``local:N``, an address; as normalize).
    progress
        Called with ``(groups_written, groups)`` as the output is committed.
    allow_stale
        Use a stale derived variable (its inputs changed since it was computed) as it is;
        by default it is refused (:class:`~embstore.errors.StaleVariableError`).

    Examples
    --------
    >>> report = embstore.aggregate("bv.store", "months.store", by=["subject", "age_mo"])
    >>> report.groups, report.rows_used
    (12, 24)
    >>> months = embstore.open("months.store")  # one row per subject and month
    >>> months.path.values[:2].tolist(), months["count"].values[:2].tolist()
    (['00270001/12', '00270001/13'], [2, 2])
    """
    by = list(by)
    if _same_store(parse_location(store), parse_location(out)):
        raise BadInputError(str(out), "the output must be a new store, not the source")
    if min_count < 1:
        raise BadInputError("min_count", f"must be at least 1, got {min_count}")
    ds = open_store(store, version=version)
    _check_inputs(ds, by, variable)
    check_fresh(ds, variable, allow_stale=allow_stale, store=store)
    plan = plan_groups({name: np.asarray(ds[name].values) for name in by})
    if not len(plan.keys):
        raise EmbstoreError(f"{store}: no row has every label of {by}")
    source_version = str(ds.encoding.get("embstore_version_id", ""))
    _, _, group = readonly_group(store, version=source_version or version)  # the same version
    with unreadable_as_store_error(str(store)):
        source = group[variable]
    assert isinstance(source, zarr.Array)
    lazy = grouped_sums(source, plan.codes, len(plan.keys), chunk=int(source.chunks[0]))
    with dask_scheduler(scheduler), unreadable_as_store_error(str(store)):
        sums, counts = lazy.compute()
    keep = counts >= min_count
    means = sums[keep] / counts[keep][:, None]
    paths = group_paths(plan.keys[keep], path_template)
    record: dict[str, Any] = {
        "source": {"store": str(parse_location(store)), "version": source_version},
        "variable": variable,
        "by": by,
        "min_count": min_count,
        "path_template": path_template or default_template(by),
        "statistic": "mean of the finite rows per group, float64 accumulators (flox)",
        "rows": int(ds.sizes[SAMPLE]),
        "rows_used": int(counts.sum()),
        "rows_missing_labels": plan.missing,
        "rows_nonfinite": int(plan.sizes.sum() - counts.sum()),
        "groups": int(keep.sum()),
        "groups_below_min_count": int((~keep).sum()),
        "time": now(),
        "embstore_version": __version__,
    }
    added = _write_groups(out, ds, record, paths, means, plan, keep, counts, progress)
    report = AggregateReport(
        store=str(store),
        out=str(out),
        source_version=source_version,
        groups=record["groups"],
        rows=record["rows"],
        rows_used=record["rows_used"],
        rows_missing_labels=plan.missing,
        rows_nonfinite=record["rows_nonfinite"],
        groups_below_min_count=record["groups_below_min_count"],
        added=added,
    )
    log.info("%s", report.summary())
    return report


def _same_store(a: Location, b: Location) -> bool:
    if a.path is not None and b.path is not None:
        return a.path.resolve() == b.path.resolve()
    return (a.bucket, a.prefix) == (b.bucket, b.prefix)


def _check_inputs(ds: xr.Dataset, by: list[str], variable: str) -> None:
    if not by:
        raise BadInputError("by", "name at least one label to group by")
    if variable not in ds.data_vars or ds[variable].dims != (SAMPLE, FEATURE):
        have = sorted(str(n) for n, v in ds.data_vars.items() if v.dims == (SAMPLE, FEATURE))
        raise BadInputError("variable", f"{variable!r} is not a (sample, feature) variable {have}")
    labels = [str(n) for n, c in ds.coords.items() if c.dims == (SAMPLE,)]
    unknown = [name for name in by if name not in labels or name in ("path", "nonfinite")]
    if unknown:
        raise BadInputError("by", f"{unknown} are not labels of the store (have: {labels})")


def _write_groups(
    out: StoreLike,
    ds: xr.Dataset,
    record: dict[str, Any],
    paths: list[str],
    means: np.ndarray,
    plan: GroupPlan,
    keep: np.ndarray,
    counts: np.ndarray,
    progress: Callable[[int, int], None] | None,
) -> int:
    """Commit the groups as rows of ``out`` through the store's writer (exactly once)."""
    keys = plan.keys[keep]
    labels: dict[str, Any] = {name: keys[name].tolist() for name in keys.columns}
    labels[COUNT] = counts[keep].tolist()
    labels[COUNT_NONFINITE] = (plan.sizes[keep] - counts[keep]).tolist()
    model = provenance(ds).get("model")
    info = {"source": record["source"], "by": record["by"], "variable": record["variable"]}
    # One commit (the means are in memory already; each commit is a version and costs time:
    # 35K groups in 9 chunk-sized commits took 2.6 s); a new store's chunk fits its groups.
    with writer(
        out,
        feature_size=means.shape[1],
        model=model,
        action="aggregate",
        info=info,
        batch_rows=len(paths),
        row_chunk=row_chunk_for_ingest(means.shape[1], len(paths)),
    ) as w:
        w.claim("aggregate", record, defining=DEFINING)
        w.append(paths, means, labels=labels)
    if progress is not None:
        progress(len(paths), len(paths))
    return w.report.added


__all__ = ["AggregateReport", "GroupPlan", "aggregate", "group_paths", "plan_groups"]
