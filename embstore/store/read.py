"""Reading a store: ``open_store(store, version=...)`` gives a lazy :class:`xarray.Dataset`.

A reader outside embstore needs only xarray and icechunk::

    repo = icechunk.Repository.open(icechunk.local_filesystem_storage("bv.store"))
    ds = xr.open_zarr(repo.readonly_session("main").store, consolidated=False)
"""

from __future__ import annotations

import xarray as xr

from .layout import BRANCH
from .location import StoreLike
from .repo import read_state, readonly_group, unreadable_as_store_error


def open_store(store: StoreLike, *, version: str | None = None) -> xr.Dataset:
    """Open a store (or one of its versions) as a lazy :class:`xarray.Dataset`.

    Parameters
    ----------
    store
        A local folder or ``s3://bucket/prefix``.
    version
        A tag, a version id (or an unambiguous prefix of one, as ``embstore log`` prints) or
        None for the newest version.

    String labels (``path``, ``subject``, ``category``...) come back as ``object`` arrays of
    Python ``str`` (zarr hands back numpy ``StringDType``, on which ``.astype(str)`` fails).
    ``age_mo`` is ``int32`` with -1 for unknown. Nothing but the metadata is read.

    Examples
    --------
    >>> ds = embstore.open("bv.store")                                   # doctest: +SKIP
    >>> ds.embedding.isel(sample=(ds.subject == "00270001").values)      # doctest: +SKIP
    >>> old = embstore.open("bv.store", version="before-relabel")        # doctest: +SKIP
    """
    location, session, group = readonly_group(store, version)
    read_state(group, location=location)  # a clear StoreError for a foreign repository
    with unreadable_as_store_error(location):
        ds = xr.open_zarr(session.store, consolidated=False, chunks={})
    ds = _strings_as_objects(ds)
    ds.encoding["embstore_version_id"] = str(session.snapshot_id)
    ds.encoding["embstore_branch"] = BRANCH if version is None else None
    return ds


def _strings_as_objects(ds: xr.Dataset) -> xr.Dataset:
    strings = {
        name: var.astype(object)
        for name, var in ds.variables.items()
        if var.dtype.kind == "T" or (var.dtype.kind == "O" and name in ds.coords)
    }
    return ds.assign_coords({k: v for k, v in strings.items() if k in ds.coords}).assign(
        {k: v for k, v in strings.items() if k not in ds.coords}
    )
