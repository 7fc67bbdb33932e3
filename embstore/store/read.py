"""Reading a store: ``open_store(store, version=...)`` gives a lazy :class:`xarray.Dataset`.

A reader outside embstore needs only xarray and icechunk::

    repo = icechunk.Repository.open(icechunk.local_filesystem_storage("bv.store"))
    ds = xr.open_zarr(repo.readonly_session("main").store, consolidated=False)
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager

import xarray as xr

from .location import Location, StoreLike
from .repo import read_state, readonly_group, unreadable_as_store_error
from .views import prepare_dataset

#: ``ds.encoding`` keys of a dataset read from a store: the version's id and the store.
VERSION_ENCODING = "embstore_version_id"
STORE_ENCODING = "embstore_store"


def open_store(store: StoreLike, *, version: str | None = None) -> xr.Dataset:
    """Open a store (or one of its versions) as a lazy :class:`xarray.Dataset`.

    Parameters
    ----------
    store
        A local folder or ``s3://bucket/prefix``.
    version
        A tag, a version id (or an unambiguous prefix of one, as ``embstore log`` prints) or
        None for the newest version.

    Labels (``path``, ``subject``, ``age_mo``, ``category``...) are numpy, not dask: each is
    read whole into memory on its first use (strings as ``object`` arrays of Python ``str``)
    and kept; ``path`` is an index (``ds.sel(path=...)``) built on the first lookup; provenance
    attributes are JSON text (:func:`~embstore.store.views.provenance` decodes them). So
    ordinary xarray works, a subset saves with ``to_netcdf`` / ``to_zarr``, and opening reads
    no rows; see :func:`~embstore.store.views.prepare_dataset`. Embeddings stay lazy (dask).
    A damaged store shows as a one-line :class:`~embstore.errors.StoreError` when the damaged
    part is read.

    Examples
    --------
    >>> ds = embstore.open("bv.store")
    >>> ds.where(ds.subject == "00270001", drop=True).embedding.shape
    (8, 8)
    >>> embstore.tag("bv.store", "before-relabel")
    '...'
    >>> old = embstore.open("bv.store", version="before-relabel")
    >>> old.sizes["sample"]
    24
    """
    ds = open_lazily(store, version=version)
    guard = functools.partial(_label_read, str(store))
    prepared = prepare_dataset(ds, guard=guard)  # damage to a label shows on its first read
    prepared.encoding.update(ds.encoding)
    return prepared


def _label_read(location: str, name: str) -> AbstractContextManager[None]:
    return unreadable_as_store_error(location, f"cannot read label {name!r} from")


def open_lazily(store: StoreLike | Location, *, version: str | None = None) -> xr.Dataset:
    """The store as xarray reads it, nothing loaded: labels lazy (dask), attributes as the
    store holds them (nested dicts).

    For verbs that read a few labels of a large store (``normalize_store`` reads ``subject``
    and ``nonfinite``): memory then grows with those labels only, not with every label and
    the ``path`` index that :func:`open_store` may build.
    """
    location, session, group = readonly_group(store, version)
    read_state(group, location=location)  # a clear StoreError for a foreign repository
    with unreadable_as_store_error(location):
        # the group holds the version's metadata (read once by readonly_group): no listing
        zarr_store = xr.backends.ZarrStore(group, mode="r", use_zarr_fill_value_as_mask=False)
        # the engine named: no scan of the installed packages for backends (~4 ms a process)
        ds = xr.open_dataset(zarr_store, engine=xr.backends.StoreBackendEntrypoint, chunks={})
    ds.encoding[VERSION_ENCODING] = str(session.snapshot_id)
    ds.encoding[STORE_ENCODING] = str(location)
    return ds
