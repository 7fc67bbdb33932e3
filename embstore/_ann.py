"""Approximate nearest neighbours for interactive single queries (faiss IVF, optional).

:func:`build_index` trains an inverted-file index (``faiss.IndexIVFFlat``: k-means
centroids, each row assigned to its nearest one) over a ``(sample, feature)`` variable and
keeps the *centroids and the assignment* in the store as one version
(:mod:`embstore.store.attachments`), with a digest of the inputs: the variable's shape, dtype
and provenance and a few rows' bytes. The vectors are not copied: loading the index reads
the variable (as an exact search does) and adds the rows to their stored lists without
assigning them again. Each process loads an index once and keeps it (keyed by store, version
and digest), so later queries cost only the scan of ``nprobe`` lists (milliseconds).

An index whose digest no longer matches the variable (rows appended, ``normalize`` run
again, a version restored) is stale: :func:`embstore.neighbors` with ``approximate=True``
refuses it until :func:`build_index` runs again.

Needs ``faiss-cpu`` (``pip install 'embstore[ann]'``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from .errors import EmbstoreError
from .store import SAMPLE, open_store
from .store.attachments import read_attachment, write_attachment
from .store.layout import now
from .store.location import StoreLike
from .store.variables import check_fresh

log = logging.getLogger(__name__)

#: Metrics an index serves and the faiss metric it is built with (cosine: normalized rows).
ANN_METRICS = ("cosine", "dot", "euclidean")
#: Rows k-means trains on per centroid (faiss's default is 256; 64 keeps training quick).
TRAIN_ROWS_PER_LIST = 64
_LOADED: dict[tuple[str, str, str], Any] = {}
_LOCK = threading.Lock()


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        msg = "approximate search needs faiss: pip install 'embstore[ann]' (faiss-cpu)"
        raise EmbstoreError(msg) from exc
    return faiss


@dataclass
class IndexReport:
    """What :func:`build_index` built."""

    store: str
    variable: str
    metric: str
    rows: int
    lists: int
    nprobe: int
    seconds: float

    def summary(self) -> str:
        return (
            f"indexed {self.rows} rows of {self.variable!r} ({self.metric}, {self.lists} lists, "
            f"nprobe {self.nprobe}) in {self.seconds:.1f} s"
        )


def attachment_name(variable: str, metric: str) -> str:
    return f"ann-{variable}-{metric}"


def inputs_digest(ds: xr.Dataset, variable: str) -> str:
    """A digest of what an index over ``ds[variable]`` depends on: shape, dtype, the
    variable's provenance and the bytes of its first, middle and last rows (three chunks)."""
    data = ds[variable]
    n = int(data.shape[0])
    picks = sorted({0, n // 2, max(0, n - 1)}) if n else []
    sample = np.asarray(data.isel({SAMPLE: picks}).values, dtype=np.float32)
    h = hashlib.sha256()
    meta = {"variable": variable, "shape": list(data.shape), "dtype": str(data.dtype)}
    h.update(json.dumps(meta, sort_keys=True).encode())
    h.update(json.dumps({str(k): str(v) for k, v in data.attrs.items()}, sort_keys=True).encode())
    h.update(sample.tobytes())
    return h.hexdigest()


def build_index(
    store: StoreLike,
    *,
    variable: str = "embedding",
    metric: str = "cosine",
    lists: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    allow_stale: bool = False,
) -> IndexReport:
    """Build an approximate (IVF) index over ``variable`` and record it as a version.

    Parameters
    ----------
    store
        The store (local folder or ``s3://``).
    variable
        The ``(sample, feature)`` variable to index.
    metric
        ``"cosine"``, ``"dot"`` or ``"euclidean"``: what the index answers.
    lists
        Inverted lists (k-means centroids); default ``~sqrt(rows)``.
    nprobe
        Lists scanned per query (recorded as the default); default ``max(8, lists // 16)``.
        More lists scanned: higher recall, slower queries.
    seed
        k-means seed (the same seed and data give the same index).
    allow_stale
        Index a stale derived variable (its inputs changed since it was computed) as it is;
        by default it is refused (:class:`~embstore.errors.StaleVariableError`).

    Examples
    --------
    >>> embstore.build_index("bv.store", variable="embedding").summary()
    "indexed 24 rows of 'embedding' (cosine, 3 lists, nprobe 8) in ... s"
    >>> ds = embstore.open("bv.store")
    >>> query = "ball/00270001_12_month_level_avg.npy"
    >>> near = embstore.neighbors(ds, query, k=3, approximate=True)
    >>> near["rank"].tolist()
    [1, 2, 3]
    >>> near.path.tolist() == embstore.neighbors(ds, query, k=3).path.tolist()  # nprobe >= lists
    True
    """
    import time

    from ._neighbors import _blocks, _variable

    faiss = _faiss()
    if metric not in ANN_METRICS:
        raise EmbstoreError(f"unknown metric {metric!r}; choose one of {', '.join(ANN_METRICS)}")
    start = time.perf_counter()
    ds = open_store(store)
    data = _variable(ds, variable)
    check_fresh(ds, variable, allow_stale=allow_stale, store=store)
    n, dim = (int(s) for s in data.shape)
    if n == 0:
        raise EmbstoreError(f"{store}: {variable!r} has no rows to index")
    lists = int(lists or max(1, min(n // 8, round(n**0.5))))
    nprobe = int(nprobe or max(8, lists // 16))
    if not 1 <= lists <= n:
        raise EmbstoreError(f"lists must be between 1 and the {n} rows, got {lists}")
    train = _training_rows(data, lists, seed, metric)
    kmeans = faiss.Kmeans(dim, lists, niter=12, seed=seed, spherical=metric == "cosine")
    kmeans.train(train)
    centroids = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
    quantizer = _quantizer(faiss, centroids, metric)
    assign = np.full(n, -1, dtype=np.int32)  # -1: a non-finite row, never added
    for first, block in _blocks(data, np.ones(n, dtype=bool)):
        ok = np.isfinite(block).all(axis=1)
        if ok.any():
            _, got = quantizer.search(_prepared(block[ok], metric), 1)
            assign[first : first + len(block)][ok] = got[:, 0]
        if progress is not None:
            progress(first + len(block), n)
    attrs = {
        "digest": inputs_digest(ds, variable),
        "variable": variable,
        "metric": metric,
        "lists": lists,
        "nprobe": nprobe,
        "rows": n,
        "faiss": str(faiss.__version__),
        "time": now(),
    }
    message = f"approximate index of {variable!r} ({metric}, {lists} lists)"
    arrays = {"centroids": centroids, "assign": assign}
    name = attachment_name(variable, metric)
    write_attachment(store, name, arrays, attrs, message=message, action="index")
    seconds = time.perf_counter() - start
    return IndexReport(str(store), variable, metric, n, lists, nprobe, seconds)


def _training_rows(data: xr.DataArray, lists: int, seed: int, metric: str) -> np.ndarray:
    """Up to ``TRAIN_ROWS_PER_LIST * lists`` finite rows, spread over the variable."""
    n = int(data.shape[0])
    want = min(n, max(lists * TRAIN_ROWS_PER_LIST, 1000))
    rows = np.sort(np.random.default_rng(seed).choice(n, want, replace=False))
    x = np.asarray(data.isel({SAMPLE: rows}).values, dtype=np.float32)
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) == 0:
        raise EmbstoreError(f"{data.name!r}: no finite rows to train an index on")
    return _prepared(x, metric)


def _prepared(x: np.ndarray, metric: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms == 0, 1, norms)
    return x


def _quantizer(faiss: Any, centroids: np.ndarray, metric: str) -> Any:
    flat = faiss.IndexFlatL2 if metric == "euclidean" else faiss.IndexFlatIP
    quantizer = flat(centroids.shape[1])
    quantizer.add(centroids)
    return quantizer


def load_index(ds: xr.Dataset, store: StoreLike, variable: str, metric: str) -> Any:
    """The faiss index over ``ds[variable]``, loaded once per process; EmbstoreError when
    there is none or it is stale."""
    version = str(ds.encoding.get("embstore_version_id", ""))
    key = (str(store), version, attachment_name(variable, metric))
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
    faiss = _faiss()
    found = read_attachment(store, attachment_name(variable, metric), version=version or None)
    hint = f"run embstore.build_index(store, variable={variable!r}, metric={metric!r})"
    if found is None:
        raise EmbstoreError(f"{store}: no approximate index of {variable!r} ({metric}); {hint}")
    arrays, attrs = found
    if attrs.get("digest") != inputs_digest(ds, variable):
        msg = f"{store}: the approximate index of {variable!r} is stale (built {attrs.get('time')})"
        raise EmbstoreError(f"{msg}; {hint}")
    from ._neighbors import _blocks, _variable

    data = _variable(ds, variable)
    centroids, assign = arrays["centroids"], arrays["assign"].astype(np.int64)
    faiss_metric = faiss.METRIC_L2 if metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
    index = faiss.IndexIVFFlat(
        _quantizer(faiss, centroids, metric), centroids.shape[1], len(centroids), faiss_metric
    )
    index.is_trained = True
    index.nprobe = int(attrs["nprobe"])
    from faiss.contrib.ivf_tools import add_preassigned

    for first, block in _blocks(data, assign >= 0):
        a = assign[first : first + len(block)]
        ok = a >= 0
        ids = np.arange(first, first + len(block), dtype=np.int64)[ok]
        add_preassigned(index, _prepared(block[ok], metric), np.ascontiguousarray(a[ok]), ids)
    with _LOCK:
        _LOADED[key] = index
    return index


def search(
    index: Any,
    queries: np.ndarray,
    k: int,
    metric: str,
    allowed: np.ndarray,
    nprobe: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, rows)`` of the ``k`` best allowed rows per query (higher is nearer; minus
    the squared distance for euclidean; ``-inf`` / ``-1`` where fewer were found)."""
    faiss = _faiss()
    params = faiss.SearchParametersIVF(nprobe=int(nprobe or index.nprobe))
    if not allowed.all():
        bitmap = np.packbits(allowed, bitorder="little")
        params.sel = selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
        params._keep = (selector, bitmap)  # the selector reads the bitmap: keep both alive
    scores, rows = index.search(_prepared(queries, metric), k, params=params)
    scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
    if metric == "euclidean":
        scores = np.where(rows >= 0, -scores, -np.inf).astype(np.float32)
    return scores, rows.astype(np.int64)
