"""Exact nearest neighbours over a store's rows, one row chunk at a time (memory flat in N).

For each block of rows (whole row chunks of the store, grouped up to :data:`BLOCK_BYTES`) the
scores against every query are one float32 BLAS matrix product, merged into a running top-k
per query, so memory holds a few blocks plus ``queries x (k + block)`` scores whatever the
store's size. Blocks are read by :data:`READ_THREADS` threads, several ahead of the products
(reading and BLAS both release the GIL). Torch runs the products only when asked
(``device="cuda"``/``"cpu"``) or, with ``device=None``, when torch is already imported and
sees a GPU: importing torch just to ask costs ~2 s. An approximate index for interactive
single queries is :func:`embstore.build_index` (:mod:`embstore._ann`).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask.array as da
import dask.local
import numpy as np
import pandas as pd
import xarray as xr

from .errors import EmbstoreError
from .store import SAMPLE
from .store.lazy import stored_source
from .store.location import StoreLike
from .store.variables import check_fresh
from .store.views import label_mask

log = logging.getLogger(__name__)

METRICS = ("cosine", "dot", "euclidean")
#: Bytes of float32 rows scored at once: whole row chunks of the store are grouped up to this
#: size (fewer numpy calls and reads per row), and an in-memory array is cut into blocks of it.
#: Below glibc's largest mmap threshold (32 MiB), so freed blocks are reused: each larger one
#: is fresh pages, and first-touching them cost more than reading them (300,000 x 1024: reading
#: in 64 MiB blocks 1.3-1.7 s and ~160,000 page faults, in 16 MiB blocks 0.7 s and ~1,000).
BLOCK_BYTES = 16 << 20
#: Threads reading blocks (each several chunks) ahead of the products.
READ_THREADS = max(2, min(8, os.cpu_count() or 2))


def neighbors(
    ds: xr.Dataset | StoreLike,
    query: np.ndarray | str | Sequence[str],
    *,
    k: int = 10,
    metric: str = "cosine",
    variable: str = "embedding",
    where: Mapping[str, Any] | np.ndarray | xr.DataArray | None = None,
    exclude_same_subject: bool = False,
    device: str | None = None,
    approximate: bool = False,
    nprobe: int | None = None,
    allow_stale: bool = False,
) -> pd.DataFrame:
    """The ``k`` rows nearest to each query, exactly (or approximately), as a tidy table.

    Parameters
    ----------
    ds
        A dataset from :func:`embstore.open` (or a store path, opened here).
    query
        Row paths (a string or a list of them) or vectors (``(features,)`` or
        ``(queries, features)``). A path query never returns its own row.
    k
        Neighbours per query.
    metric
        ``"cosine"`` (similarity, higher is nearer), ``"dot"`` (higher is nearer) or
        ``"euclidean"`` (distance, lower is nearer).
    variable
        The ``(sample, feature)`` variable searched, e.g. ``"normalized"``.
    where
        Rows allowed as neighbours: label criteria as in ``ds.emb.rows`` (``{"category":
        ["ball"], "age_mo": slice(12, 18)}``) or a boolean mask over ``sample``.
    exclude_same_subject
        Leave out rows of the query's own subject (path queries only).
    device
        ``"cuda"``/``"cpu"`` runs the products with torch there; ``"numpy"`` with numpy.
        Default: numpy, or torch on CUDA when torch is already imported and sees a GPU
        (torch is never imported only to ask).
    approximate
        Search the store's approximate index (:func:`embstore.build_index`; needs faiss)
        instead of every row: milliseconds per query once loaded (each process loads it
        once), recall@10 >= 0.95 on clustered data at the default ``nprobe``. An index that
        is missing or stale (rows appended, the variable rewritten) is an error.
    nprobe
        Lists an approximate search scans (default: the one recorded by ``build_index``).

    Returns
    -------
    pandas.DataFrame
        One row per (query, rank): ``query`` (the path, or the vector's index), ``rank``
        (1 = nearest), ``path``, ``score``, then every label of the neighbour. Non-finite rows
        are never returned; a query gets fewer than ``k`` rows if fewer are allowed.
    allow_stale
        Use a stale derived variable (its inputs changed since it was computed) as it is;
        by default it is refused (:class:`~embstore.errors.StaleVariableError`).

    Examples
    --------
    >>> ds = embstore.open("bv.store")
    >>> table = embstore.neighbors(ds, "ball/00270001_12_month_level_avg.npy", k=5,
    ...                            exclude_same_subject=True)
    >>> table["rank"].tolist(), "00270001" in set(table["subject"])
    ([1, 2, 3, 4, 5], False)
    """
    if not isinstance(ds, xr.Dataset):
        from .store import open_store

        ds = open_store(ds)
    check_fresh(ds, variable, allow_stale=allow_stale)
    if metric not in METRICS:
        raise EmbstoreError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if k < 1:
        raise EmbstoreError(f"k must be at least 1, got {k}")
    data = _variable(ds, variable)
    vectors, names, query_rows = _queries(ds, data, query)
    allowed = _allowed_rows(ds, where)
    subjects = _subject_codes(ds, query_rows) if exclude_same_subject else None
    queries = _prepare_queries(vectors, metric)
    if approximate:
        found = _approximate(
            ds, variable, queries, k, metric, allowed, query_rows, subjects, nprobe
        )
        return _table(ds, names, *found, metric)
    search = _backend(device)(queries, k, metric)
    for start, block in _blocks(data, allowed):
        stop = start + len(block)
        banned = None  # (query, row) pairs left out: the query's own row, its subject's rows
        if query_rows is not None:
            banned = np.arange(start, stop)[None, :] == query_rows[:, None]
        if subjects is not None:
            codes, query_codes = subjects
            banned = banned | (codes[None, start:stop] == query_codes[:, None])
        search.update(block, start, ~allowed[start:stop], banned)
    scores, rows = search.result()
    return _table(ds, names, scores, rows, metric)


def _approximate(
    ds: xr.Dataset,
    variable: str,
    queries: np.ndarray,
    k: int,
    metric: str,
    allowed: np.ndarray,
    query_rows: np.ndarray | None,
    subjects: tuple[np.ndarray, np.ndarray] | None,
    nprobe: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` from the approximate index, the query's own row (and subject) left out."""
    from ._ann import load_index, search

    store = ds.encoding.get("embstore_store")
    if store is None:
        raise EmbstoreError("approximate search needs a dataset from embstore.open (or a path)")
    index = load_index(ds, store, variable, metric)
    extra = 0 if query_rows is None else 1
    if subjects is not None:  # ask for enough to drop the subject's own rows afterwards
        codes, query_codes = subjects
        extra += int(np.bincount(codes)[query_codes].max())
    scores, rows = search(index, queries, k + extra, metric, allowed, nprobe)
    keep = rows >= 0
    if query_rows is not None:
        keep &= rows != query_rows[:, None]
    if subjects is not None:
        keep &= codes[np.maximum(rows, 0)] != query_codes[:, None]
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept ones first, in score order
    scores = np.where(keep, scores, -np.inf)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def _variable(ds: xr.Dataset, variable: str) -> xr.DataArray:
    if variable not in ds.data_vars or ds[variable].ndim != 2 or ds[variable].dims[0] != SAMPLE:
        have = [str(n) for n, v in ds.data_vars.items() if v.ndim == 2 and v.dims[0] == SAMPLE]
        raise EmbstoreError(f"no (sample, feature) variable {variable!r} (have: {', '.join(have)})")
    return ds[variable]


def _queries(
    ds: xr.Dataset, data: xr.DataArray, query: Any
) -> tuple[np.ndarray, list[Any], np.ndarray | None]:
    """Query vectors, their names, and their row numbers (path queries) or ``None``."""
    if isinstance(query, str) or (
        isinstance(query, Sequence) and query and all(isinstance(q, str) for q in query)
    ):
        paths = [query] if isinstance(query, str) else list(query)
        rows = _rows_of(ds, paths)
        vectors = np.asarray(data.isel({SAMPLE: rows}).values, dtype=np.float32)
        bad = [p for p, v in zip(paths, vectors, strict=True) if not np.isfinite(v).all()]
        if bad:
            raise EmbstoreError(f"query row(s) hold NaN/Inf in {data.name!r}: {', '.join(bad[:5])}")
        return vectors, paths, rows
    vectors = np.asarray(query, dtype=np.float32)
    vectors = vectors[None, :] if vectors.ndim == 1 else vectors
    if vectors.ndim != 2 or vectors.shape[1] != data.shape[1] or len(vectors) == 0:
        msg = f"query vectors must be (queries, {data.shape[1]}), got {np.shape(query)}"
        raise EmbstoreError(msg)
    if not np.isfinite(vectors).all():
        raise EmbstoreError("query vectors hold NaN/Inf")
    return vectors, list(range(len(vectors))), None


def _rows_of(ds: xr.Dataset, paths: list[str]) -> np.ndarray:
    """Row numbers of ``paths``; unknown paths are an error naming them."""
    index = pd.Index(np.asarray(ds["path"].values, dtype=object))
    rows = index.get_indexer(paths)
    missing = [p for p, r in zip(paths, rows, strict=True) if r < 0]
    if missing:
        raise EmbstoreError(f"path(s) not in the store: {', '.join(missing[:5])}")
    return rows


def _allowed_rows(ds: xr.Dataset, where: Any) -> np.ndarray:
    """Rows that may be returned: the ``where`` selection minus rows flagged non-finite."""
    n = ds.sizes[SAMPLE]
    if where is None:
        allowed = np.ones(n, dtype=bool)
    elif isinstance(where, Mapping):
        allowed = label_mask(ds, where)
    else:
        allowed = np.asarray(where.values if isinstance(where, xr.DataArray) else where, bool)
        if allowed.shape != (n,):
            raise EmbstoreError(f"where must be a boolean mask of {n} rows, got {allowed.shape}")
    if "nonfinite" in ds.coords:
        allowed = allowed & ~np.asarray(ds["nonfinite"].values, dtype=bool)
    return allowed


def _subject_codes(ds: xr.Dataset, query_rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if query_rows is None:
        raise EmbstoreError("exclude_same_subject needs path queries (vectors have no subject)")
    if "subject" not in ds.coords:
        raise EmbstoreError("exclude_same_subject needs a 'subject' label; the store has none")
    codes, _ = pd.factorize(np.asarray(ds["subject"].values, dtype=object))
    return codes, codes[query_rows]


def _prepare_queries(vectors: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1, norms)
    return vectors


def _blocks(data: xr.DataArray, allowed: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(first_row, block)`` for each block holding an allowed row, read ahead in threads."""
    array = data.data
    row_bytes = max(4, array.dtype.itemsize) * max(1, math.prod(array.shape[1:]))
    limit = max(1, BLOCK_BYTES // row_bytes)  # rows, as read (float64 stays float64 until scored)
    sizes = array.chunks[0] if isinstance(array, da.Array) else None
    if sizes is None:
        full, rest = divmod(len(allowed), limit)
        sizes = (limit,) * full + ((rest,) if rest else ())
    starts = np.cumsum([0, *sizes[:-1]])
    wanted: list[tuple[int, int]] = []
    for start, size in zip(starts.tolist(), sizes, strict=True):
        if not allowed[start : start + size].any():
            continue  # no allowed row: never read
        if wanted and wanted[-1][1] == start and wanted[-1][1] - wanted[-1][0] + size <= limit:
            wanted[-1] = (wanted[-1][0], start + size)
        else:
            wanted.append((start, start + size))

    source = stored_source(array) if isinstance(array, da.Array) else None

    def read(span: tuple[int, int]) -> np.ndarray:
        if source is not None:  # one read of the block's stored chunks, straight into it
            return np.asarray(source[span[0] : span[1]], dtype=np.float32)
        block = array[span[0] : span[1]]
        if isinstance(block, da.Array):  # these threads are the parallelism: no dask pool
            block = block.compute(scheduler=dask.local.get_sync)
        return np.asarray(block, dtype=np.float32)

    # READ_THREADS blocks in flight while one is scored (reads and BLAS release the GIL)
    with ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="embstore-read") as pool:
        pending = deque(pool.submit(read, span) for span in wanted[:READ_THREADS])
        for i, span in enumerate(wanted):
            block = pending.popleft().result()
            if i + READ_THREADS < len(wanted):
                pending.append(pool.submit(read, wanted[i + READ_THREADS]))
            yield span[0], block


class _NumpyTopK:
    """Running top-k per query with numpy: each block's own top-k (``argpartition``), merged."""

    def __init__(self, queries: np.ndarray, k: int, metric: str) -> None:
        self.q, self.k, self.metric = queries, k, metric
        self.q_sq = (queries.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)
        self.best = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        self.rows = np.zeros((len(queries), 0), dtype=np.int64)

    def update(
        self, block: np.ndarray, start: int, skip: np.ndarray, banned: np.ndarray | None
    ) -> None:
        """Score ``block`` (rows ``start...``) but ``skip`` rows and ``banned`` pairs."""
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows: skipped below
            sq = np.einsum("ij,ij->i", block, block)
            skip = skip | ~np.isfinite(sq)
            scores = self.q @ block.T
            if self.metric == "cosine":
                scores /= np.sqrt(np.where(skip | (sq == 0), 1, sq))
            elif self.metric == "euclidean":  # larger is nearer: minus the squared distance
                scores = 2 * scores - sq - self.q_sq[:, None]
        if skip.any():
            scores[:, skip] = -np.inf
        if banned is not None:
            scores[banned] = -np.inf
        if self.best.shape[1] < self.k:
            self.best, self.rows = self._merged(scores, start, self.best, self.rows)
            return
        # only scores above a query's k-th best so far can enter (one comparison, cheaper
        # than partitioning every query's scores): few of them are merged by one sort
        hit_q, hit_r = np.nonzero(scores > self.best.min(axis=1)[:, None])
        if len(hit_q) == 0:
            return
        if len(hit_q) > len(scores) * 4 * self.k:  # many: partition the rows that have some
            live = np.unique(hit_q)
            found = self._merged(scores[live], start, self.best[live], self.rows[live])
            self.best[live], self.rows[live] = found
            return
        n, k = self.best.shape
        cand = np.concatenate([self.best.ravel(), scores[hit_q, hit_r]])
        query = np.concatenate([np.repeat(np.arange(n), k), hit_q])
        rows = np.concatenate([self.rows.ravel(), hit_r + start])
        order = np.lexsort((-cand, query))  # by query, best first; ties keep earlier rows
        first = np.searchsorted(query[order], np.arange(n))
        picked = order[first[:, None] + np.arange(k)[None, :]]  # each query has >= k
        self.best, self.rows = cand[picked], rows[picked]

    def _merged(
        self, scores: np.ndarray, start: int, best: np.ndarray, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best of ``best`` and the block's ``scores`` (rows ``start...``)."""
        k = min(self.k, scores.shape[1])
        top = np.argpartition(scores, -k, axis=1)[:, -k:]
        cand = np.concatenate([best, np.take_along_axis(scores, top, 1)], axis=1)
        rows = np.concatenate([rows, top + start], axis=1)
        if cand.shape[1] > self.k:
            keep = np.argpartition(cand, -self.k, axis=1)[:, -self.k :]
            cand, rows = np.take_along_axis(cand, keep, 1), np.take_along_axis(rows, keep, 1)
        return cand, rows

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(-self.best, axis=1, kind="stable")
        return np.take_along_axis(self.best, order, 1), np.take_along_axis(self.rows, order, 1)


class _TorchTopK:
    """The same running top-k with torch (``topk``) on ``device``."""

    def __init__(self, queries: np.ndarray, k: int, metric: str, device: str) -> None:
        import torch

        self.torch, self.device, self.k, self.metric = torch, device, k, metric
        self.q = torch.from_numpy(queries).to(device)
        self.q_sq = (self.q.double() ** 2).sum(dim=1).float()
        self.best = torch.full((len(queries), 0), -torch.inf, device=device)
        self.rows = torch.zeros((len(queries), 0), dtype=torch.int64, device=device)

    def update(
        self, block: np.ndarray, start: int, skip: np.ndarray, banned: np.ndarray | None
    ) -> None:
        torch = self.torch
        b = torch.from_numpy(block).to(self.device, non_blocking=True)
        sq = (b * b).sum(dim=1)
        skipped = torch.from_numpy(skip).to(self.device) | ~sq.isfinite()
        scores = self.q @ b.T
        if self.metric == "cosine":
            scores /= torch.where(skipped | (sq == 0), 1, sq).sqrt()
        elif self.metric == "euclidean":
            scores = 2 * scores - sq - self.q_sq[:, None]
        scores.masked_fill_(skipped[None, :], -torch.inf)
        if banned is not None:
            scores.masked_fill_(torch.from_numpy(banned).to(self.device), -torch.inf)
        local = scores.topk(min(self.k, scores.shape[1]), dim=1)
        cand = torch.cat([self.best, local.values], 1)
        rows = torch.cat([self.rows, local.indices + start], 1)
        top = cand.topk(min(self.k, cand.shape[1]), dim=1)
        self.best, self.rows = top.values, rows.gather(1, top.indices)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.best.cpu().numpy(), self.rows.cpu().numpy()  # topk returns them sorted


def _backend(device: str | None) -> Any:
    if device == "numpy":
        return _NumpyTopK
    if device is None:
        torch = sys.modules.get("torch")  # never imported only to ask whether CUDA exists
        if torch is None or not torch.cuda.is_available():
            return _NumpyTopK
        device = "cuda"
    return lambda q, k, metric: _TorchTopK(q, k, metric, device)


def _table(
    ds: xr.Dataset, names: list[Any], scores: np.ndarray, rows: np.ndarray, metric: str
) -> pd.DataFrame:
    found = np.isfinite(scores)
    query_idx, rank_idx = np.nonzero(found)
    hit_rows = rows[found]
    score = scores[found].astype(np.float64)
    if metric == "euclidean":
        score = np.sqrt(np.maximum(-score, 0))
    table = pd.DataFrame(
        {
            "query": pd.Series([names[i] for i in query_idx], dtype=object),
            "rank": rank_idx + 1,
            "path": np.asarray(ds["path"].values, dtype=object)[hit_rows],
            "score": score,
        }
    )
    labels = [
        n for n, c in ds.coords.items() if c.dims == (SAMPLE,) and n not in ("path", "nonfinite")
    ]
    for name in sorted(map(str, labels)):  # the same columns whatever order the store keeps
        table[name] = np.asarray(ds[name].values)[hit_rows]
    return table
