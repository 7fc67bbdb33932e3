"""Converting a schema-1 store (a plain Zarr folder with its own commit rule) to schema 2.

Only what the schema-1 store had committed is read: its root ``zarr.json`` recorded the
committed row count and the shapes of every array, and anything beyond (an interrupted write)
is ignored. The new store gets every array, its attributes and the provenance log, in ONE
version; the old store is only read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .._progress import Progress
from .._version import __version__
from ..errors import StoreError
from ..keys import check_keys
from .layout import ROOT_ATTR, SAMPLE, dims_of, now
from .location import StoreLike, parse_location
from .repo import is_store, plain, read_state, repository_exists
from .schema import SCHEMA_VERSION
from .transaction import Transaction, run_transaction

INTERNAL_V1 = "_embstore"


@dataclass
class UpgradeReport:
    """What :func:`upgrade` converted."""

    old: str
    new: str
    rows: int
    arrays: list[str]

    def summary(self) -> str:
        return (
            f"{self.new}: schema-2 store made from {self.old} "
            f"({self.rows} rows; {', '.join(self.arrays)})"
        )


def _read_v1(old: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    root = old / "zarr.json"
    try:
        doc = json.loads(root.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{old}: no zarr.json; not a schema-1 embstore store") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"{root}: unreadable ({exc.__class__.__name__})") from exc
    attrs = doc.get("attributes", {})
    meta = attrs.get(ROOT_ATTR)
    if not isinstance(meta, dict) or meta.get("schema_version") != 1:
        raise StoreError(f"{old}: not a schema-1 embstore store")
    consolidated = (doc.get("consolidated_metadata") or {}).get("metadata") or {}
    arrays = {
        name: m
        for name, m in consolidated.items()
        if m.get("node_type") == "array" and "/" not in name and name != INTERNAL_V1
    }
    return attrs, arrays


def upgrade(
    old: StoreLike,
    new: StoreLike,
    *,
    progress: Progress | None = None,
) -> UpgradeReport:
    """Convert the schema-1 store ``old`` into a new store ``new`` (which must not exist).

    Examples
    --------
    >>> embstore.upgrade("bv.zarr", "bv2.store").summary()
    'bv2.store: schema-2 store made from bv.zarr (20 rows; age_mo, embedding, ...)'
    """
    old = Path(old)
    attrs, arrays = _read_v1(old)
    rows = int(attrs[ROOT_ATTR]["rows"])
    location = parse_location(new)
    if is_store(location) or (  # an empty repository is what an interrupted upgrade leaves
        not repository_exists(location)
        and location.path is not None
        and location.path.exists()
        and any(location.path.iterdir())
    ):
        raise StoreError(f"{location}: exists; upgrade writes a new store")
    if "path" in arrays:  # rows come in here too: their keys follow the policy
        stored = zarr.open_array(str(old / "path"), mode="r")[:rows]
        check_keys(np.asarray(stored, dtype=object).tolist(), source=f"{old}/path")

    def work(tx: Transaction) -> UpgradeReport:
        if tx.state is not None or list(tx.group.keys()):
            raise StoreError(f"{location}: exists; upgrade writes a new store")
        total = sum(rows if dims_of(m)[:1] == (SAMPLE,) else 1 for m in arrays.values())
        done = 0
        for name, meta in arrays.items():
            done += _copy_array(old / name, tx.group, name, meta, rows)
            if progress is not None:
                progress(done, total)
        meta = plain(attrs[ROOT_ATTR])
        meta["schema_version"] = SCHEMA_VERSION
        meta["upgraded_from"] = {"store": str(old), "schema_version": 1, "rows": rows}
        meta["provenance"] = [
            *meta.get("provenance", []),
            {
                "action": "upgrade",
                "time": now(),
                "embstore_version": __version__,
                "status": "complete",
                "from": str(old),
            },
        ]
        tx.set_meta(meta)
        read_state(tx.group, location=location)
        tx.message = f"upgrade from schema-1 store {old}"
        tx.metadata.update(rows=rows, sources=[str(old)])
        return UpgradeReport(str(old), str(location), rows, sorted(arrays))

    return run_transaction(location, work, action="upgrade", message="upgrade", create=True)


def _copy_array(
    source_path: Path, group: zarr.Group, name: str, meta: dict[str, Any], rows: int
) -> int:
    """Copy the committed part of one schema-1 array; return the rows (or 1) copied."""
    try:
        source = zarr.open_array(str(source_path), mode="r")
    except (OSError, ValueError, KeyError) as exc:
        raise StoreError(f"{source_path}: unreadable array ({exc.__class__.__name__})") from exc
    along_samples = dims_of(meta)[:1] == (SAMPLE,)
    shape = (rows, *meta["shape"][1:]) if along_samples else tuple(meta["shape"])
    string = str(meta.get("data_type")) == "string"
    target = group.create_array(
        name,
        shape=shape,
        chunks=source.chunks,
        dtype=str if string else source.dtype,
        fill_value=source.fill_value,
        dimension_names=dims_of(meta) or None,
        compressors=source.compressors or None,
        attributes=dict(meta.get("attributes", {})),
    )
    step = source.chunks[0] if shape else 1
    for start in range(0, shape[0] if shape else 1, max(step, 1)):
        block = source[start : min(start + step, shape[0])] if shape else source[...]
        values = np.asarray(block, dtype=object) if string else np.asarray(block)
        target[start : start + len(values)] = values
    return rows if along_samples else 1
