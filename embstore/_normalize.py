"""Feature-wise normalization with subjects excluded from the statistics (lazy, out-of-core).

``normalized = (x - mean) / (std + eps)`` for every row, where ``mean`` and the population
``std`` (ddof 0) are accumulated in float64 over the rows that are neither from an excluded
subject nor non-finite. Features whose variance is indistinguishable from zero (scikit-learn's
``StandardScaler`` rule) are divided by 1 instead, and reported.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ._progress import Progress
from ._version import __version__
from .errors import EmbstoreError, StoreError
from .labels import check_name, read_categories
from .scheduler import dask_scheduler, distributed_scheduler
from .store import parse_location, run_transaction
from .store.layout import FEATURE, ROOT_ATTR, SAMPLE, now
from .store.lazy import scan_blocks
from .store.location import StoreLike
from .store.read import open_lazily
from .store.repo import StoreState
from .store.transaction import Transaction
from .store.variables import (
    INPUTS_KEY,
    NewVariable,
    add_variables,
    check_replaceable,
    record_inputs,
)
from .store.views import provenance

log = logging.getLogger(__name__)

DEFAULT_EPS = 1e-10


def rows_for_statistics(
    ds: xr.Dataset,
    *,
    exclude_subjects: Sequence[str] = (),
    categories: Sequence[str] | None = None,
) -> np.ndarray:
    """Boolean mask (numpy) of the rows that feed the statistics.

    Reads only labels (``subject``, ``category``, ``nonfinite``). Raises :class:`EmbstoreError`
    if an excluded subject is not in ``ds``: a typo must not silently exclude nothing. With
    ``categories``, rows whose category is not listed are left out too.
    """
    n = ds.sizes[SAMPLE]
    used = np.ones(n, dtype=bool)
    if categories is not None:
        used &= in_categories(ds, categories)
    if exclude_subjects:
        if "subject" not in ds.coords:
            raise EmbstoreError("cannot exclude subjects: the dataset has no 'subject' labels")
        subjects = np.asarray(ds["subject"].values, dtype=object)
        excluded = np.isin(subjects, list(exclude_subjects))
        missing = sorted(set(exclude_subjects) - set(subjects[excluded].tolist()))
        if missing:
            raise EmbstoreError(f"excluded subject(s) not in the store: {', '.join(missing)}")
        used &= ~excluded
    if "nonfinite" in ds.coords:
        used &= ~np.asarray(ds["nonfinite"].values, dtype=bool)
    return used


def in_categories(ds: xr.Dataset, categories: Sequence[str]) -> np.ndarray:
    """Boolean mask of the rows whose ``category`` label is in ``categories``."""
    if "category" not in ds.coords:
        raise EmbstoreError("cannot limit to categories: the dataset has no 'category' labels")
    values = np.asarray(ds["category"].values, dtype=object)
    return np.isin(values, np.asarray(list(categories), dtype=object))


def normalize(
    ds: xr.Dataset,
    *,
    exclude_subjects: Sequence[str] = (),
    categories: str | os.PathLike[str] | Sequence[str] | None = None,
    mask_outside: bool = False,
    variable: str = "embedding",
    name: str = "normalized",
    eps: float = DEFAULT_EPS,
) -> xr.Dataset:
    """Return ``ds`` with ``name``, ``name_mean`` and ``name_std`` added, lazily.

    Nothing but labels is read: the statistics and the normalized values are dask arrays
    computed when asked (``.compute()``, ``.to_zarr()``...). Rows without a ``nonfinite``
    label are checked for NaN/Inf lazily.

    ``categories`` (a categories file, one per line, or the names) limits the statistics to
    rows of those categories; with ``mask_outside`` the other rows are NaN in the output too.
    Both are recorded in the variable's provenance attribute.

    Examples
    --------
    >>> ds = embstore.open("bv.store")
    >>> out = embstore.normalize(ds, exclude_subjects=["00270001"])
    >>> out.normalized.isel(sample=(ds.category == "ball").values).shape
    (12, 8)
    """
    if variable not in ds:
        raise EmbstoreError(
            f"no variable {variable!r} to normalize (have: {sorted(map(str, ds.data_vars))})"
        )
    source = ds[variable]
    if source.dims != (SAMPLE, FEATURE):
        raise EmbstoreError(f"{variable!r} has dims {source.dims}, expected ({SAMPLE}, {FEATURE})")
    x = source.data if isinstance(source.data, da.Array) else da.from_array(np.asarray(source.data))
    listed = None if categories is None else read_categories(categories)
    used = rows_for_statistics(ds, exclude_subjects=exclude_subjects, categories=listed)
    n_used = int(used.sum())
    if n_used == 0:
        raise EmbstoreError("no rows left for the statistics after the exclusions")
    mean, std, count = _statistics(ds, x, used)
    out = _apply(x, mean, _scale(mean, std, count, eps))
    outside = _rows_outside(ds, listed)
    attrs = {
        "source": variable,
        "exclude_subjects": list(exclude_subjects),
        "categories": listed,
        "rows_outside_categories": outside,
        "mask_outside": bool(mask_outside and listed is not None),
        "rows_used": n_used,
        "rows": int(ds.sizes[SAMPLE]),
        "eps": eps,
        "formula": "(x - mean) / (std + eps); features with ~zero variance: (x - mean) / 1",
        "ddof": 0,
        "time": now(),
        "embstore_version": __version__,
        INPUTS_KEY: record_inputs(
            ds,
            source=variable,
            labels=_labels_read(exclude_subjects, listed),
            categories=listed,
            categories_file=categories if isinstance(categories, str | os.PathLike) else None,
        ),
    }
    out = masked_outside(out, ds, attrs)
    return ds.assign(
        {
            name: xr.Variable((SAMPLE, FEATURE), out, {ROOT_ATTR: json.dumps(attrs)}),
            f"{name}_mean": xr.Variable(
                (FEATURE,), mean, {"long_name": f"feature mean behind {name}"}
            ),
            f"{name}_std": xr.Variable(
                (FEATURE,), std, {"long_name": f"population std (ddof 0) behind {name}"}
            ),
        }
    )


def _statistics(ds: xr.Dataset, x: da.Array, used: np.ndarray) -> tuple[Any, Any, Any]:
    """Lazy per-feature mean, population std and row count over the ``used`` rows of ``x``."""
    x = scan_blocks(x)  # a few stored chunks a task, not one (256-row chunks: issue 18)
    if "nonfinite" not in ds.coords:  # no label to trust: drop non-finite rows lazily
        selected = (x if used.all() else x[np.flatnonzero(used)]).astype(np.float64)
        finite = da.isfinite(selected).all(axis=1)
        selected = da.where(finite[:, None], selected, np.nan)
        mean, var = da.nanmean(selected, axis=0), da.nanvar(selected, axis=0)
        return mean, da.sqrt(var), finite.sum()
    mean, var = feature_moments(x, None if used.all() else used)
    return mean, da.sqrt(var), int(used.sum())


def _rows_outside(ds: xr.Dataset, listed: Sequence[str] | None) -> int:
    """Rows outside the ``listed`` categories (0 without a list); warns of listed categories
    that have no rows (a typo, or a list made for another store)."""
    if listed is None:
        return 0
    unknown = sorted(set(listed) - set(np.asarray(ds["category"].values).tolist()))
    if unknown:
        log.warning("%d listed categories have no rows: %s", len(unknown), unknown[:10])
    return int((~in_categories(ds, listed)).sum())


def _labels_read(exclude_subjects: Sequence[str], categories: Sequence[str] | None) -> list[str]:
    """The label columns the statistics of a normalize depend on."""
    read = ["subject"] if exclude_subjects else []
    return [*read, *(["category"] if categories is not None else []), "nonfinite"]


def masked_outside(values: da.Array, ds: xr.Dataset, attrs: dict[str, Any]) -> da.Array:
    """``values`` with the rows outside ``attrs["categories"]`` set to NaN if
    ``attrs["mask_outside"]`` (the provenance :func:`normalize` records), else unchanged."""
    if not attrs.get("mask_outside"):
        return values
    inside = da.from_array(in_categories(ds, attrs["categories"]), chunks=(values.chunks[0],))
    return da.where(inside[:, None], values, np.float32(np.nan))


def feature_moments(x: da.Array, used: np.ndarray | None = None) -> tuple[da.Array, da.Array]:
    """Lazy per-feature mean and population variance of the rows of ``x`` (those where
    ``used`` is True, if given), in float64.

    One pass: each row chunk gives its count, mean and sum of squared deviations (float64,
    around its own mean), and a tree reduction merges them exactly (Chan et al.'s pairwise
    update). A task holds one chunk or a few moment triples, so memory stays flat however many
    chunks there are, and each chunk is read once for both statistics. Rows left out by
    ``used`` are dropped inside their chunk's task (``x[used]`` would make dask take rows
    into new chunks first: 40% more time for three excluded subjects at 100,000 rows).
    """
    features = x.shape[1]
    x = x.rechunk({1: -1})
    mask = [] if used is None else [da.from_array(used[:, None], chunks=(x.chunks[0], 1))]
    per_chunk = da.map_blocks(
        _chunk_moments,
        x,
        *mask,
        new_axis=2,
        chunks=((1,) * x.numblocks[0], (3,), (features,)),
        dtype=np.float64,
    )
    moments = da.reduction(
        per_chunk,
        chunk=_keep,
        combine=_merge_moments,
        aggregate=_merge_moments,
        axis=0,
        keepdims=False,
        dtype=np.float64,
        concatenate=True,
        split_every=8,
        meta=np.empty((0, 0), dtype=np.float64),
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return moments[1], moments[2] / moments[0]


def _chunk_moments(block: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """``[count, mean, sum of squared deviations]`` of a row chunk (its rows where ``keep``,
    shape (rows, 1), is True), shape (1, 3, features)."""
    if keep is not None and not keep.all():
        block = block[keep[:, 0]]
    values = block.astype(np.float64)  # the one float64 copy of the chunk; the rest in place
    n = len(values)
    mean = values.mean(axis=0) if n else np.zeros(values.shape[1])
    values -= mean
    np.square(values, out=values)
    return np.stack([np.full(values.shape[1], float(n)), mean, values.sum(axis=0)])[None]


def _keep(block: np.ndarray, axis: Any = None, keepdims: bool = True) -> np.ndarray:
    return block


def _merge_moments(block: np.ndarray, axis: Any = None, keepdims: bool = True) -> np.ndarray:
    """Merge (k, 3, features) moment triples into one (kept as (1, 3, features) if asked)."""
    if block.ndim != 3 or not len(block):  # dask probing with an empty array for the dtype
        return np.empty((1, 3, 0) if keepdims else (3, 0), dtype=np.float64)
    count, mean, m2 = block[0]
    for n, m, s in block[1:]:
        total = count + n
        weight = np.divide(n, total, out=np.zeros_like(n), where=total > 0)
        delta = m - mean
        mean = mean + delta * weight
        m2 = m2 + s + delta**2 * count * weight
        count = total
    merged = np.stack([count, mean, m2])
    return merged[None] if keepdims else merged


def constant_features(mean: Any, std: Any, count: Any) -> Any:
    """True where a feature's variance is indistinguishable from zero (``StandardScaler``'s rule).

    Works on numpy and dask arrays alike.
    """
    tiny = np.finfo(np.float64).eps
    var = std**2
    return var <= count * tiny * var + (count * mean * tiny) ** 2


def _scale(mean: Any, std: Any, count: Any, eps: float) -> Any:
    return np.where(constant_features(mean, std, count), 1.0, std + eps)


def _apply(x: Any, mean: Any, scale: Any) -> Any:
    if isinstance(x, da.Array) and isinstance(mean, np.ndarray) and isinstance(scale, np.ndarray):
        # concrete statistics: one float64 copy per chunk, scaled in place
        return da.map_blocks(_scale_block, x, mean, scale, dtype=np.float32)
    return ((x - mean) / scale).astype(np.float32)


def _scale_block(block: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    out = block.astype(np.float64)
    out -= mean
    out /= scale
    return out.astype(np.float32)


@dataclass
class NormalizeReport:
    """What :func:`normalize_store` wrote."""

    store: str
    name: str
    rows: int
    rows_used: int
    exclude_subjects: list[str]
    constant_features: list[int]
    refreshed: bool = False

    def summary(self) -> str:
        verb = "refreshed" if self.refreshed else "wrote"
        text = (
            f"{verb} {self.name!r} for {self.rows} rows; statistics over {self.rows_used} rows"
            f" (excluded subjects: {', '.join(self.exclude_subjects) or 'none'})"
        )
        if self.constant_features:
            shown = ", ".join(map(str, self.constant_features[:10]))
            text += f"; {len(self.constant_features)} constant feature(s) scaled by 1: {shown}"
        return text


@dataclass(frozen=True)
class _Parameters:
    """What a normalize computes from: given, or recorded by an earlier one (refresh)."""

    exclude_subjects: Sequence[str] = ()
    categories: str | os.PathLike[str] | Sequence[str] | None = None
    mask_outside: bool = False
    variable: str = "embedding"
    eps: float = DEFAULT_EPS

    @classmethod
    def recorded(cls, state: StoreState, name: str, location: object) -> _Parameters:
        """The parameters ``name`` was computed with (its categories file read again)."""
        meta = state.arrays.get(name)
        if meta is None:
            raise StoreError(f"{location}: no variable {name!r} to refresh")
        prov = (meta.get("attributes") or {}).get(ROOT_ATTR) or {}
        if not isinstance(prov, dict) or "exclude_subjects" not in prov or "source" not in prov:
            raise StoreError(
                f"{location}: {name!r} is not a normalized variable; cannot refresh it"
            )
        file = (prov.get(INPUTS_KEY) or {}).get("categories_file")
        categories = file if file and os.path.isfile(file) else prov.get("categories")
        if file and categories is not file:
            log.warning("%s: categories file %s is gone; using the list recorded", location, file)
        return cls(
            exclude_subjects=list(prov["exclude_subjects"]),
            categories=categories,
            mask_outside=bool(prov.get("mask_outside", False)),
            variable=str(prov["source"]),
            eps=float(prov.get("eps", DEFAULT_EPS)),
        )


def normalize_store(
    store: StoreLike,
    *,
    exclude_subjects: Sequence[str] = (),
    categories: str | os.PathLike[str] | Sequence[str] | None = None,
    mask_outside: bool = False,
    variable: str = "embedding",
    name: str = "normalized",
    eps: float = DEFAULT_EPS,
    overwrite: bool = False,
    refresh: bool = False,
    scheduler: str | None = None,
    progress: Progress | None = None,
) -> NormalizeReport:
    """Normalize ``variable`` of a store and commit the result as variable ``name``.

    The statistics and the normalized matrix are computed chunk by chunk (memory stays flat as
    the store grows) and committed as ONE version holding ``name``, ``name_mean`` and
    ``name_std``: a killed normalize commits nothing, and with ``overwrite`` the previous
    variable stays in the store's history. ``scheduler`` runs the work on a dask cluster
    (``"local:4"``, or a scheduler address); the numbers are the same as with threads.

    ``refresh`` recomputes an existing variable ``name`` with the parameters it records
    (source, excluded subjects, categories -- its categories file read again --, eps), in
    one version: what to do when :func:`embstore.info` says it is stale. The other
    parameters must then be left at their defaults.

    Examples
    --------
    >>> embstore.normalize_store("bv.store", exclude_subjects=["00270001"]).rows_used
    16
    >>> embstore.normalize_store("bv.store", refresh=True).rows_used
    16
    """
    given = _Parameters(tuple(exclude_subjects), categories, mask_outside, variable, eps)
    if refresh and given != _Parameters():
        msg = "refresh=True takes the parameters recorded with the variable; give no others"
        raise EmbstoreError(msg)
    _check_name(name, variable)
    location = parse_location(store)

    def work(tx: Transaction) -> NormalizeReport:
        params = _Parameters.recorded(tx.require_state(), name, location) if refresh else given
        check_replaceable(
            tx, _planned(name), overwrite=overwrite or refresh, derived={name}, kind="normalized"
        )
        ds = normalize(
            open_lazily(store, version=tx.parent),  # reads only the labels it needs
            exclude_subjects=params.exclude_subjects,
            categories=params.categories,
            mask_outside=params.mask_outside,
            variable=params.variable,
            name=name,
            eps=params.eps,
        )
        with dask_scheduler(scheduler):
            constant = _write_variable(
                tx,
                ds,
                name,
                params.variable,
                overwrite=overwrite or refresh,
                distributed=distributed_scheduler(scheduler),
                progress=progress,
            )
        attrs = provenance(ds[name])
        tx.message = f"{'refresh' if refresh else 'normalize'} {params.variable} -> {name}"
        tx.metadata.update(rows=attrs["rows"], rows_used=attrs["rows_used"], variable=name)
        return NormalizeReport(
            store=str(location),
            name=name,
            rows=attrs["rows"],
            rows_used=attrs["rows_used"],
            exclude_subjects=list(params.exclude_subjects),
            constant_features=constant,
            refreshed=refresh,
        )

    report = run_transaction(
        location,
        work,
        action="normalize",
        message="normalize",
        staged=distributed_scheduler(scheduler),
    )
    log.info("%s: wrote %s", location, name)
    return report


def _planned(name: str) -> dict[str, tuple[str, ...]]:
    """The arrays a normalize named ``name`` writes, and their dims."""
    return {name: (SAMPLE, FEATURE), f"{name}_mean": (FEATURE,), f"{name}_std": (FEATURE,)}


def _check_name(name: str, variable: str) -> None:
    check_name(name, what="the name of a normalized variable", taken={variable})


def _write_variable(
    tx: Transaction,
    ds: xr.Dataset,
    name: str,
    variable: str,
    *,
    overwrite: bool,
    distributed: bool,
    progress: Progress | None = None,
) -> list[int]:
    """Compute statistics (one pass), then hand the normalized matrix (written in one more
    pass) and the statistics to the store, replacing an earlier variable of that name."""
    mean, std = dask.compute(ds[f"{name}_mean"].data, ds[f"{name}_std"].data)
    attrs = provenance(ds[name])
    constant = np.flatnonzero(constant_features(mean, std, attrs["rows_used"])).tolist()
    attrs["constant_features"] = constant
    # the statistics are concrete now: this graph only reads, scales and writes chunks
    normalized = _apply(
        ds[variable].data, mean, _scale(mean, std, attrs["rows_used"], attrs["eps"])
    )
    normalized = masked_outside(normalized, ds, attrs)
    arrays = {
        f"{name}_mean": NewVariable(mean, (FEATURE,), dict(ds[f"{name}_mean"].attrs)),
        f"{name}_std": NewVariable(std, (FEATURE,), dict(ds[f"{name}_std"].attrs)),
        name: NewVariable(normalized, (SAMPLE, FEATURE), {ROOT_ATTR: attrs}),
    }
    add_variables(
        tx,
        arrays,
        like=variable,
        overwrite=overwrite,
        derived={name},
        kind="normalized",
        distributed=distributed,
        progress=progress,
    )
    if constant:
        log.warning(
            "%d feature(s) have ~zero variance and were scaled by 1: %s",
            len(constant),
            constant[:20],
        )
    return constant
