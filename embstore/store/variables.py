"""Derived variables (``normalized``, aggregates...): adding or replacing them inside a
transaction.

A verb computes what it derives (lazily, with dask), then hands the arrays to
:func:`add_variables` inside :func:`~embstore.store.transaction.run_transaction`; nothing
outside :mod:`embstore.store` creates, replaces or commits arrays::

    def work(tx):
        check_replaceable(tx, {"normalized": (SAMPLE, FEATURE)}, overwrite=overwrite,
                          derived={"normalized"}, kind="normalized")
        ...  # compute, reading the version tx started from
        add_variables(tx, {
            "normalized": NewVariable(values, (SAMPLE, FEATURE), {ROOT_ATTR: provenance}),
            "normalized_mean": NewVariable(mean, (FEATURE,), {"long_name": "..."}),
        }, like="embedding", overwrite=overwrite, derived={"normalized"}, kind="normalized")

    run_transaction(store, work, action="normalize", message="normalize")

The new arrays land in the one commit of that transaction: a killed write commits nothing,
and a replaced variable stays in the store's history.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import zarr

from .._progress import RowCountingTarget
from ..errors import StoreError
from .layout import MATRIX_COMPRESSORS, ROOT_ATTR, SAMPLE, dims_of
from .transaction import Transaction

#: The attribute of a (sample, ...) array naming the label arrays xarray attaches to it.
COORDINATES_ATTR = "coordinates"


@dataclass
class NewVariable:
    """An array to add to a store.

    ``values`` is a numpy array (written at once, one chunk: statistics, small tables) or a
    dask array (rows first when ``dims`` starts with ``sample``: written chunk by chunk in the
    row chunks of the ``like`` array, float32 NaN where not written). ``attrs`` are stored
    as the array's attributes; a derived variable's provenance goes under ``ROOT_ATTR``.
    """

    values: np.ndarray | da.Array
    dims: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)


def _is_derived(meta: Mapping[str, Any]) -> bool:
    """An array a verb derived: its provenance names the variable it was computed from."""
    attrs = meta.get("attributes") or {}
    prov = attrs.get(ROOT_ATTR)
    return isinstance(prov, Mapping) and "source" in prov


def check_replaceable(
    tx: Transaction,
    arrays: Mapping[str, tuple[str, ...]],
    *,
    overwrite: bool,
    derived: Collection[str] = (),
    kind: str = "derived",
) -> None:
    """Refuse to replace anything but an earlier derived variable's own arrays.

    ``arrays`` maps each name about to be written to its dims. An existing array of that
    name may be replaced only with ``overwrite``, only if its dims match, and, for the names
    in ``derived``, only if it carries a derived variable's provenance (so a label or the
    embedding is never replaced). Raises :class:`~embstore.errors.StoreError` naming the
    array; call it before the expensive work so a mistake fails at once.
    """
    state = tx.require_state()
    for name, dims in arrays.items():
        meta = state.arrays.get(name)
        if meta is None:
            continue
        if dims_of(meta) != tuple(dims) or (name in derived and not _is_derived(meta)):
            msg = f"{tx.location}: {name!r} is not a {kind} variable; choose another name"
            raise StoreError(msg)
        if not overwrite:
            raise StoreError(
                f"{tx.location}: variable {name!r} exists (pass overwrite=True to replace it)"
            )


def add_variables(
    tx: Transaction,
    variables: Mapping[str, NewVariable],
    *,
    like: str,
    overwrite: bool = False,
    derived: Collection[str] = (),
    kind: str = "derived",
    distributed: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Write ``variables`` into the transaction, replacing earlier ones of the same names.

    Parameters
    ----------
    tx
        The open transaction (``staged=True`` when ``distributed``).
    variables
        Name -> :class:`NewVariable`. numpy values are written first, then every dask array
        in one pass.
    like
        The existing ``(sample, ...)`` array whose row chunks and label list the new row
        arrays take (e.g. ``"embedding"``).
    overwrite, derived, kind
        See :func:`check_replaceable` (checked again here, at the version being written).
    distributed
        Compute the dask arrays on a ``dask.distributed`` cluster: workers write into a fork
        of the (staged) session and their changes merge back into ``tx``.
    progress
        ``progress(done, total)`` in rows written (one writer; not with ``distributed``).
    """
    check_replaceable(
        tx,
        {name: v.dims for name, v in variables.items()},
        overwrite=overwrite,
        derived=derived,
        kind=kind,
    )
    template = tx.group[like]
    if not isinstance(template, zarr.Array):
        raise StoreError(f"{tx.location}: {like!r} is not an array")
    for name in variables:
        if name in tx.group:
            del tx.group[name]
    lazy: dict[str, da.Array] = {}
    for name, var in variables.items():
        if isinstance(var.values, da.Array):
            _create_rows(tx, name, var, template)
            lazy[name] = var.values
        else:
            _write_small(tx, name, var)
    if not lazy:
        return
    if distributed:
        from icechunk.dask import store_dask

        fork = tx.fork()
        forked = [zarr.open_array(fork.store, path=name, mode="r+") for name in lazy]
        tx.session.merge(store_dask(sources=list(lazy.values()), targets=forked))
        return
    targets: list[Any] = [tx.group[name] for name in lazy]
    if progress is not None:
        rows = [t.shape[0] if t.shape else 0 for t in targets]
        parts = _shared_progress(progress, rows)
        targets = [RowCountingTarget(t, p, n) for t, p, n in zip(targets, parts, rows, strict=True)]
    da.store(list(lazy.values()), targets, lock=False)  # type: ignore[arg-type]


def _shared_progress(
    progress: Callable[[int, int], None], totals: list[int]
) -> list[Callable[[int, int], None]]:
    """One ``progress(done, total)`` per target, reporting the sum over all of them."""
    done = [0] * len(totals)

    def part(i: int) -> Callable[[int, int], None]:
        def report(rows: int, total: int) -> None:
            done[i] = rows
            progress(sum(done), sum(totals))

        return report

    return [part(i) for i in range(len(totals))]


def _write_small(tx: Transaction, name: str, var: NewVariable) -> None:
    values = np.asarray(var.values)
    array = tx.group.create_array(
        name,
        shape=values.shape,
        chunks=values.shape if values.ndim else "auto",
        dtype=values.dtype,
        dimension_names=var.dims,
        attributes=dict(var.attrs),
    )
    array[...] = values


def _create_rows(tx: Transaction, name: str, var: NewVariable, template: zarr.Array) -> zarr.Array:
    values = var.values
    attrs = dict(var.attrs)
    if var.dims[:1] == (SAMPLE,):
        attrs.setdefault(COORDINATES_ATTR, template.attrs.get(COORDINATES_ATTR, "path nonfinite"))
        same = tuple(values.shape) == tuple(template.shape)
        chunks = template.chunks if same else (template.chunks[0], *values.shape[1:])
    else:
        chunks = values.shape
    dtype = np.dtype(values.dtype)
    return tx.group.create_array(
        name,
        shape=values.shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=float("nan") if dtype.kind == "f" else None,
        dimension_names=var.dims,
        compressors=MATRIX_COMPRESSORS,
        attributes=attrs,
    )
