"""Creating stores and appending rows to them: exactly once, every batch one version.

Every method that writes goes through :func:`~embstore.store.transaction.run_transaction`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from .._version import __version__
from ..errors import BadInputError, DuplicatePathError, StoreError
from ..labels import INTEGER_LABELS, MISSING_AGE, MISSING_STR, check_label_name
from .layout import (
    COORD_CHUNK,
    EXTRA_DIMS,
    FEATURE,
    LABEL_KINDS,
    MATRIX_COMPRESSORS,
    SAMPLE,
    choose_row_chunk,
    dims_of,
    label_kind,
    now,
)
from .location import Location, StoreLike, parse_location
from .repo import (
    StoreState,
    array_in,
    plain,
    read_state,
    readonly_group,
    repository_exists,
    unreadable_as_store_error,
)
from .schema import SCHEMA_VERSION
from .transaction import Transaction, run_transaction


def create_label_array(group: zarr.Group, name: str, rows: int, kind: str) -> zarr.Array:
    """Create a ``(sample,)`` array of ``rows`` rows, all holding the missing value."""
    dtype, fill = LABEL_KINDS[kind]
    return group.create_array(
        name,
        shape=(rows,),
        chunks=(COORD_CHUNK,),
        dtype=dtype,
        fill_value=fill,
        dimension_names=(SAMPLE,),
    )


def _initialize(tx: Transaction, feature_size: int, model: str | None, row_chunk: int | None):
    chunk = row_chunk or choose_row_chunk(feature_size)
    tx.group.create_array(
        "embedding",
        shape=(0, feature_size),
        chunks=(chunk, feature_size),
        dtype="float32",
        fill_value=float("nan"),
        dimension_names=(SAMPLE, FEATURE),
        compressors=MATRIX_COMPRESSORS,
        attributes={"coordinates": "path nonfinite subject age_mo", "long_name": "embedding"},
    )
    for name, kind in (("path", "string"), ("nonfinite", "bool"), ("subject", "string")):
        create_label_array(tx.group, name, 0, kind)
    create_label_array(tx.group, "age_mo", 0, "int")
    created = now()
    tx.set_meta(
        {
            "schema_version": SCHEMA_VERSION,
            "rows": 0,
            "feature_size": int(feature_size),
            "created": created,
            "embstore_version": __version__,
            "model": model,
            "missing": {"age_mo": MISSING_AGE, "string": MISSING_STR},
            "provenance": [{"action": "create", "time": created, "embstore_version": __version__}],
        }
    )
    tx.message = f"create store ({feature_size}-d vectors)"


def create_store(
    store: StoreLike | Location,
    *,
    feature_size: int,
    model: str | None = None,
    row_chunk: int | None = None,
) -> StoreState:
    """Create an empty store at ``store`` (a local folder or ``s3://bucket/prefix``).

    Safe against a concurrent creator (the second one finds the store made, and only checks
    the feature size) and against a crash mid-creation (nothing was committed).

    Examples
    --------
    >>> import tempfile, embstore
    >>> state = embstore.create_store(tempfile.mkdtemp() + "/s", feature_size=768)
    >>> state.rows, state.feature_size
    (0, 768)
    """
    location = parse_location(store)
    if feature_size < 1:
        raise StoreError(f"{location}: feature size must be positive, got {feature_size}")
    if location.path is not None:
        _check_creatable_folder(location)

    def work(tx: Transaction) -> StoreState:
        if tx.state is None:
            if list(tx.group.keys()):
                raise StoreError(f"{location}: an Icechunk repository, but not an embstore store")
            _initialize(tx, feature_size, model, row_chunk)
            return read_state(tx.group, location=location)
        check_feature_size(location, tx.state, feature_size)
        return tx.state

    return run_transaction(location, work, action="create", message="create store", create=True)


def _check_creatable_folder(location: Location) -> None:
    path = location.path
    assert path is not None
    if path.exists() and not path.is_dir():
        raise StoreError(f"{location}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not repository_exists(location):
        raise StoreError(f"{location}: folder is not empty and is not an embstore store")


def check_feature_size(location: Location | str, state: StoreState, feature_size: int) -> None:
    if feature_size != state.feature_size:
        msg = f"{location}: store holds {state.feature_size}-d vectors, got {feature_size}-d"
        raise StoreError(msg)


@dataclass
class AppendResult:
    """What one :meth:`StoreWriter.append` did."""

    added: int = 0
    duplicates: list[str] = field(default_factory=list)
    rows: int = 0
    nonfinite: list[str] = field(default_factory=list)
    version: str | None = None


class StoreWriter:
    """Append rows to a store exactly once; several processes may write at once.

    Parameters
    ----------
    path
        The store (a local folder or ``s3://bucket/prefix``). Created if missing and
        ``feature_size`` is given.
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
        path: StoreLike,
        *,
        feature_size: int | None = None,
        model: str | None = None,
        on_duplicate: str = "skip",
        row_chunk: int | None = None,
    ) -> None:
        if on_duplicate not in ("skip", "error"):
            raise ValueError(f"on_duplicate must be 'skip' or 'error', got {on_duplicate!r}")
        self.location = parse_location(path)
        self.path = self.location.url
        self.on_duplicate = on_duplicate
        if feature_size is not None:
            create_store(self.location, feature_size=feature_size, model=model, row_chunk=row_chunk)
        self._known_rows = 0
        self._paths: set[str] = set()
        self._run: dict[str, Any] | None = None
        _, _, group = readonly_group(self.location)
        state = read_state(group, location=self.location)
        self._sync(group, state)
        self.feature_size = state.feature_size

    # -- state shared with other writers ---------------------------------------------------

    def _sync(self, group: zarr.Group, state: StoreState) -> None:
        """Learn the paths committed since this writer last looked (all of them after a
        restore took the store back to fewer rows)."""
        if state.rows < self._known_rows:
            self._known_rows, self._paths = 0, set()
        if state.rows > self._known_rows:
            with unreadable_as_store_error(self.location):
                tail = array_in(group, "path")[self._known_rows : state.rows]
            self._paths.update(np.asarray(tail, dtype=object).tolist())
            self._known_rows = state.rows

    def _begin(self, tx: Transaction) -> StoreState:
        state = tx.require_state()
        self._sync(tx.group, state)
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
        clean = plain(value)

        def work(tx: Transaction) -> None:
            state = self._begin(tx)
            existing = state.meta.get(key)
            if existing is None:
                meta = self._meta_with_run(state)
                meta[key] = clean
                tx.set_meta(meta)
                return
            differ = [f for f in defining if existing.get(f) != clean.get(f)]
            if differ:
                shown = "; ".join(
                    f"{f}: store has {existing.get(f)!r}, this run {clean.get(f)!r}" for f in differ
                )
                raise StoreError(f"{self.path}: made with other {key} settings ({shown})")

        run_transaction(self.location, work, action="settings", message=f"record {key} settings")

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
        """Close the provenance entry (``complete``, ``failed`` or ``interrupted``), one commit."""
        if self._run is None:
            return
        run = {**self._run, "status": status, "finished": now(), **info}

        def work(tx: Transaction) -> None:
            state = self._begin(tx)
            tx.set_meta(self._meta_with_run(state, run=run))
            tx.message = f"{run['action']} {status}: {run['rows_added']} rows added"
            tx.metadata.update(rows=state.rows, status=status)

        run_transaction(self.location, work, action=run["action"], message="finish run")
        self._run = None

    def _meta_with_run(
        self, state: StoreState, rows: int | None = None, run: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        meta = plain(state.meta)
        if rows is not None:
            meta["rows"] = rows
        run = run if run is not None else self._run
        if run is not None:
            entries = [e for e in meta["provenance"] if e.get("run_id") != run["run_id"]]
            meta["provenance"] = [*entries, run]
        return meta

    # -- append ----------------------------------------------------------------------------

    def append(
        self,
        paths: Sequence[str],
        vectors: np.ndarray,
        labels: Mapping[str, Sequence[Any]] | None = None,
        *,
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> AppendResult:
        """Commit a batch of rows as one version (all or nothing); report what was added.

        ``labels`` maps label names to per-row values (``age_mo`` integers, -1 if unknown;
        other labels strings, "" if unknown). A label the store does not have yet becomes a new
        column (missing for the rows already stored); a store label absent here is missing for
        these rows. ``extra`` holds further per-row variables named in
        :data:`~embstore.store.layout.EXTRA_DIMS` (``tokens``: ``(rows, token, feature)``).
        """
        vectors, checked = self._check_batch(paths, vectors, labels or {})
        extras = self._check_extra(paths, extra or {})

        def work(tx: Transaction) -> AppendResult:
            state = self._begin(tx)
            self._check_names(state, checked, extras)
            keep, duplicates = self._new_rows(paths)
            if duplicates and self.on_duplicate == "error":
                shown = ", ".join(duplicates[:5])
                msg = f"{len(duplicates)} path(s) already in {self.path}: {shown}"
                raise DuplicatePathError(msg)
            run = self._run_after(len(duplicates), int(keep.sum()))
            start, stop = state.rows, state.rows + int(keep.sum())
            kept_paths = [p for p, k in zip(paths, keep, strict=True) if k]
            columns = {
                "embedding": vectors[keep],
                "path": np.asarray(kept_paths, dtype=object),
                "nonfinite": ~np.isfinite(vectors[keep]).all(axis=1),
                **{name: values[keep] for name, values in checked.items()},
                **{name: values[keep] for name, values in extras.items()},
            }
            if stop > start:
                _write_rows(tx.group, state, columns, start, stop)
            tx.set_meta(self._meta_with_run(state, rows=stop, run=run))
            tx.message = f"{run['action'] if run else 'append'}: +{stop - start} rows"
            tx.metadata.update(rows_added=stop - start, rows=stop)
            if run is not None:
                tx.metadata["sources"] = run.get("sources")
            flagged = [p for p, f in zip(kept_paths, columns["nonfinite"], strict=True) if f]
            return AppendResult(stop - start, duplicates, stop, flagged)

        result = run_transaction(self.location, work, action="append", message="append")
        if self._run is not None:
            self._run = self._run_after(len(result.duplicates), result.added)
        self._paths.update(p for p in paths)
        self._known_rows = result.rows
        return result

    def _run_after(self, duplicates: int, added: int) -> dict[str, Any] | None:
        if self._run is None:
            return None
        return {
            **self._run,
            "rows_added": self._run["rows_added"] + added,
            "duplicates_skipped": self._run["duplicates_skipped"] + duplicates,
        }

    def _check_names(
        self, state: StoreState, labels: Mapping[str, np.ndarray], extras: Mapping[str, Any]
    ) -> None:
        for name in labels:
            if name in state.arrays and dims_of(state.arrays[name]) != (SAMPLE,):
                raise BadInputError("labels", f"{name!r} is a variable of {self.path}, not a label")
        for name, values in extras.items():
            meta = state.arrays.get(name)
            if meta is not None and tuple(meta["shape"][1:]) != values.shape[1:]:
                msg = f"{name} rows of shape {values.shape[1:]}, the store has {meta['shape'][1:]}"
                raise BadInputError(name, msg)

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

    def _check_extra(
        self, paths: Sequence[str], extra: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        checked = {}
        for name, values in extra.items():
            values = np.asarray(values)
            dims = EXTRA_DIMS.get(name)
            if dims is None or values.ndim != len(dims) or len(values) != len(paths):
                msg = f"extra variable {name!r} of shape {values.shape} for {len(paths)} rows"
                raise ValueError(msg + f" (known: {dict(EXTRA_DIMS)})")
            checked[name] = values
        return checked

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

    # -- relabel ---------------------------------------------------------------------------

    def set_labels(
        self, columns: Mapping[str, np.ndarray], *, action: str = "label", **info: Any
    ) -> None:
        """Add or replace whole label columns (one value per stored row) in one version.

        ``columns`` must hold one value per row of the store as of this writer's last look;
        if other rows were committed since, the relabel is refused (re-run it).
        """
        checked = {check_label_name(name): np.asarray(values) for name, values in columns.items()}

        def work(tx: Transaction) -> None:
            state = self._begin(tx)
            for name, values in checked.items():
                if len(values) != state.rows:
                    msg = (
                        f"{len(values)} values for label {name!r}, the store has {state.rows} rows"
                    )
                    raise StoreError(f"{self.path}: {msg}")
                if name in state.arrays and dims_of(state.arrays[name]) != (SAMPLE,):
                    raise BadInputError("labels", f"{name!r} is a variable of {self.path}")
                if name in tx.group:
                    del tx.group[name]
                kind = label_kind(name)
                array = create_label_array(tx.group, name, state.rows, kind)
                if state.rows:
                    array[:] = values.astype(np.int32 if kind == "int" else object)
            new = [n for n in checked if n not in state.arrays]
            if new:
                _update_coordinates_attr(tx.group, state, new)
            entry = {
                "action": action,
                "time": now(),
                "embstore_version": __version__,
                "status": "complete",
                "columns": sorted(checked),
                **info,
            }
            meta = plain(state.meta)
            meta["provenance"] = [*meta["provenance"], entry]
            tx.set_meta(meta)
            tx.message = f"{action}: set {', '.join(sorted(checked))} for {state.rows} rows"
            tx.metadata.update(rows=state.rows, columns=sorted(checked))

        run_transaction(self.location, work, action=action, message=action)


def _write_rows(
    group: zarr.Group, state: StoreState, columns: dict[str, np.ndarray], start: int, stop: int
) -> None:
    """Grow every sample array to ``stop`` rows and write the given columns' new rows.

    Arrays not given (labels this batch lacks, derived variables) only grow: their new rows
    hold the array's fill value, which is the missing value (labels) or NaN (variables).
    """
    new_labels = [n for n, v in columns.items() if n not in state.arrays and v.ndim == 1]
    for name in new_labels:
        create_label_array(group, name, start, label_kind(name))
    for name, values in columns.items():
        if name not in state.arrays and values.ndim > 1:
            group.create_array(
                name,
                shape=(start, *values.shape[1:]),
                chunks=(1, *values.shape[1:]),
                dtype=values.dtype,
                fill_value=float("nan"),
                dimension_names=EXTRA_DIMS[name],
                compressors=MATRIX_COMPRESSORS,
                attributes={"long_name": name, "coordinates": _coordinates(state, new_labels)},
            )
    if new_labels:
        _update_coordinates_attr(group, state, new_labels)
    for name in {*state.sample_arrays(), *columns}:
        array = array_in(group, name)
        array.resize((stop, *array.shape[1:]))
        if name in columns:
            array[start:stop] = columns[name]


def _update_coordinates_attr(group: zarr.Group, state: StoreState, new_labels: list[str]) -> None:
    """Name every label in the variables' ``coordinates`` attribute (xarray reads it)."""
    coords = _coordinates(state, new_labels)
    for name in state.sample_arrays():
        if len(dims_of(state.arrays[name])) >= 2:
            group[name].update_attributes({"coordinates": coords})
    for name in new_labels:
        if name in group and len(array_in(group, name).shape) >= 2:
            group[name].update_attributes({"coordinates": coords})


def _coordinates(state: StoreState, new_labels: list[str]) -> str:
    return " ".join(["path", "nonfinite", *state.label_names(), *new_labels])
