"""What a store holds (``embstore info``) and whether it is sound (``embstore validate``)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .export import covered_rows
from .schema import describe_metadata, schema_errors
from .store import (
    FEATURE,
    ROOT_ATTR,
    SAMPLE,
    disk_arrays,
    open_store,
    read_state,
    uncommitted_changes,
)
from .views import provenance

#: How many example values / paths a listing shows.
SHOWN = 10


def info(store: str | os.PathLike[str]) -> dict[str, Any]:
    """Describe a store: size, labels and their cardinalities, variables with provenance and
    coverage, flagged (non-finite) rows, and the provenance log. Reads labels, not vectors.

    Examples
    --------
    >>> embstore.info("bv.zarr")["rows"]  # doctest: +SKIP
    34550
    """
    ds = open_store(store)
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
            covered = covered_rows(ds, str(name))
            entry["rows_covered"] = covered
            entry["status"] = (
                "complete" if covered == rows else f"stale: covers {covered} of {rows} rows"
            )
        variables[str(name)] = entry
    return {
        "store": str(store),
        "schema_version": meta["schema_version"],
        "rows": rows,
        "feature_size": int(ds.sizes.get(FEATURE, meta["feature_size"])),
        "model": meta.get("model"),
        "created": meta.get("created"),
        "labels": labels,
        "variables": variables,
        "flagged": {"nonfinite": int(nonfinite.sum()), "paths": paths[nonfinite][:SHOWN].tolist()},
        "provenance": meta.get("provenance", []),
        "uncommitted": uncommitted_changes(store),
    }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class ValidationReport:
    """Problems (``errors``) and harmless leftovers (``warnings``) found in a store."""

    store: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def validate(store: str | os.PathLike[str]) -> ValidationReport:
    """Check a store against its schema and for consistency.

    Errors: schema violations, arrays whose committed length differs from the committed row
    count or whose feature size differs, duplicate paths, ages below -1. Warnings: leftovers of
    an interrupted write (readers never see them; the next write removes them).
    """
    path = Path(store)
    report = ValidationReport(str(path))
    state = read_state(path)
    report.errors += schema_errors(describe_metadata(state.attrs, state.arrays))
    report.warnings += [
        f"{w} (an interrupted write; readers do not see it and the next write repairs it)"
        for w in uncommitted_changes(path)
    ]
    on_disk = disk_arrays(path)
    for name, meta in state.arrays.items():
        dims, shape = tuple(meta.get("dimension_names") or ()), meta["shape"]
        if name not in on_disk:
            report.errors.append(f"{name}: committed but missing on disk")
        if dims[:1] == (SAMPLE,) and shape[0] != state.rows:
            report.errors.append(f"{name}: {shape[0]} committed rows, the store has {state.rows}")
        if FEATURE in dims and shape[dims.index(FEATURE)] != state.feature_size:
            report.errors.append(
                f"{name}: feature size {shape[dims.index(FEATURE)]}, store has {state.feature_size}"
            )
    if report.errors:
        return report
    ds = open_store(path)
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
    return report
