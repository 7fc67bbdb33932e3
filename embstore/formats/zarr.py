"""Zarr datasets: any xarray-readable Zarr with ``embedding`` and ``path`` labels.

Read: e.g. a subset written with ``embstore.open(s).isel(sample=slice(0, 10)).to_zarr(out)``,
or another embstore store (an Icechunk repository; its newest version is read, so stores can
be merged); 1-D sample coordinates become labels. Write: a Zarr v3 copy that
``xarray.open_zarr`` opens without embstore, labels as coordinates and provenance as JSON text.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from .base import Format, Progress, duplicate_key, unicode_key
from .xarray_io import DatasetSource, plain_dataset

#: Files that mark a folder as a Zarr group (v3, v2, v2 consolidated).
_MARKERS = ("zarr.json", ".zgroup", ".zmetadata")


def _is_store(path: Path) -> bool:
    from ..store import is_store

    return is_store(path)


def can_open(path: Path) -> bool:
    """A folder holding Zarr group metadata, or an embstore store."""
    if not path.is_dir():
        return False
    return any((path / name).is_file() for name in _MARKERS) or _is_store(path)


def _open(path: Path) -> xr.Dataset:
    if _is_store(path):
        from ..store import open_store

        return open_store(path)
    with warnings.catch_warnings():
        # a store without consolidated metadata is fine: xarray warns, then reads it directly
        warnings.simplefilter("ignore", RuntimeWarning)
        return xr.open_zarr(path, chunks={})


def open_zarr(path: Path) -> DatasetSource:
    return DatasetSource(path, _open, "Zarr")


def check_keys(keys: Sequence[Any]) -> str | None:
    """Zarr strings are UTF-8; one entry per row."""
    return unicode_key(keys) or duplicate_key(keys)


def write_zarr(ds: xr.Dataset, variable: str, tmp: Path, progress: Progress | None) -> None:
    plain_dataset(ds, variable).to_zarr(tmp, mode="w-", zarr_format=3, consolidated=False)
    if progress:
        progress(ds.sizes["sample"], ds.sizes["sample"])


FORMAT = Format(
    name="zarr",
    description="a Zarr dataset (xarray.open_zarr opens it) or an embstore store",
    can_open=can_open,
    open=open_zarr,
    check_keys=check_keys,
    write=write_zarr,
)
