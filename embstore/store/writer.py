"""Creating stores and appending rows to them: exactly once, every batch one version.

Every method that writes goes through :func:`~embstore.store.transaction.run_transaction`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from .._version import __version__
from ..errors import (
    BadInputError,
    DamagedStoreError,
    DuplicatePathError,
    EmbstoreError,
    StoreError,
    first_line,
)
from ..labels import INTEGER_LABELS, MISSING_AGE, MISSING_STR, check_label_name, missing_value
from .integrity import (
    has_checksums,
    interrupted_creation,
    lost_ref,
    remove_creation_debris,
    snapshot_files,
)
from .layout import (
    COORD_CHUNK,
    EXTRA_DIMS,
    FEATURE,
    LABEL_COMPRESSORS,
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

log = logging.getLogger(__name__)

#: How many items of a list (bad rows, non-finite paths) a run's provenance entry keeps
#: (the run's report keeps them all).
PROVENANCE_LIST_LIMIT = 100


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
        compressors=LABEL_COMPRESSORS,
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
    state, _ = _create_or_check(parse_location(store), feature_size, model, row_chunk)
    return state


def _create_or_check(
    location: Location, feature_size: int, model: str | None, row_chunk: int | None
) -> tuple[StoreState, bool]:
    """The one place that decides between creating a store and using the one there (whose
    feature size must then match); also says whether it created it."""
    if feature_size < 1:
        raise StoreError(f"{location}: feature size must be positive, got {feature_size}")
    if location.path is not None:
        _check_creatable_folder(location)

    def work(tx: Transaction) -> tuple[StoreState, bool]:
        if tx.state is None:
            if list(tx.group.keys()):
                raise StoreError(f"{location}: an Icechunk repository, but not an embstore store")
            _initialize(tx, feature_size, model, row_chunk)
            return read_state(tx.group, location=location), True
        check_feature_size(location, tx.state, feature_size)
        return tx.state, False

    return run_transaction(location, work, action="create", message="create store", create=True)


def _check_creatable_folder(location: Location) -> None:
    path = location.path
    assert path is not None
    if path.exists() and not path.is_dir():
        raise StoreError(f"{location}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not repository_exists(location):
        if interrupted_creation(path):  # killed inside Repository.create: redo it
            remove_creation_debris(path)
            return
        if lost_ref(path) is not None and snapshot_files(path):
            raise DamagedStoreError(f"{location}: {lost_ref(path)} (run `embstore recover`)")
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


@dataclass
class RunRecord:
    """The summary a run records when it completes (see :meth:`StoreWriter.run`)."""

    summary: dict[str, Any] = field(default_factory=dict)

    def update(self, **info: Any) -> None:
        """Add to the summary; lists are cut at :data:`PROVENANCE_LIST_LIMIT` items."""
        for key, value in info.items():
            self.summary[key] = value[:PROVENANCE_LIST_LIMIT] if isinstance(value, list) else value


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
        #: True when this writer created the store (given ``feature_size``, it found none).
        self.created = False
        if feature_size is not None:
            _, self.created = _create_or_check(self.location, feature_size, model, row_chunk)
        self._known_rows = 0
        self._paths: set[str] = set()
        self._run: dict[str, Any] | None = None
        self._damaged = False  # a write was refused on a damaged store: record nothing more
        _, _, group = readonly_group(self.location)
        state = read_state(group, location=self.location)
        self._sync(group, state)
        self.feature_size = state.feature_size
        grid = state.arrays["embedding"]["chunk_grid"]["configuration"]["chunk_shape"]
        #: Rows per embedding chunk: commits that end on a multiple of it rewrite no chunk.
        self.row_chunk = int(grid[0])

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
        if status != "complete" and self._damaged:
            # a refused write commits nothing, also no "failed" record on a damaged store
            self._run = None
            return
        run = {**self._run, "status": status, "finished": now(), **info}

        def work(tx: Transaction) -> None:
            state = self._begin(tx)
            tx.set_meta(self._meta_with_run(state, run=run))
            tx.message = f"{run['action']} {status}: {run['rows_added']} rows added"
            tx.metadata.update(rows=state.rows, status=status)

        try:
            run_transaction(self.location, work, action=run["action"], message="finish run")
        except DamagedStoreError:
            if status == "complete":
                raise
            # the failure being reported stands; nothing is written on a damaged store
        finally:
            self._run = None

    @contextmanager
    def run(self, action: str, options: Mapping[str, Any] | None = None) -> Iterator[RunRecord]:
        """Record a run (``ingest``, ``extract``) in the store's provenance, start to finish.

        The entry says ``running`` while the block runs (every commit updates its counts);
        leaving the block records it ``complete`` with the summary given to
        :meth:`RunRecord.update` (lists cut at :data:`PROVENANCE_LIST_LIMIT`), an exception
        records it ``failed`` (``interrupted`` for Ctrl-C / SIGTERM) with the error's type, and
        is raised again. One commit either way.

        Examples
        --------
        >>> writer = StoreWriter("new.store", feature_size=4)
        >>> with writer.run("ingest", {"sources": ["emb/"]}) as run:
        ...     result = writer.append(["a.npy", "b.npy"], np.ones((2, 4)))
        ...     run.update(bad_count=0)
        >>> entry = embstore.provenance(embstore.open("new.store"))["provenance"][-1]
        >>> entry["status"], entry["rows_added"], entry["sources"], entry["bad_count"]
        ('complete', 2, ['emb/'], 0)
        >>> embstore.log("new.store")[0].message
        'ingest complete: 2 rows added'
        """
        record = RunRecord()
        self.start_run(action, **dict(options or {}))
        try:
            yield record
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            error = {"error": type(exc).__name__}
            if isinstance(exc, EmbstoreError):  # our messages name files, never header values
                error["message"] = first_line(exc)
            try:
                self.finish_run(status, **error)
            except Exception:  # noqa: BLE001 - the run's own error is the one to raise
                log.warning("%s: could not record the run as %s", self.path, status)
            raise
        self.finish_run("complete", **record.summary)

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

        try:
            result = run_transaction(self.location, work, action="append", message="append")
        except DamagedStoreError:
            self._damaged = True
            raise
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
    for name in state.sample_arrays():  # read (and verify) every chunk this write would
        stored = _array(group, name)  # rewrite before writing: damage refuses, writes nothing
        edge = start - start % stored.chunks[0]
        if edge < start <= stored.shape[0]:
            stored[edge:start]
    new_labels = [n for n, v in columns.items() if n not in state.arrays and v.ndim == 1]
    for name in new_labels:
        created = create_label_array(group, name, start, label_kind(name))
        if start:  # written whole (integrity.py: a missing chunk is damage, not "missing")
            created[:start] = LABEL_KINDS[label_kind(name)][1]
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
        elif has_checksums(state.arrays[name]) and len(state.arrays[name]["shape"]) == 1:
            _array(group, name)[start:stop] = LABEL_KINDS[label_kind(name)][1]  # written


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


def _array(group: zarr.Group, name: str) -> zarr.Array:
    array = group[name]
    assert isinstance(array, zarr.Array), name
    return array


Rows = tuple[list[str], np.ndarray, dict[str, list[Any]]]


class AlignedBatches:
    """Re-cut a stream of row batches so that every commit ends on a chunk edge.

    A commit that ends inside a chunk makes the next one rewrite that chunk, and every version
    keeps its copy until gc (issue 18: 8.9x the data on disk). :meth:`take` returns the rows to
    commit now (possibly none) and keeps the tail; :meth:`flush` returns the tail at the end.
    Batches with other label columns join: a label a batch lacks is missing for its rows (as
    :meth:`StoreWriter.append` would store it). Rows kept back are joined once, when cut.

    Parameters
    ----------
    position
        Rows in the store before the first commit.
    row_chunk
        Rows per embedding chunk (:attr:`StoreWriter.row_chunk`).
    batch_rows
        Rows kept back before a commit is cut (default 1: commit at every chunk edge crossed);
        a commit takes the rows up to the last chunk edge.
    """

    def __init__(self, position: int, row_chunk: int, *, batch_rows: int = 1) -> None:
        self.position, self.row_chunk = position, max(1, row_chunk)
        self.batch_rows = max(1, batch_rows)
        self._pieces: list[Rows] = []
        self._held = 0

    @property
    def held(self) -> int:
        """Rows kept back (given to :meth:`take`, not returned yet)."""
        return self._held

    def take(self, rows: Rows) -> list[Rows]:
        """The batches to commit now, in order (the tail of ``rows`` is kept)."""
        if len(rows[0]):
            self._pieces.append(rows)
            self._held += len(rows[0])
        if self._held < self.batch_rows:
            return []
        edge = (self.position + self._held) // self.row_chunk * self.row_chunk
        take = edge - self.position
        if take <= 0:
            return []
        head, tail = _cut(_join(self._pieces), take)
        self._pieces = [tail] if len(tail[0]) else []
        self._held -= take
        self.position += take
        return [head]

    def flush(self) -> Rows:
        """The rows kept back (possibly none): the last, partial commit."""
        if not self._pieces:
            return [], np.zeros((0, 0), dtype=np.float32), {}
        rows = _join(self._pieces)
        self._pieces, self._held = [], 0
        self.position += len(rows[0])
        return rows


def _join(pieces: list[Rows]) -> Rows:
    """One batch of ``pieces``; a label a piece lacks is missing for its rows."""
    if len(pieces) == 1:
        return pieces[0]
    names = list(dict.fromkeys(name for piece in pieces for name in piece[2]))
    labels: dict[str, list[Any]] = {name: [] for name in names}
    for paths, _, columns in pieces:
        for name in names:
            values = columns.get(name)
            labels[name] += [missing_value(name)] * len(paths) if values is None else list(values)
    paths = [p for piece in pieces for p in piece[0]]
    return paths, np.concatenate([piece[1] for piece in pieces]), labels


def _cut(rows: Rows, n: int) -> tuple[Rows, Rows]:
    paths, vectors, labels = rows
    head = (paths[:n], vectors[:n], {k: list(v[:n]) for k, v in labels.items()})
    tail = (paths[n:], vectors[n:], {k: list(v[n:]) for k, v in labels.items()})
    return head, tail
