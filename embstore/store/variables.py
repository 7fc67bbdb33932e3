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

Knowing when a derived variable is stale
----------------------------------------
A derived variable records what it was computed from, so that every reader where freshness
matters can say when a later write (append, relabel, restore, a categories file that changed)
made it stale, and why. A verb that derives a variable (an aggregate, say) does three things:

1. Compute from a dataset read at the version being written
   (``open_lazily(store, version=tx.parent)``: its encoding carries the version id).
2. Put ``"source"`` (the variable it was computed from) and ``INPUTS_KEY:
   record_inputs(ds, source=..., labels=[the label columns it read], categories=...)`` in
   the variable's provenance, the mapping under ``ROOT_ATTR`` of :attr:`NewVariable.attrs`.
3. Write it with :func:`add_variables`.

Then :func:`stale_reasons` / :func:`stale_variables` report it, and ``info``, ``validate``,
``inspect``, ``export`` (``allow_stale``) and ``ds.emb.stale`` all use them. A verb that can
recompute its variable from the parameters it recorded offers ``refresh=True`` (see
:func:`embstore.normalize_store`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from .._progress import RowCountingTarget
from ..errors import EmbstoreError, StaleVariableError, StoreError
from .layout import MATRIX_COMPRESSORS, ROOT_ATTR, SAMPLE, dims_of
from .location import StoreLike
from .read import STORE_ENCODING, VERSION_ENCODING, open_lazily, open_store
from .transaction import Transaction
from .views import provenance

log = logging.getLogger(__name__)

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
    da.store(list(lazy.values()), targets, lock=False)


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


# -- what a derived variable was computed from, and whether that still holds ------------------
#
# A derived variable records its inputs in its provenance (``provenance(ds[name])["inputs"]``,
# made by :func:`record_inputs`): the source variable (and a digest of the source's own
# provenance, so a recomputed source shows), the row count, a digest of each label column
# its statistics or exclusions read (over those rows), the version it was computed at, and
# the categories file it was limited to. :func:`stale_reasons` compares them with the
# version at hand; every verb that reads a derived variable where freshness matters
# (``info``, ``validate``, ``inspect``, ``export``, ``ds.emb.stale``) asks it. A variable
# that predates this record is checked for its row count only.

#: The key of a derived variable's provenance that holds its inputs.
INPUTS_KEY = "inputs"
#: Rows hashed at a time (bounds the memory a digest of a large string label takes).
_DIGEST_BLOCK = 65536


def label_digest(values: Any) -> str:
    """A digest of a label column's values (numpy, or anything ``numpy.asarray`` takes).

    Equal values give equal digests whatever the array type holding them (``object``,
    numpy ``StringDType``, ``<U``; any integer or bool width).

    >>> label_digest(np.array(["a", "b"], dtype=object)) == label_digest(np.array(["a", "b"]))
    True
    """
    a = np.asarray(values)
    h = hashlib.blake2b(digest_size=16)
    if a.dtype.kind in "biu":
        h.update(b"int:")
        h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())
    else:
        h.update(b"str:")
        for start in range(0, len(a), _DIGEST_BLOCK):
            block = [str(v) for v in a[start : start + _DIGEST_BLOCK].tolist()]
            h.update(json.dumps(block, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def record_inputs(
    ds: xr.Dataset,
    *,
    source: str,
    labels: Iterable[str] = (),
    categories: Iterable[str] | None = None,
    categories_file: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """What a derived variable computed from ``ds`` depends on, for its provenance.

    Store the result under ``INPUTS_KEY`` in the variable's provenance (the mapping under
    ``ROOT_ATTR`` of its attributes, which must also name ``source``). ``labels`` are the
    label columns the computation read (an exclusion by subject reads ``subject``, a
    grouping by age reads ``age_mo``...); labels ``ds`` lacks are left out.
    ``categories`` is the list of categories the computation was limited to, and
    ``categories_file`` the file it was read from: if the file later lists other
    categories, the variable is stale. ``ds`` is the dataset the variable is
    computed from (``embstore.open`` or ``open_lazily`` at the version being written: the
    version id comes from its encoding; None for a dataset not read from a store).

    Examples
    --------
    ::

        inputs = record_inputs(ds, source="embedding", labels=["subject", "nonfinite"])
        attrs = {ROOT_ATTR: {"source": "embedding", ..., INPUTS_KEY: inputs}}
    """
    rows = int(ds.sizes[SAMPLE])
    read = [str(n) for n in dict.fromkeys(labels) if n in ds.coords]
    file = None if categories_file is None else str(Path(categories_file).resolve())
    return {
        "source": source,
        "source_provenance": _provenance_digest(ds, source),
        "rows": rows,
        "labels": {name: label_digest(ds[name].values) for name in read},
        "version": ds.encoding.get(VERSION_ENCODING),
        "categories": None if categories is None else list(categories),
        "categories_file": file,
    }


def _provenance_digest(ds: xr.Dataset, name: str) -> str | None:
    """Digest of a variable's own provenance (None for stored vectors, which have none)."""
    if name not in ds.variables:
        return None
    prov = provenance(ds[name])
    if not prov:
        return None
    text = json.dumps(prov, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def stale_reasons(ds: xr.Dataset, name: str, *, store: StoreLike | None = None) -> list[str]:
    """Why derived variable ``name`` of ``ds`` no longer matches its inputs ([] if it does).

    Each reason is a phrase such as ``"subject of 941 rows changed since it was computed"``
    or ``"covers 37055 of 37056 rows"``. The rows whose labels changed are counted against
    the version the variable was computed at, read from ``store`` (default: the store
    ``ds`` was opened from); when that version is gone (``gc``) the reason says the label
    changed, without a count. Variables that are not derived (no ``source`` in their
    provenance) are never stale. For a subset of a store's rows (``ds.isel(...)``) the whole
    store version it came from is checked.
    """
    prov = provenance(ds[name])
    if "source" not in prov:
        return []
    ds = _whole(ds, store)
    now_rows = int(ds.sizes[SAMPLE])
    inputs = prov.get(INPUTS_KEY)
    rows = int(inputs["rows"] if inputs else prov.get("rows", now_rows))
    reasons = _input_reasons(ds, inputs, store, min(rows, now_rows)) if inputs else []
    if rows < now_rows:
        reasons.append(f"covers {rows} of {now_rows} rows")
    elif rows > now_rows:
        reasons.append(f"was computed over {rows} rows; the store now has {now_rows}")
    return reasons


def check_fresh(
    ds: xr.Dataset, name: str, *, allow_stale: bool, store: StoreLike | None = None
) -> list[str]:
    """Refuse derived variable ``name`` if it is stale (:func:`stale_reasons`) unless
    ``allow_stale``; return the reasons (``[]`` if fresh), which a report may then name.

    For every consumer where freshness matters (export, neighbors, aggregate, torch datasets,
    indexes): a stale variable is never used silently.
    """
    if name not in ds.data_vars:
        return []
    stale = stale_reasons(ds, name, store=store)
    if stale and not allow_stale:
        where = f"{store}: " if store is not None else ""
        msg = (
            f"{where}{name!r} is stale ({'; '.join(stale)}); recompute it (refresh=True)"
            " or pass allow_stale=True to use it as it is"
        )
        raise StaleVariableError(msg)
    return stale


def stale_variables(ds: xr.Dataset, *, store: StoreLike | None = None) -> dict[str, list[str]]:
    """``{name: reasons}`` for every stale derived variable of ``ds`` (see :func:`stale_reasons`).

    Examples
    --------
    ::

        stale_variables(embstore.open("bv.store"))
        # {'normalized': ['subject of 941 rows changed since it was computed']}
    """
    found = {}
    ds = _whole(ds, store)
    for name in ds.data_vars:
        reasons = stale_reasons(ds, str(name), store=store)
        if reasons:
            found[str(name)] = reasons
    return found


def _whole(ds: xr.Dataset, store: StoreLike | None) -> xr.Dataset:
    """``ds``, or the whole store version it is a subset of (``ds.isel(...)``): staleness is
    a property of the whole variable, and the digests cover every row."""
    rows = provenance(ds).get("rows")
    if not isinstance(rows, int) or rows == ds.sizes[SAMPLE]:
        return ds
    where = store if store is not None else ds.encoding.get(STORE_ENCODING)
    if where is None:
        msg = (
            f"a subset ({ds.sizes[SAMPLE]} of {rows} rows) cannot tell whether its variables are"
            " stale; ask the whole store (embstore.open(store).emb.stale)"
        )
        raise EmbstoreError(msg)
    return open_store(where, version=ds.encoding.get(VERSION_ENCODING))


def _input_reasons(
    ds: xr.Dataset, inputs: Mapping[str, Any], store: StoreLike | None, rows: int
) -> list[str]:
    reasons = []
    source = inputs.get("source")
    if source is not None and source not in ds.data_vars:
        reasons.append(f"its source {source!r} is gone")
    elif source is not None and _provenance_digest(ds, source) != inputs.get("source_provenance"):
        reasons.append(f"its source {source!r} was recomputed since")
    where = store if store is not None else ds.encoding.get(STORE_ENCODING)
    for label, digest in (inputs.get("labels") or {}).items():
        if label not in ds.coords:
            reasons.append(f"its label {label!r} is gone")
            continue
        values = np.asarray(ds[label].values)[:rows]
        if label_digest(values) == digest:
            continue
        changed = _rows_changed(where, inputs.get("version"), label, values)
        if changed is None:
            reasons.append(f"{label} changed since it was computed")
        elif changed:
            plural = "row" if changed == 1 else "rows"
            reasons.append(f"{label} of {changed} {plural} changed since it was computed")
    reasons += _categories_reasons(inputs.get("categories_file"), inputs)
    return reasons


def _rows_changed(
    store: StoreLike | None, version: str | None, label: str, values: np.ndarray
) -> int | None:
    """How many of ``values`` differ from ``label`` at ``version`` (None if unreadable)."""
    if store is None or version is None:
        return None
    try:
        then = np.asarray(open_lazily(store, version=version)[label].values)
    except (EmbstoreError, KeyError) as exc:
        log.debug("%s: cannot read %r at version %s (%s)", store, label, version, exc)
        return None
    if len(then) != len(values):
        return None
    if values.dtype.kind in "biu" and then.dtype.kind in "biu":
        return int((values.astype(np.int64) != then.astype(np.int64)).sum())
    return int((values.astype(object) != then.astype(object)).sum())


def _categories_reasons(file: str | None, inputs: Mapping[str, Any]) -> list[str]:
    """The categories file now lists other categories than the variable was limited to."""
    if file is None or not Path(file).is_file():
        return []
    from ..labels import read_categories

    recorded = set(inputs.get("categories") or ())
    try:
        listed = set(read_categories(file))
    except EmbstoreError:
        return [f"its categories file {file} can no longer be read"]
    if not recorded or listed == recorded:
        return []
    added, removed = len(listed - recorded), len(recorded - listed)
    change = f"{added} added, {removed} removed"
    return [f"its categories file {file} now lists other categories ({change})"]
