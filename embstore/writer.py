"""Appending rows to a store: exactly once, crash-safe, several processes at a time.

See :mod:`embstore.store` for the commit rule this follows.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from . import __version__
from .errors import BadInputError, DuplicatePathError, StoreError
from .labels import INTEGER_LABELS, MISSING_AGE, MISSING_STR, check_label_name
from .store import (
    ROOT_ATTR,
    SAMPLE,
    StoreState,
    check_feature_size,
    commit_root,
    create_label_array,
    create_store,
    dims_of,
    is_store,
    now,
    read_state,
    repair,
    validated_state,
    write_lock,
)


@dataclass
class AppendResult:
    """What one :meth:`StoreWriter.append` did."""

    added: int = 0
    duplicates: list[str] = field(default_factory=list)
    rows: int = 0
    nonfinite: list[str] = field(default_factory=list)


class StoreWriter:
    """Append rows to a store exactly once, crash-safe; several processes may write at once.

    Parameters
    ----------
    path
        The store. Created if missing and ``feature_size`` is given.
    feature_size
        Length of each vector; required to create the store, checked otherwise.
    model
        Embedding model name recorded at creation.
    on_duplicate
        ``"skip"`` (default) drops rows whose path is already stored (or repeated in the
        batch); ``"error"`` raises :class:`DuplicatePathError` and commits nothing of that batch.
    row_chunk
        Rows per embedding chunk at creation (default: :func:`choose_row_chunk`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        feature_size: int | None = None,
        model: str | None = None,
        on_duplicate: str = "skip",
        row_chunk: int | None = None,
    ) -> None:
        if on_duplicate not in ("skip", "error"):
            raise ValueError(f"on_duplicate must be 'skip' or 'error', got {on_duplicate!r}")
        self.path = Path(path)
        self.on_duplicate = on_duplicate
        if not is_store(self.path):
            if feature_size is None:
                read_state(self.path)  # raises the right "does not exist / not a store" error
            create_store(self.path, feature_size=feature_size, model=model, row_chunk=row_chunk)
        self._known_rows = 0
        self._paths: set[str] = set()
        self._run: dict[str, Any] | None = None
        with write_lock(self.path):
            state = self._refresh()
        if feature_size is not None:
            check_feature_size(self.path, state, feature_size)
        self.feature_size = state.feature_size

    # -- state shared with other writers ---------------------------------------------------

    def _refresh(self) -> StoreState:
        """Repair, validate, and learn the paths other writers committed since we last looked."""
        repair(self.path)
        state = validated_state(self.path)
        if state.rows < self._known_rows:
            raise StoreError(
                f"{self.path}: committed rows went down ({self._known_rows} -> {state.rows})"
            )
        if state.rows > self._known_rows:
            tail = zarr.open_array(str(self.path / "path"), mode="r")[self._known_rows : state.rows]
            self._paths.update(np.asarray(tail, dtype=object).tolist())
            self._known_rows = state.rows
        return state

    @property
    def rows(self) -> int:
        """Committed rows, as of this writer's last commit or refresh."""
        return self._known_rows

    def contains(self, path: str) -> bool:
        """True if ``path`` was committed (as of this writer's last commit or refresh)."""
        return path in self._paths

    def claim(self, key: str, value: dict[str, Any], *, defining: Sequence[str]) -> None:
        """Record ``value`` under root attrs ``embstore.<key>``, or check it matches.

        Used for the extraction settings: every writer of a store must produce comparable
        numbers, so the ``defining`` fields must equal what the first writer recorded.
        """
        with write_lock(self.path):
            state = self._refresh()
            existing = state.meta.get(key)
            if existing is None:
                attrs = self._attrs_with_run(state)
                attrs[ROOT_ATTR][key] = json.loads(json.dumps(value))
                commit_root(self.path, attrs)
                return
            clean = json.loads(json.dumps(value))
            differ = [f for f in defining if existing.get(f) != clean.get(f)]
            if differ:
                shown = "; ".join(
                    f"{f}: store has {existing.get(f)!r}, this run {clean.get(f)!r}" for f in differ
                )
                raise StoreError(f"{self.path}: made with other {key} settings ({shown})")

    # -- provenance ------------------------------------------------------------------------

    def start_run(self, action: str, **info: Any) -> None:
        """Open a provenance entry that every following commit updates (``status: running``)."""
        self._run = {
            "action": action,
            "run_id": uuid.uuid4().hex,
            "time": now(),
            "embstore_version": __version__,
            "status": "running",
            "rows_added": 0,
            "duplicates_skipped": 0,
            **info,
        }

    def finish_run(self, status: str = "complete", **info: Any) -> None:
        """Close the provenance entry (``complete`` or ``failed``) in one commit."""
        if self._run is None:
            return
        self._run.update(status=status, finished=now(), **info)
        with write_lock(self.path):
            state = self._refresh()
            commit_root(self.path, self._attrs_with_run(state))
        self._run = None

    def _attrs_with_run(self, state: StoreState, rows: int | None = None) -> dict[str, Any]:
        attrs = json.loads(json.dumps(state.attrs))  # deep copy, JSON-clean
        meta = attrs[ROOT_ATTR]
        if rows is not None:
            meta["rows"] = rows
        if self._run is not None:
            entries = [e for e in meta["provenance"] if e.get("run_id") != self._run["run_id"]]
            meta["provenance"] = [*entries, self._run]
        return attrs

    # -- append ----------------------------------------------------------------------------

    def append(
        self,
        paths: Sequence[str],
        vectors: np.ndarray,
        labels: Mapping[str, Sequence[Any]] | None = None,
    ) -> AppendResult:
        """Commit a batch of rows (all or nothing); return how many were added and skipped.

        ``labels`` maps label names to per-row values (``age_mo`` integers, -1 if unknown;
        other labels strings, "" if unknown). A label the store does not have yet becomes a new
        column (missing for the rows already stored); a store label absent here is missing for
        these rows.
        """
        vectors, labels = self._check_batch(paths, vectors, labels or {})
        with write_lock(self.path):
            state = self._refresh()
            clash = [
                n for n in labels if n in state.arrays and dims_of(state.arrays[n]) != (SAMPLE,)
            ]
            if clash:
                raise BadInputError(
                    "labels", f"{clash[0]!r} is a variable of {self.path}, not a label"
                )
            keep, duplicates = self._new_rows(paths)
            if duplicates and self.on_duplicate == "error":
                shown = ", ".join(duplicates[:5])
                msg = f"{len(duplicates)} path(s) already in {self.path}: {shown}"
                raise DuplicatePathError(msg)
            if self._run is not None:
                self._run["duplicates_skipped"] += len(duplicates)
            if not keep.any():
                if self._run is not None:
                    commit_root(self.path, self._attrs_with_run(state))
                return AppendResult(0, duplicates, state.rows)
            kept_paths = [p for p, k in zip(paths, keep, strict=True) if k]
            columns = self._columns(state, kept_paths, vectors[keep], labels, keep)
            start, stop = state.rows, state.rows + len(kept_paths)
            self._write_rows(state, columns, start, stop)
            if self._run is not None:
                self._run["rows_added"] += stop - start
            commit_root(self.path, self._attrs_with_run(state, rows=stop))
            self._paths.update(kept_paths)
            self._known_rows = stop
            flagged = [p for p, f in zip(kept_paths, columns["nonfinite"], strict=True) if f]
            return AppendResult(stop - start, duplicates, stop, flagged)

    def _check_batch(
        self, paths: Sequence[str], vectors: np.ndarray, labels: Mapping[str, Sequence[Any]]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.feature_size:
            msg = f"batch must be (rows, {self.feature_size}), got {vectors.shape}"
            raise ValueError(msg)
        if len(paths) != len(vectors):
            raise ValueError(f"{len(paths)} paths for {len(vectors)} vectors")
        checked: dict[str, np.ndarray] = {}
        for name, values in labels.items():
            check_label_name(name)
            if len(values) != len(paths):
                raise ValueError(f"label {name!r} has {len(values)} values for {len(paths)} rows")
            dtype = np.int32 if name in INTEGER_LABELS else object
            checked[name] = np.asarray(values, dtype=dtype)
        return vectors.astype(np.float32, copy=False), checked

    def _new_rows(self, paths: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        keep = np.zeros(len(paths), dtype=bool)
        seen: set[str] = set()
        duplicates = []
        for i, p in enumerate(paths):
            if p in self._paths or p in seen:
                duplicates.append(p)
            else:
                keep[i] = True
                seen.add(p)
        return keep, duplicates

    def _columns(
        self,
        state: StoreState,
        paths: list[str],
        vectors: np.ndarray,
        labels: dict[str, np.ndarray],
        keep: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Values for the new rows of every sample array (missing values where none given)."""
        n = len(paths)
        columns: dict[str, np.ndarray] = {
            "embedding": vectors,
            "path": np.asarray(paths, dtype=object),
            "nonfinite": ~np.isfinite(vectors).all(axis=1),
        }
        for name, values in labels.items():
            columns[name] = values[keep]
        for name in state.sample_arrays():
            if name in columns:
                continue
            meta = state.arrays[name]
            if dims_of(meta) == (SAMPLE,):
                columns[name] = _missing_column(meta, n)
            else:  # a derived (sample, feature) variable: not computed for new rows
                columns[name] = np.full((n, *meta["shape"][1:]), np.nan, dtype=np.float32)
        return columns

    def _write_rows(
        self, state: StoreState, columns: dict[str, np.ndarray], start: int, stop: int
    ) -> None:
        new_labels = [name for name in columns if name not in state.arrays]
        for name in new_labels:
            kind = "int" if name in INTEGER_LABELS else "string"
            create_label_array(self.path, name, start, kind)
        if new_labels:
            self._update_coordinates_attr(state, new_labels)
        for name, values in columns.items():
            array = zarr.open_array(str(self.path / name), mode="r+")
            array.resize((stop, *array.shape[1:]))
            array[start:stop] = values

    def _update_coordinates_attr(self, state: StoreState, new_labels: list[str]) -> None:
        coords = ["path", "nonfinite", *state.label_names(), *new_labels]
        for name in state.sample_arrays():
            if len(dims_of(state.arrays[name])) == 2:
                array = zarr.open_array(str(self.path / name), mode="r+")
                array.update_attributes({"coordinates": " ".join(coords)})

    # -- set_labels (relabel.py): a minimal version on this engine -------------------------
    # The interface is the agreed one; the transactional engine re-implements it as one
    # commit. Here the columns are written in place under the lock, then committed with one
    # root update: a crash mid-write can leave some columns rewritten, never a wrong length.

    def set_labels(
        self, columns: Mapping[str, np.ndarray], *, action: str = "label", **info: Any
    ) -> None:
        """Add or replace whole label columns (one value per stored row) in one commit.

        Each column must hold exactly :attr:`rows` values (the store must not have grown
        since they were computed); a provenance entry ``action`` with ``info`` records it.
        """
        with write_lock(self.path):
            state = self._refresh()
            checked: dict[str, np.ndarray] = {}
            for name, values in columns.items():
                check_label_name(name)
                meta = state.arrays.get(name)
                if meta is not None and dims_of(meta) != (SAMPLE,):
                    raise BadInputError("labels", f"{name!r} is a variable of {self.path}")
                if len(values) != state.rows:
                    msg = f"{self.path}: label {name!r} has {len(values)} values, {state.rows} rows"
                    raise StoreError(msg)
                dtype = np.int32 if name in INTEGER_LABELS else object
                checked[name] = np.asarray(values, dtype=dtype)
            new = [n for n in checked if n not in state.arrays]
            for name in new:
                kind = "int" if name in INTEGER_LABELS else "string"
                create_label_array(self.path, name, state.rows, kind)
            if new:
                self._update_coordinates_attr(state, new)
            for name, values in checked.items():
                zarr.open_array(str(self.path / name), mode="r+")[:] = values
            attrs = self._attrs_with_run(state)
            entry = {"action": action, "time": now(), "embstore_version": __version__}
            entry |= {"status": "complete", "columns": sorted(checked), **info}
            attrs[ROOT_ATTR]["provenance"].append(json.loads(json.dumps(entry)))
            commit_root(self.path, attrs)


def _missing_column(meta: Mapping[str, Any], n: int) -> np.ndarray:
    dtype = str(meta["data_type"])
    if dtype == "string":
        return np.full(n, MISSING_STR, dtype=object)
    if dtype == "bool":
        return np.zeros(n, dtype=bool)
    return np.full(n, MISSING_AGE, dtype=dtype)
