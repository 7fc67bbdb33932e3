"""Labels read on first use and a ``path`` index built on the first lookup.

Opening a 500K-row store must stay cheap (issue 11: open + one subject's rows in at most
0.005 of ``torch.load`` of the merged ``.pt``), yet labels must behave as in-memory numpy, not
dask, so that boolean masks built from them index a dataset. Reading and decoding three 500K
string labels costs ~0.25 s and building the ``path`` index another ~0.1 s; most questions need
one label. So, the way xarray's own backends load variables lazily:

- :class:`LabelArray` is an xarray backend array over one label. The first access of any part
  of it (``ds.subject == x``, ``.values``, a subset's ``.values``) reads the label whole, once,
  into an ``object`` array of ``str`` (numbers as stored); every copy and subset of the
  dataset shares that read. A label is never dask.
- With the version's snapshot id (``embstore.open`` gives it), a string or integer label is
  kept as codes + a small dictionary (:mod:`~embstore.store.label_cache`), built on the first
  read of that label of that version and loaded by later processes in milliseconds;
  :func:`label_codes` hands them to row selection, which then compares integers.
- :class:`PathIndex` is an :class:`xarray.Index` on ``path`` that builds its
  :class:`~xarray.indexes.PandasIndex` on the first ``sel`` / alignment and delegates to it;
  ``isel`` keeps it unbuilt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import dask.array as da
import dask.local
import numpy as np
import pandas as pd
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing
from xarray.core.indexes import Index, PandasIndex

from . import label_cache
from .label_cache import Factorized

#: What a label's read runs inside, given the label's name (the store turns the engine's
#: errors into one-line StoreErrors naming the store and the label).
Guard = Callable[[str], AbstractContextManager[object]]


class LabelArray(BackendArray):
    """One 1-D label, read whole from ``source`` on first use and kept (see the module doc)."""

    def __init__(
        self,
        source: xr.Variable,
        name: str,
        guard: Guard | None = None,
        snapshot: str | None = None,
    ) -> None:
        self.source: xr.Variable | None = source
        self.name = name
        self.shape = source.shape
        self.dtype = np.dtype(object) if _is_string(source.dtype) else source.dtype
        self._guard = guard
        self._snapshot = snapshot  # the version's id: the label cache's key
        self._values: np.ndarray | None = None
        self._factorized: Factorized | None = None
        self._lock = threading.Lock()

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.VECTORIZED, self._getitem
        )

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        return self.values()[key]

    @property
    def loaded(self) -> bool:
        """Whether the label has been read."""
        return self._values is not None

    def values(self) -> np.ndarray:
        """The whole label in memory (read on the first call), read-only: it is shared by every
        copy, so change labels with ``assign_coords`` (or ``embstore label``), not in place."""
        with self._lock:
            if self._values is None:
                cached = self._cached()
                values = cached.values() if cached is not None else self._read()
                values.flags.writeable = False
                if cached is None and self._snapshot is not None and len(self.shape) == 1:
                    self._factorized = Factorized.of(values)  # once per version, kept
                    label_cache.save(self._snapshot, self.name, self._factorized)
                self._values = values
                self.source = None  # let the source (and any copy it cached) go
            return self._values

    def factorized(self) -> Factorized:
        """The label as codes + distinct values (from the cache, or built once here)."""
        values = self.values()
        with self._lock:
            if self._factorized is None:  # no version id: kept in memory only
                self._factorized = Factorized.of(values)
            return self._factorized

    def _cached(self) -> Factorized | None:
        if self._snapshot is None or len(self.shape) != 1:
            return None
        self._factorized = label_cache.load(self._snapshot, self.name, self.shape[0])
        return self._factorized

    def _read(self) -> np.ndarray:
        assert self.source is not None  # released only once read
        with self._guard(self.name) if self._guard is not None else nullcontext():
            data = self.source.data  # a backend array is read here; dask stays lazy
            if isinstance(data, da.Array):
                # in this thread (decoding strings holds the GIL); a callable, because
                # a scheduler named by a string makes dask import distributed (0.15 s)
                data = data.compute(scheduler=dask.local.get_sync)
        values = plain_strings(np.asarray(data))
        if np.may_share_memory(values, data):
            values = values.copy()  # never make the caller's array read-only
        return values

    def __deepcopy__(self, memo: dict[int, Any]) -> LabelArray:
        return self  # immutable once read: deep copies of a dataset (xr.align) share the read

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class _LabelView(indexing.LazilyIndexedArray):
    """xarray's lazily indexed array over a :class:`LabelArray`, shown with its values in a
    dataset's repr once read ("..." before, as xarray shows any unread variable)."""

    def _repr_inline_(self, max_width: int) -> str:
        if not self.array.loaded:
            return "..."
        from xarray.core.formatting import format_array_flat

        return format_array_flat(self.get_duck_array(), max_width)


def lazy_label(
    variable: xr.Variable, name: str, guard: Guard | None = None, snapshot: str | None = None
) -> xr.Variable:
    """``variable`` (the label ``name``) backed by a :class:`LabelArray`: same dims,
    attributes and encoding; ``snapshot`` (the version's id) enables the label cache."""
    data = _LabelView(LabelArray(variable, name, guard, snapshot))
    return xr.Variable(variable.dims, data, variable.attrs, variable.encoding, fastpath=True)


def label_codes(variable: xr.Variable) -> tuple[np.ndarray, Factorized] | None:
    """``(codes of these rows, the label's factorization)`` when ``variable`` is a (subset
    of a) lazily read label, else ``None`` (then compare its values)."""
    view = variable._data
    if not isinstance(view, _LabelView) or not isinstance(view.array, LabelArray):
        return None
    if not isinstance(view.key, indexing.BasicIndexer | indexing.OuterIndexer):
        return None
    factorized = view.array.factorized()
    return factorized.codes[view.key.tuple], factorized


def plain_strings(values: np.ndarray) -> np.ndarray:
    """Strings as an ``object`` array of Python ``str`` (zarr hands back numpy ``StringDType``,
    on which ``.astype(str)`` fails; netCDF may give ``bytes``); other dtypes unchanged."""
    if values.dtype.kind == "S" or (values.dtype.kind == "O" and _has_bytes(values)):
        return np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)
    if _is_string(values.dtype):
        return values.astype(object, copy=False)
    return values


def _is_string(dtype: np.dtype) -> bool:
    return dtype.kind in "TUSO"


def _has_bytes(values: np.ndarray) -> bool:
    return any(isinstance(v, bytes) for v in values[:1])


class PathIndex(Index):
    """An index on one 1-D coordinate whose :class:`~xarray.indexes.PandasIndex` is built on
    first use and shared by copies (see the module docstring).

    Examples
    --------
    >>> ds = xr.open_dataset("subset.nc").set_xindex("path", PathIndex)
    >>> rows = ["ball/00270001_12_month_level_avg.npy", "cup/00280001_13_month_level_avg.npy"]
    >>> ds.sel(path=rows).sizes["sample"]
    2
    """

    def __init__(
        self, variable: xr.Variable, name: Hashable, built: list[PandasIndex] | None = None
    ) -> None:
        if variable.ndim != 1:
            raise ValueError(f"PathIndex needs a 1-D coordinate; {name!r} has dims {variable.dims}")
        self._variable = variable
        self._name = name
        self._dim = variable.dims[0]
        self._built = built if built is not None else []  # shared by copies: built once

    @classmethod
    def from_variables(
        cls, variables: Mapping[Any, xr.Variable], *, options: Mapping[str, Any]
    ) -> PathIndex:
        if len(variables) != 1:
            raise ValueError(f"PathIndex indexes one coordinate, not {list(variables)}")
        ((name, variable),) = variables.items()
        return cls(variable, name)

    def pandas(self) -> PandasIndex:
        """The built :class:`~xarray.indexes.PandasIndex` (reads the coordinate once)."""
        if not self._built:
            values = pd.Index(self._variable.values, name=self._name, dtype=object, copy=False)
            self._built.append(PandasIndex(values, self._dim, coord_dtype=values.dtype))
        return self._built[0]

    @property
    def built(self) -> bool:
        """Whether the pandas index has been built."""
        return bool(self._built)

    def create_variables(
        self, variables: Mapping[Any, xr.Variable] | None = None
    ) -> dict[Hashable, xr.Variable]:
        variable = self._variable
        if variables is not None and self._name in variables:
            given = variables[self._name]
            variable = variable.copy(deep=False)
            variable.attrs, variable.encoding = dict(given.attrs), dict(given.encoding)
        return {self._name: variable}

    def to_pandas_index(self) -> pd.Index:
        return self.pandas().index

    def isel(self, indexers: Mapping[Any, Any]) -> PathIndex | None:
        indexer = indexers.get(self._dim)
        if indexer is None or (isinstance(indexer, slice) and indexer == slice(None)):
            return self
        if isinstance(indexer, xr.Variable):
            if indexer.dims != (self._dim,):
                return None
            indexer = indexer.data
        if not isinstance(indexer, slice) and np.ndim(indexer) == 0:
            return None  # one row: no index, as for a PandasIndex
        return type(self)(self._variable.isel({self._dim: indexer}), self._name)

    def sel(self, labels: dict[Any, Any], **kwargs: Any) -> Any:
        return self.pandas().sel(labels, **kwargs)

    def equals(self, other: Index, **kwargs: Any) -> bool:
        if isinstance(other, PathIndex):
            if other._variable._data is self._variable._data:  # the same lazily read array
                return True
            other = other.pandas()
        return self.pandas().equals(other, **kwargs)

    # What xarray builds from indexes (alignment, concat, roll) is a PathIndex again, built:
    # the aligner groups indexes by type, so every result must keep the type of its inputs.

    @classmethod
    def _of(cls, built: PandasIndex, name: Hashable) -> PathIndex:
        """A PathIndex over an already built index (its labels become the coordinate)."""
        values = np.asarray(built.index, dtype=object)
        return cls(xr.Variable((built.dim,), values), name, [built])

    def join(self, other: PathIndex, how: Any = "inner") -> PathIndex:
        return self._of(self.pandas().join(other.pandas(), how=how), self._name)

    def reindex_like(self, other: PathIndex, **kwargs: Any) -> dict[Hashable, Any]:
        return self.pandas().reindex_like(other.pandas(), **kwargs)

    def roll(self, shifts: Mapping[Any, int]) -> PathIndex:
        return self._of(self.pandas().roll(shifts), self._name)

    @classmethod
    def concat(
        cls,
        indexes: Sequence[PathIndex],
        dim: Hashable,
        positions: Iterable[Iterable[int]] | None = None,
    ) -> PathIndex:
        built = PandasIndex.concat([i.pandas() for i in indexes], dim, positions)
        return cls._of(built, indexes[0]._name)

    def rename(
        self, name_dict: Mapping[Any, Hashable], dims_dict: Mapping[Any, Hashable]
    ) -> PathIndex:
        name, dim = name_dict.get(self._name, self._name), dims_dict.get(self._dim, self._dim)
        if (name, dim) == (self._name, self._dim):
            return self
        variable = self._variable.copy(deep=False)
        variable.dims = (dim,)
        return type(self)(variable, name)

    def _copy(self, deep: bool = True, memo: dict[int, Any] | None = None) -> PathIndex:
        return type(self)(self._variable, self._name, self._built)

    def __getitem__(self, indexer: Any) -> PathIndex:
        return type(self)(self._variable[indexer], self._name)

    def _repr_inline_(self, max_width: int) -> str:
        return "PathIndex (built on first lookup)"

    def __repr__(self) -> str:
        state = "built" if self.built else "not built yet"
        return f"PathIndex({self._name!r} along {self._dim!r}, {state})"


SCAN_BLOCK_BYTES = 16 * 2**20
"""Target bytes of one dask task of a full scan (a whole multiple of the stored row chunk)."""


def stored_source(x: da.Array) -> Any | None:
    """What ``x`` reads, when ``x`` is a plain read of one stored variable (as
    :func:`embstore.open` gives it: one dask chunk per stored chunk), else ``None``.

    The source takes numpy-style row slices and reads them with one call, each stored chunk
    once into the result (no per-chunk task, no concatenation). An array that is already
    sliced, computed on or unevenly chunked has no such source.
    """
    layers = x.dask.layers
    original = [name for name in layers if str(name).startswith("original-")]
    if len(layers) != 2 or len(original) != 1 or x.ndim < 1 or not x.shape[0]:
        return None
    if len(set(x.chunks[0][:-1])) > 1 or any(len(c) > 1 for c in x.chunks[1:]):
        return None
    (source,) = layers[original[0]].values()
    return source


def scan_blocks(x: da.Array, target_bytes: int | None = None) -> da.Array:
    """``x`` (as :func:`embstore.open` gives it: one dask chunk per stored chunk) re-read in
    row blocks of several stored chunks, ~``target_bytes`` each, for a pass over every row.

    A store in 256-row chunks otherwise runs one task per 256 rows, and a full scan pays dask's
    per-task cost thousands of times (issue 18: 2.15x slower than 4,096-row chunks). Opening
    coarser would make one-subject reads read whole blocks, so only the scans ask for this.
    An array without a :func:`stored_source` is returned unchanged.
    """
    target = SCAN_BLOCK_BYTES if target_bytes is None else target_bytes
    source = stored_source(x)
    if source is None:
        return x
    step = x.chunks[0][0]
    chunk_bytes = step * x.dtype.itemsize * int(np.prod(x.shape[1:], dtype=np.int64))
    rows = max(1, target // max(chunk_bytes, 1)) * step
    if rows <= step:
        return x
    return da.from_array(source, chunks=(rows, *x.shape[1:]), meta=x._meta)
