"""``ds.emb``: the embstore accessor on xarray datasets (cf-xarray style).

It holds only the dataset and calls plain functions, which tests and users can call directly:
:func:`embstore.store.views.select_rows`, :func:`embstore.normalize`, :func:`embstore.neighbors`,
:func:`embstore.store.views.provenance`. Registered as soon as any embstore function that works on
datasets is used (``embstore.open`` included); ``import embstore.accessor`` registers it
explicitly, e.g. for a netCDF subset opened with plain xarray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from .store.layout import SAMPLE
from .store.views import INDEX_LABEL, provenance, select_rows

if TYPE_CHECKING:
    from ._torch_dataset import EmbeddingDataset


@xr.register_dataset_accessor("emb")
class EmbDatasetAccessor:
    """Row selection by label, normalization, neighbours and provenance of a store's dataset.

    Examples
    --------
    >>> ds = embstore.open("bv.store")
    >>> ds.emb.rows(subject="00270001", age_mo=slice(12, 18)).sizes["sample"]
    8
    >>> ds.emb.normalize(exclude_subjects=["00270001"]).normalized.shape
    (24, 8)
    >>> ds.emb.neighbors("ball/00270001_12_month_level_avg.npy", k=5).shape[0]
    5
    >>> ds.emb.provenance["provenance"][-1]["action"]
    'ingest'
    >>> ds.emb.stale  # {variable: [why it is stale]}
    {}
    """

    def __init__(self, obj: xr.Dataset) -> None:
        self._obj = obj

    def rows(self, **criteria: Any) -> xr.Dataset:
        """Rows whose labels match: a scalar is equality, a list membership, a slice an
        inclusive range (see :func:`embstore.store.views.label_mask`)."""
        return select_rows(self._obj, **criteria)

    def normalize(self, **kwargs: Any) -> xr.Dataset:
        """Lazy :func:`embstore.normalize` of this dataset (same keyword arguments)."""
        from ._normalize import normalize  # the verbs sit above the views this module uses

        return normalize(self._obj, **kwargs)

    def neighbors(self, query: Any, **kwargs: Any) -> pd.DataFrame:
        """:func:`embstore.neighbors` over this dataset (same arguments)."""
        from ._neighbors import neighbors

        return neighbors(self._obj, query, **kwargs)

    def to_dataframe(self, *variables: str) -> pd.DataFrame:
        """One row per sample, indexed by ``path``: every label, then the given
        ``(sample, feature)`` variables one column per feature (``embedding_0``...).

        ``Dataset.to_dataframe`` cannot keep ``path`` (xarray indexes rows by ``sample``,
        which has no coordinate, and leaves indexed coordinates out of the columns).
        """
        ds = self._obj
        labels = [n for n, c in ds.coords.items() if c.dims == (SAMPLE,) and n != INDEX_LABEL]
        columns: dict[str, Any] = {str(n): np.asarray(ds[n].values) for n in labels}
        for name in variables:
            values = np.asarray(ds[name].values)
            for j in range(values.shape[1]):
                columns[f"{name}_{j}"] = values[:, j]
        return pd.DataFrame(columns, index=_path_index(ds))

    def to_pandas(self, variable: str = "embedding") -> pd.DataFrame:
        """``variable`` as a DataFrame: rows indexed by ``path``, one column per feature."""
        return self._obj[variable].emb.to_pandas()

    def torch_dataset(
        self,
        *,
        variable: str = "embedding",
        label: str | None = None,
        drop_nonfinite: bool = True,
        allow_stale: bool = False,
    ) -> EmbeddingDataset:
        """These rows as a torch ``Dataset`` of ``(vector, class index)`` for probes
        (:func:`embstore._torch_dataset.torch_dataset`; torch is imported only here)."""
        from ._torch_dataset import torch_dataset

        return torch_dataset(
            self._obj,
            variable=variable,
            label=label,
            drop_nonfinite=drop_nonfinite,
            allow_stale=allow_stale,
        )

    @property
    def provenance(self) -> dict[str, Any]:
        """The store's decoded provenance (:func:`embstore.store.views.provenance`)."""
        return provenance(self._obj)

    @property
    def stale(self) -> dict[str, list[str]]:
        """``{variable: reasons}`` for each derived variable whose inputs changed since it
        was computed, e.g. ``{"normalized": ["subject of 941 rows changed since it was
        computed"]}``; ``{}`` when all are fresh
        (:func:`embstore.store.variables.stale_variables`; reads labels, not vectors)."""
        from .store.variables import stale_variables

        return stale_variables(self._obj)


def _path_index(obj: xr.Dataset | xr.DataArray) -> pd.Index:
    if INDEX_LABEL in obj.coords and obj[INDEX_LABEL].dims == (SAMPLE,):
        return pd.Index(np.asarray(obj[INDEX_LABEL].values, dtype=object), name=INDEX_LABEL)
    return pd.RangeIndex(obj.sizes[SAMPLE], name=SAMPLE)


@xr.register_dataarray_accessor("emb")
class EmbDataArrayAccessor:
    """``da.emb.provenance``: the decoded provenance of one variable (e.g. ``normalized``)."""

    def __init__(self, obj: xr.DataArray) -> None:
        self._obj = obj

    @property
    def provenance(self) -> dict[str, Any]:
        return provenance(self._obj)

    def to_pandas(self) -> pd.DataFrame | pd.Series:
        """This ``sample`` variable as pandas with ``path`` as the index (a DataFrame with one
        column per feature for ``(sample, feature)``, a Series for a label)."""
        da = self._obj
        index = _path_index(da)
        if da.ndim == 1:
            return pd.Series(np.asarray(da.values), index=index, name=da.name)
        columns = da.get_index(da.dims[1]) if da.ndim == 2 else None
        return pd.DataFrame(np.asarray(da.values), index=index, columns=columns)
