"""What a store holds (``embstore info``) and whether it is sound (``embstore validate``)."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from ._export import covered_rows
from .errors import StoreError
from .store import FEATURE, ROOT_ATTR, SAMPLE, open_store, parse_location, readonly_group
from .store.integrity import find_damage, intact_summary
from .store.location import StoreLike
from .store.read import VERSION_ENCODING
from .store.repo import open_repository, read_state, reads_store, short
from .store.schema import describe_metadata, schema_errors
from .store.variables import stale_reasons, stale_variables
from .store.views import provenance

#: How many example values / paths a listing shows.
SHOWN = 10


@reads_store
def info(store: StoreLike, *, version: str | None = None) -> dict[str, Any]:
    """Describe a store (its newest version, or ``version``): size, labels and their
    cardinalities, variables with provenance and coverage, flagged (non-finite) rows, and the
    provenance log. Reads labels, not vectors.

    Each row variable has a ``status``: ``"complete"``, or ``"stale: <reasons>"`` when a
    derived variable's inputs changed since it was computed (``stale`` lists the reasons).

    Examples
    --------
    >>> embstore.info("bv.store")["rows"]
    24
    """
    ds = open_store(store, version=version)
    meta = provenance(ds)
    rows = int(ds.sizes[SAMPLE])
    labels = {}
    for name, coord in ds.coords.items():
        if coord.dims != (SAMPLE,) or name in ("path", "nonfinite"):
            continue
        values = np.asarray(coord.values)
        missing = values == (-1 if values.dtype.kind in "iu" else "")
        counts = Counter(values[~missing].tolist())
        labels[str(name)] = {
            "dtype": "int" if values.dtype.kind in "iu" else "string",
            "unique": len(counts),
            "missing": int(missing.sum()),
            "top": [[_plain(k), v] for k, v in counts.most_common(SHOWN)],
        }
    nonfinite = np.asarray(ds["nonfinite"].values, dtype=bool)
    paths = ds["path"].values
    variables = {}
    for name, var in ds.data_vars.items():
        entry: dict[str, Any] = {
            "dims": list(var.dims),
            "dtype": str(var.dtype),
            "chunks": [c[0] for c in var.chunks] if var.chunks else None,
        }
        if ROOT_ATTR in var.attrs:
            entry["provenance"] = provenance(var)
        if var.dims[:1] == (SAMPLE,):
            entry["rows_covered"] = covered_rows(ds, str(name))
        if var.dims[:1] == (SAMPLE,) or "source" in entry.get("provenance", {}):
            entry["stale"] = stale_reasons(ds, str(name), store=store)  # derived: [] if fresh
            entry["status"] = (
                "stale: " + "; ".join(entry["stale"]) if entry["stale"] else "complete"
            )
        variables[str(name)] = entry
    return {
        "store": str(store),
        "version": ds.encoding.get(VERSION_ENCODING),
        "schema_version": meta["schema_version"],
        "rows": rows,
        "feature_size": int(ds.sizes.get(FEATURE, meta["feature_size"])),
        "model": meta.get("model"),
        "created": meta.get("created"),
        "labels": labels,
        "variables": variables,
        "flagged": {"nonfinite": int(nonfinite.sum()), "paths": paths[nonfinite][:SHOWN].tolist()},
        "provenance": meta.get("provenance", []),
    }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class ValidationReport:
    """Problems (``errors``) and remarks (``warnings``) found in a store version."""

    store: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    chunks_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


@reads_store
def validate(
    store: StoreLike, *, version: str | None = None, deep: bool = False
) -> ValidationReport:
    """Check a store version against its schema and for consistency.

    Errors: schema violations, arrays whose length differs from the row count or whose feature
    size differs, duplicate or empty paths, ages below -1. With ``deep`` every chunk of every
    array is read, so a missing or garbled chunk object is found (one error per array).
    A repository that cannot be opened at all raises a one-line :class:`StoreError`.
    Warnings: derived variables that are stale (their inputs changed since they were
    computed; see :func:`embstore.store.variables.stale_reasons`).
    """
    report = ValidationReport(str(store))
    if deep and _damaged(store, report):
        return report
    location, session, group = readonly_group(store, version)
    state = read_state(group, location=location)
    report.errors += schema_errors(describe_metadata(state.attrs, state.arrays))
    for name, meta in state.arrays.items():
        dims, shape = tuple(meta.get("dimension_names") or ()), meta["shape"]
        if dims[:1] == (SAMPLE,) and shape[0] != state.rows:
            report.errors.append(f"{name}: {shape[0]} rows, the store has {state.rows}")
        if FEATURE in dims and shape[dims.index(FEATURE)] != state.feature_size:
            report.errors.append(
                f"{name}: feature size {shape[dims.index(FEATURE)]}, store has {state.feature_size}"
            )
    if report.errors:
        return report
    if deep:  # every chunk first: damage is reported with the intact versions, not raised
        for name, array in group.arrays():
            report.chunks_read += _read_every_chunk(name, array, report)
        if report.errors:
            damaged = str(session.snapshot_id)
            intact = intact_summary(parse_location(store), open_repository(store), damaged)
            report.errors = [f"{store}: {e} in version {damaged}; {intact}" for e in report.errors]
            return report
    ds = open_store(store, version=version)
    paths = np.asarray(ds["path"].values, dtype=object)
    unique, counts = np.unique(paths, return_counts=True)
    if len(unique) != len(paths):
        dupes = unique[counts > 1]
        report.errors.append(
            f"{len(dupes)} duplicate path(s), e.g. {', '.join(dupes[:5].tolist())}"
        )
    if (paths == "").any():
        report.errors.append(f"{int((paths == '').sum())} row(s) with an empty path")
    if "age_mo" in ds.coords and (np.asarray(ds["age_mo"].values) < -1).any():
        report.errors.append("age_mo holds values below -1 (-1 is the only missing marker)")
    for name, reasons in stale_variables(ds, store=store).items():
        report.warnings.append(f"{name} is stale: {'; '.join(reasons)}")
    return report


def _damaged(store: StoreLike, report: ValidationReport) -> bool:
    """Deep validation's look at the objects (ref, snapshots, manifests, transaction logs):
    one error line per damaged object, naming the intact versions; True if any."""
    location = parse_location(store)
    try:
        repo = open_repository(location)
    except StoreError:
        if location.path is None or not (location.path / "snapshots").is_dir():
            raise  # not a repository at all: one line, as without --deep
        repo = None
    problems = find_damage(location, repo)
    if problems:
        intact = intact_summary(location, repo)
        report.errors += [f"{problem}; {intact}" for problem in problems]
    return bool(problems)


def _read_every_chunk(name: str, array: zarr.Array, report: ValidationReport) -> int:
    """Read every chunk of one array; record an error naming the first one that fails."""
    grid = [range(-(-size // chunk)) for size, chunk in zip(array.shape, array.chunks, strict=True)]
    read = 0
    for coord in itertools.product(*grid):
        region = tuple(
            slice(i * c, min((i + 1) * c, s))
            for i, c, s in zip(coord, array.chunks, array.shape, strict=True)
        )
        try:
            array[region]
        except Exception as exc:  # noqa: BLE001 - any failure to read is the finding itself
            report.errors.append(f"{name}: chunk {coord} cannot be read ({short(exc)})")
            return read
        read += 1
    return read
