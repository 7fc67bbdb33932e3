"""``ds.emb``: the embstore accessor on xarray datasets (cf-xarray style).

It holds only the dataset and calls plain functions, which tests and users can call directly:
:func:`embstore.store.views.select_rows`, :func:`embstore.normalize`, :func:`embstore.neighbors`,
:func:`embstore.store.views.provenance`. Registered as soon as any embstore function that works on
datasets is used (``embstore.open`` included); ``import embstore.accessor`` registers it
explicitly, e.g. for a netCDF subset opened with plain xarray.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import xarray as xr

from .store.views import provenance, select_rows


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


@xr.register_dataarray_accessor("emb")
class EmbDataArrayAccessor:
    """``da.emb.provenance``: the decoded provenance of one variable (e.g. ``normalized``)."""

    def __init__(self, obj: xr.DataArray) -> None:
        self._obj = obj

    @property
    def provenance(self) -> dict[str, Any]:
        return provenance(self._obj)
