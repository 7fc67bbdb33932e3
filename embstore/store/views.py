"""The xarray view of a store that plain xarray idioms work on, and row selection by label.

:func:`prepare_dataset` is applied by :func:`embstore.open` (and may be applied to any dataset
with a ``sample`` dimension, e.g. a subset read back with ``xarray.open_dataset``):

- Every 1-D ``sample`` variable (``path``, ``subject``, ``age_mo``, ``category``,
  ``nonfinite``, ...) is a coordinate backed by numpy, never dask: read whole into memory on
  its first use and kept (:class:`~embstore.store.lazy.LabelArray`, xarray's own lazy
  loading), shared by every copy and subset; strings are ``object`` arrays of Python ``str``.
  Boolean masks built from labels are numpy, so ``where(..., drop=True)``, boolean ``isel``,
  ``query`` and ``groupby`` just work, and opening costs nothing per row.
- ``(sample, feature...)`` variables (``embedding``, ``normalized``) stay lazy dask arrays.
- ``path`` carries an index (:class:`~embstore.store.lazy.PathIndex`, a pandas index built on
  the first lookup) while ``sample`` stays the dimension name (no dimension coordinate is
  added): ``ds.sel(path="a/b.npy")`` and ``ds.sel(path=[...])`` work, and every other idiom
  still indexes rows by ``sample``. Indexes are not written to files, so a subset written with
  ``to_netcdf`` keeps ``path`` as a plain coordinate; run it through :func:`prepare_dataset`
  again to restore the index.
- Nested provenance (the root attribute ``embstore`` and the ``embstore`` attribute of derived
  variables) becomes a JSON-encoded string, so ``to_netcdf`` / ``to_zarr`` of any subset keep
  it; :func:`provenance` (or ``ds.emb.provenance``) decodes it.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..errors import EmbstoreError
from ..labels import id_spellings
from .layout import ROOT_ATTR, SAMPLE
from .lazy import Guard, PathIndex, label_codes, lazy_label

#: The label coordinate that carries the row index.
INDEX_LABEL = "path"


def prepare_dataset(ds: xr.Dataset, *, guard: Guard | None = None) -> xr.Dataset:
    """Labels numpy-backed and read on first use, ``path`` indexed, provenance JSON-encoded
    (see the module docstring).

    ``guard(name)`` gives the context manager a label's read runs inside (``embstore.open``
    turns the engine's errors into one-line :class:`~embstore.errors.StoreError`). Idempotent:
    a prepared dataset comes back unchanged (but for a fresh copy).

    Examples
    --------
    >>> ds = prepare_dataset(xr.open_dataset("subset.nc"))
    >>> ds.sel(path="ball/00270001_12_month_level_avg.npy").subject.item()
    '00270001'
    """
    names = [n for n, v in ds.variables.items() if v.dims == (SAMPLE,) and n != SAMPLE]
    snapshot = ds.encoding.get("embstore_version_id")  # set by embstore.open: the cache key
    labels = {n: lazy_label(ds.variables[n], str(n), guard, snapshot) for n in names}
    ds = ds.drop_indexes([n for n in names if n in ds.xindexes], errors="ignore")
    ds = ds.drop_vars(names).assign_coords(labels)
    if INDEX_LABEL in ds.coords and ds[INDEX_LABEL].dims == (SAMPLE,):
        ds = ds.set_xindex(INDEX_LABEL, PathIndex)
    ds = ds.copy()  # new variable objects: the caller's dataset keeps its attributes
    ds.attrs = _encoded(ds.attrs)
    for var in ds.variables.values():
        var.attrs = _encoded(var.attrs)
    return ds


def _encoded(attrs: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
    """Attributes with every dict (or list holding dicts/lists) JSON-encoded, for netCDF."""
    return {k: json.dumps(v) if _nested(v) else v for k, v in attrs.items()}


def _nested(value: Any) -> bool:
    if isinstance(value, dict):
        return True
    return isinstance(value, list | tuple) and any(isinstance(v, dict | list) for v in value)


def provenance(obj: xr.Dataset | xr.DataArray | xr.Variable | Mapping[str, Any]) -> dict[str, Any]:
    """The decoded ``embstore`` provenance of a dataset (store metadata) or of a variable.

    Accepts a dataset, a variable, or an attribute mapping; returns ``{}`` when there is none.
    The attribute may be a JSON string (as :func:`prepare_dataset` leaves it, and as netCDF
    round trips keep it) or a dict (as the store holds it).

    Examples
    --------
    >>> ds = embstore.open("bv.store")
    >>> provenance(ds)["rows"]
    24
    >>> out = embstore.normalize(ds, exclude_subjects=["00270001"])
    >>> provenance(out.normalized)["exclude_subjects"]
    ['00270001']
    """
    attrs = obj.attrs if isinstance(obj, xr.Dataset | xr.DataArray | xr.Variable) else obj
    value = attrs.get(ROOT_ATTR)
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise EmbstoreError(f"the {ROOT_ATTR!r} attribute is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise EmbstoreError(f"the {ROOT_ATTR!r} attribute is not a mapping: {value!r}")
    return json.loads(json.dumps(value))  # a deep copy the caller may change


def label_mask(ds: xr.Dataset, criteria: Mapping[str, Any]) -> np.ndarray:
    """Boolean numpy mask of the rows matching every criterion (``label=value``).

    A scalar means equality, a list (tuple, set, array) membership, a ``slice`` an inclusive
    range (``slice(12, 18)``; either end may be ``None``). Unknown labels are an error.
    Subject and study ids match in either spelling (``"13072354"`` and ``"p13072354"``, see
    :func:`embstore.labels.id_spellings`). Equality and membership on a label of a store
    compare its cached integer codes, not its strings
    (:mod:`embstore.store.label_cache`).
    """
    mask = np.ones(ds.sizes[SAMPLE], dtype=bool)
    for name, wanted in criteria.items():
        if name not in ds.coords or ds[name].dims != (SAMPLE,):
            have = sorted(str(n) for n, c in ds.coords.items() if c.dims == (SAMPLE,))
            raise EmbstoreError(f"no label {name!r} to select rows by (labels: {', '.join(have)})")
        if isinstance(wanted, slice):
            mask &= _in_range(name, np.asarray(ds[name].values), wanted)
            continue
        many = isinstance(wanted, list | tuple | set | frozenset | np.ndarray | xr.DataArray)
        choices = list(np.asarray(list(wanted), dtype=object)) if many else [wanted]
        mask &= _is_one_of(ds.variables[name], name, choices)
    return mask


def _in_range(name: str, values: np.ndarray, wanted: slice) -> np.ndarray:
    if wanted.step is not None:
        raise EmbstoreError(f"{name}: a range cannot have a step ({wanted})")
    mask = np.ones(len(values), dtype=bool)
    if wanted.start is not None:
        mask &= values >= wanted.start
    if wanted.stop is not None:
        mask &= values <= wanted.stop
    return mask


def _is_one_of(variable: xr.Variable, name: str, choices: list[Any]) -> np.ndarray:
    """Rows of the label ``variable`` equal to one of ``choices`` (either id spelling)."""
    coded = label_codes(variable)
    dtype = coded[1].uniques.dtype if coded is not None else variable.dtype
    if dtype.kind == "O":
        choices = [s for c in choices for s in id_spellings(name, c)]
    try:
        wanted = np.asarray(choices, dtype=dtype)
    except (TypeError, ValueError):
        return np.zeros(variable.shape[0], dtype=bool)  # e.g. "abc" for an integer label
    if coded is not None:
        codes, factorized = coded
        found = factorized.positions(wanted)
        if len(found) == 1:
            return codes == found[0]
        return np.isin(codes, found)
    return np.isin(np.asarray(variable.values), wanted)


def row_filter(
    ds: xr.Dataset,
    where: str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]],
) -> np.ndarray:
    """Boolean mask of the rows matching ``where``: a query over the labels (pandas syntax:
    ``"category in ['ball', 'cup'] and age_mo >= 12"``), label criteria (:func:`label_mask`),
    or a list of either that every row must match.

    Examples
    --------
    >>> ds = embstore.open("bv.store")  # 2 categories x 3 subjects x 4 ages (12-15)
    >>> int(row_filter(ds, "subject != '00270001' and category in ['ball']").sum())
    8
    >>> mask = row_filter(ds, [{"subject": ["00270001"]}, "age_mo >= 14"])
    >>> sorted(ds.path.values[mask])
    ['ball/00270001_14_month_level_avg.npy', 'ball/00270001_15_month_level_avg.npy',
     'cup/00270001_14_month_level_avg.npy', 'cup/00270001_15_month_level_avg.npy']
    """
    parts = [where] if isinstance(where, str | Mapping) else list(where)
    mask = np.ones(ds.sizes[SAMPLE], dtype=bool)
    for part in parts:
        mask &= label_mask(ds, part) if isinstance(part, Mapping) else _query_mask(ds, part)
    return mask


def _query_mask(ds: xr.Dataset, expr: str) -> np.ndarray:
    import pandas as pd

    labels = {str(n): np.asarray(c.values) for n, c in ds.coords.items() if c.dims == (SAMPLE,)}
    try:
        result = pd.DataFrame(labels).eval(expr, engine="python")
    except Exception as exc:  # pandas raises many kinds (SyntaxError, UndefinedVariableError...)
        msg = f"cannot select rows by {expr!r}: {exc} (labels: {', '.join(sorted(labels))})"
        raise EmbstoreError(msg) from exc
    mask = np.asarray(result)
    if mask.dtype != bool or mask.shape != (ds.sizes[SAMPLE],):
        raise EmbstoreError(f"{expr!r} is not a condition on the rows' labels")
    return mask


def select_rows(ds: xr.Dataset, **criteria: Any) -> xr.Dataset:
    """The rows of ``ds`` whose labels match every criterion (see :func:`label_mask`).

    Examples
    --------
    >>> ds = embstore.open("bv.store")
    >>> select_rows(ds, subject="00270001", age_mo=slice(12, 13)).path.values.tolist()
    ['ball/00270001_12_month_level_avg.npy', 'ball/00270001_13_month_level_avg.npy',
     'cup/00270001_12_month_level_avg.npy', 'cup/00270001_13_month_level_avg.npy']
    >>> select_rows(ds, category=["ball", "cup"]).sizes["sample"]
    24
    """
    return ds.isel({SAMPLE: label_mask(ds, criteria)})
