"""Attachments: small derived arrays kept beside the rows (e.g. an approximate search index).

An attachment is a group ``_attachments/<name>`` of arrays plus attributes (the digest of
what it was built from, its parameters). It is written as one version of the store, like any
other change, and read from any version. xarray does not open subgroups, so attachments never
show up in :func:`embstore.open`'s dataset, exports or the schema's row arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr

from ..errors import EmbstoreError
from .location import StoreLike
from .repo import plain, readonly_group, unreadable_as_store_error
from .transaction import Transaction, run_transaction

#: The subgroup holding every attachment.
ATTACHMENTS = "_attachments"


def write_attachment(
    store: StoreLike,
    name: str,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
    *,
    message: str,
    action: str = "attach",
) -> None:
    """Replace the attachment ``name`` with ``arrays`` and ``attrs``, as one new version.

    Examples
    --------
    >>> centroids = np.zeros((3, 8), dtype=np.float32)
    >>> write_attachment("bv.store", "ann-embedding", {"centroids": centroids},
    ...                  {"digest": "d41d8cd9"}, message="approximate index of embedding")
    >>> embstore.log("bv.store")[0].message
    'approximate index of embedding'
    >>> arrays, attrs = read_attachment("bv.store", "ann-embedding")
    >>> arrays["centroids"].shape, attrs
    ((3, 8), {'digest': 'd41d8cd9'})
    >>> "centroids" in embstore.open("bv.store").variables  # not a row array
    False
    """
    if not name.replace("-", "_").isidentifier():
        raise EmbstoreError(f"attachment name {name!r}: letters, digits, '-' and '_' only")

    def work(tx: Transaction) -> None:
        tx.require_state()
        root = tx.group.require_group(ATTACHMENTS)
        if name in root:
            del root[name]
        group = root.create_group(name)
        for key, values in arrays.items():
            values = np.ascontiguousarray(values)
            array = group.create_array(key, shape=values.shape, dtype=values.dtype)
            array[...] = values
        group.attrs.update(plain(dict(attrs)))

    run_transaction(store, work, action=action, message=message)


def read_attachment(
    store: StoreLike, name: str, *, version: str | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The arrays and attributes of attachment ``name`` at ``version``, or ``None``."""
    location, _, group = readonly_group(store, version)
    with unreadable_as_store_error(location):
        try:
            found = group[f"{ATTACHMENTS}/{name}"]
        except KeyError:
            return None
        if not isinstance(found, zarr.Group):
            return None
        arrays = {key: np.asarray(array[...]) for key, array in found.arrays()}
        return arrays, dict(found.attrs)
