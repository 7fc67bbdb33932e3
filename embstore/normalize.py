"""Feature-wise normalization with subjects excluded from the statistics (lazy, out-of-core).

``normalized = (x - mean) / (std + eps)`` for every row, where ``mean`` and the population
``std`` (ddof 0) are accumulated in float64 over the rows that are neither from an excluded
subject nor non-finite. Features whose variance is indistinguishable from zero (scikit-learn's
``StandardScaler`` rule) are divided by 1 instead, and reported.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr
from dask.callbacks import Callback

from . import __version__
from .errors import EmbstoreError, StoreError
from .labels import RESERVED_NAMES, read_categories
from .store import (
    FEATURE,
    MATRIX_COMPRESSORS,
    ROOT_ATTR,
    SAMPLE,
    commit_root,
    now,
    open_store,
    repair,
    staging_dir,
    trash_dir,
    validated_state,
    write_lock,
)
from .views import provenance

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
    >>> ds = embstore.open("bv.zarr")                                        # doctest: +SKIP
    >>> out = embstore.normalize(ds, exclude_subjects=["00270001"])          # doctest: +SKIP
    >>> out.normalized.isel(sample=(ds.category == "ball").values).values    # doctest: +SKIP
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
    selected = x if used.all() else x[np.flatnonzero(used)]
    selected = selected.astype(np.float64)
    if "nonfinite" not in ds.coords:  # no label to trust: drop non-finite rows lazily
        finite = da.isfinite(selected).all(axis=1)
        selected = da.where(finite[:, None], selected, np.nan)
        mean, var = da.nanmean(selected, axis=0), da.nanvar(selected, axis=0)
        count = finite.sum()
    else:
        mean, var = selected.mean(axis=0), selected.var(axis=0)
        count = n_used
    std = da.sqrt(var)
    out = _apply(x, mean, _scale(mean, std, count, eps))
    outside = 0 if listed is None else int((~in_categories(ds, listed)).sum())
    if listed is not None:
        unknown = sorted(set(listed) - set(np.asarray(ds["category"].values).tolist()))
        if unknown:  # a typo, or a list made for another store
            log.warning("%d listed categories have no rows: %s", len(unknown), unknown[:10])
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


def masked_outside(values: da.Array, ds: xr.Dataset, attrs: dict[str, Any]) -> da.Array:
    """``values`` with the rows outside ``attrs["categories"]`` set to NaN if
    ``attrs["mask_outside"]`` (the provenance :func:`normalize` records), else unchanged."""
    if not attrs.get("mask_outside"):
        return values
    inside = da.from_array(in_categories(ds, attrs["categories"]), chunks=(values.chunks[0],))
    return da.where(inside[:, None], values, np.float32(np.nan))


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
    return ((x - mean) / scale).astype(np.float32)


@dataclass
class NormalizeReport:
    """What :func:`normalize_store` wrote."""

    store: str
    name: str
    rows: int
    rows_used: int
    exclude_subjects: list[str]
    constant_features: list[int]

    def summary(self) -> str:
        text = (
            f"wrote {self.name!r} for {self.rows} rows; statistics over {self.rows_used} rows"
            f" (excluded subjects: {', '.join(self.exclude_subjects) or 'none'})"
        )
        if self.constant_features:
            shown = ", ".join(map(str, self.constant_features[:10]))
            text += f"; {len(self.constant_features)} constant feature(s) scaled by 1: {shown}"
        return text


class _TaskProgress(Callback):
    def __init__(self, progress: Callable[[int, int], None]) -> None:
        super().__init__()
        self._progress, self._done, self._total = progress, 0, 0

    def _start_state(self, dsk: Any, state: Any) -> None:
        self._total = len(state["ready"]) + len(state["waiting"]) + len(state["running"])

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        self._done += 1
        self._progress(self._done, self._total)


def normalize_store(
    store: str | os.PathLike[str],
    *,
    exclude_subjects: Sequence[str] = (),
    categories: str | os.PathLike[str] | Sequence[str] | None = None,
    mask_outside: bool = False,
    variable: str = "embedding",
    name: str = "normalized",
    eps: float = DEFAULT_EPS,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> NormalizeReport:
    """Normalize ``variable`` of a store and write the result as variable ``name``, crash-safe.

    The statistics and the normalized matrix are computed chunk by chunk (memory stays flat as
    the store grows) into a staging area, then moved into the store and committed at once: a
    killed normalize leaves no variable that looks complete but isn't. Holds the write lock
    throughout, so no rows are appended meanwhile.
    """
    path = Path(store)
    _check_name(name, variable)
    with write_lock(path):
        repair(path)
        state = validated_state(path)
        _check_replaceable(path, state, name, overwrite)
        ds = normalize(
            open_store(path),
            exclude_subjects=exclude_subjects,
            categories=categories,
            mask_outside=mask_outside,
            variable=variable,
            name=name,
            eps=eps,
        )
        stage = staging_dir(path) / uuid.uuid4().hex
        stage.mkdir(parents=True)
        watch = _TaskProgress(progress) if progress else contextlib.nullcontext()
        try:
            with dask.config.set(scheduler="threads"), watch:
                constant = _write_staged(ds, path, stage, name, variable)
            _swap_in(path, stage, name)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        log.info("%s: wrote %s", path, name)
        attrs = provenance(ds[name])
        return NormalizeReport(
            store=str(path),
            name=name,
            rows=attrs["rows"],
            rows_used=attrs["rows_used"],
            exclude_subjects=list(exclude_subjects),
            constant_features=constant,
        )


def _check_replaceable(path: Path, state: Any, name: str, overwrite: bool) -> None:
    """Only an earlier normalize's own arrays may be replaced, and only with ``overwrite``."""
    expected = {name: (SAMPLE, FEATURE), f"{name}_mean": (FEATURE,), f"{name}_std": (FEATURE,)}
    for array, dims in expected.items():
        meta = state.arrays.get(array)
        if meta is None:
            continue
        derived = tuple(meta.get("dimension_names") or ()) == dims and (
            array != name or "source" in meta.get("attributes", {}).get(ROOT_ATTR, {})
        )
        if not derived:
            raise StoreError(
                f"{path}: {array!r} is not a normalized variable; choose another --name"
            )
        if not overwrite:
            raise StoreError(
                f"{path}: variable {array!r} exists (pass overwrite=True / --overwrite)"
            )


def _check_name(name: str, variable: str) -> None:
    if name == variable or name in RESERVED_NAMES or not name.isidentifier():
        raise EmbstoreError(f"{name!r} cannot be the name of a normalized variable")


def _write_staged(ds: xr.Dataset, path: Path, stage: Path, name: str, variable: str) -> list[int]:
    """Compute statistics (one pass), then the normalized matrix (one pass), into ``stage``."""
    source = zarr.open_array(str(path / variable), mode="r")
    mean, std = dask.compute(ds[f"{name}_mean"].data, ds[f"{name}_std"].data)
    attrs = provenance(ds[name])
    constant = np.flatnonzero(constant_features(mean, std, attrs["rows_used"])).tolist()
    attrs["constant_features"] = constant
    coords = source.attrs.get("coordinates", "path nonfinite")
    for suffix, values in (("_mean", mean), ("_std", std)):
        array = zarr.create_array(
            store=str(stage / f"{name}{suffix}"),
            shape=values.shape,
            chunks=values.shape,
            dtype="float64",
            dimension_names=(FEATURE,),
            zarr_format=3,
            attributes=dict(ds[f"{name}{suffix}"].attrs),
        )
        array[:] = values
    target = zarr.create_array(
        store=str(stage / name),
        shape=source.shape,
        chunks=source.chunks,
        dtype="float32",
        fill_value=float("nan"),
        dimension_names=(SAMPLE, FEATURE),
        zarr_format=3,
        compressors=MATRIX_COMPRESSORS,
        attributes={"coordinates": coords, ROOT_ATTR: attrs},
    )
    # the statistics are concrete now: this graph only reads, scales and writes chunks
    normalized = _apply(
        ds[variable].data, mean, _scale(mean, std, attrs["rows_used"], attrs["eps"])
    )
    normalized = masked_outside(normalized, ds, attrs)
    da.store(normalized, target, lock=False)
    if constant:
        log.warning(
            "%d feature(s) have ~zero variance and were scaled by 1: %s",
            len(constant),
            constant[:20],
        )
    return constant


def _swap_in(path: Path, stage: Path, name: str) -> None:
    """Move the staged arrays into the store and commit; an old variable goes to the trash."""
    state = validated_state(path)
    names = [f"{name}_mean", f"{name}_std", name]  # the main variable last: it marks completion
    old = [n for n in names if (path / n).exists()]
    if old:
        trash = trash_dir(path) / uuid.uuid4().hex
        trash.mkdir(parents=True)
        for n in reversed(old):
            os.rename(path / n, trash / n)
        commit_root(path, state.attrs)
    for n in names:
        os.rename(stage / n, path / n)
    commit_root(path, state.attrs)
    shutil.rmtree(trash_dir(path), ignore_errors=True)
