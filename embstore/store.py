"""The store on disk: layout, the commit protocol, and opening it for reading.

A store is a plain Zarr v3 directory that ``xarray.open_zarr`` opens without embstore::

    STORE/
      zarr.json        root group: attrs["embstore"] (schema version, committed rows,
                       provenance...) and the consolidated metadata of every root array
      embedding/       (sample, feature) float32
      path/            (sample,) string, the unique key of a row
      subject/ age_mo/ category/ ...   (sample,) labels
      nonfinite/       (sample,) bool, rows holding NaN/Inf
      normalized/ normalized_mean/ normalized_std/   derived variables (normalize.py)
      _embstore/       a zarr group of embstore's own: write lock, staging, trash

Commit rule
-----------
zarr writes each key atomically (temp file + rename) but nothing spans keys. embstore makes the
root ``zarr.json`` the single commit point: it holds both the committed row count and the
consolidated metadata (shapes) of every array, and is replaced atomically. An append

1. takes the store's write lock (``flock``; released by the kernel if the process dies),
2. repairs what an interrupted writer left (arrays longer than the committed rows),
3. grows every ``sample`` array and writes the new rows of *every* one of them,
4. atomically replaces the root ``zarr.json`` with the new row count and shapes.

Readers that use the consolidated metadata (``xr.open_zarr``'s default, and
:func:`open_store`) therefore see exactly the committed rows whatever point a writer was killed
at. Several processes may append at once: the lock serializes commits (the expensive work, such
as reading files or running a model, happens outside it) and each commit re-reads which paths
are already stored, so every path ends up in the store exactly once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import xarray as xr
import zarr

from . import __version__
from .errors import StoreError
from .labels import MISSING_AGE, MISSING_STR
from .schema import SCHEMA_VERSION, describe_metadata, validate_description

log = logging.getLogger(__name__)

ROOT_ATTR = "embstore"
INTERNAL = "_embstore"
LOCK_FILE = "write.lock"
SAMPLE, FEATURE = "sample", "feature"

#: Rows per chunk of every 1-D (coordinate) array: large, so opening and loading labels is
#: fast (NOTES.md: 100K-row string chunks open 15x faster than 1K-row ones).
COORD_CHUNK = 131072
#: Target bytes per chunk of the embedding matrix (the whole feature axis per chunk).
TARGET_CHUNK_BYTES = 16 * 2**20
#: Embedding matrices are stored uncompressed: float32 embeddings shrink by only ~7% under
#: zstd or blosc+shuffle (measured on 768-d data), while compression made writes 2-4x and
#: reads 2-6x slower. Labels keep zarr's default zstd (paths compress well).
MATRIX_COMPRESSORS = None


def now() -> str:
    """Current UTC time as an ISO 8601 string (what provenance records)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def choose_row_chunk(feature_size: int, *, itemsize: int = 4) -> int:
    """Rows per embedding chunk: a power of two giving ~8-16 MiB chunks, at most COORD_CHUNK.

    A whole-feature-axis chunk of this many rows is what every workload here reads: row
    selections (one subject), column statistics (normalize) and row exports. A power of two
    divides :data:`COORD_CHUNK`, so coordinate and embedding chunk edges line up.

    >>> choose_row_chunk(768), choose_row_chunk(1024), choose_row_chunk(8)
    (4096, 4096, 131072)
    """
    rows = max(1, TARGET_CHUNK_BYTES // (feature_size * itemsize))
    return min(COORD_CHUNK, 1 << (rows.bit_length() - 1))


# --------------------------------------------------------------------------- reading metadata


@dataclass(frozen=True)
class StoreState:
    """What the root ``zarr.json`` says: the committed state of a store."""

    attrs: dict[str, Any]
    arrays: dict[str, dict[str, Any]]

    @property
    def meta(self) -> dict[str, Any]:
        return self.attrs[ROOT_ATTR]

    @property
    def rows(self) -> int:
        return int(self.meta["rows"])

    @property
    def feature_size(self) -> int:
        return int(self.meta["feature_size"])

    def sample_arrays(self) -> list[str]:
        return [n for n, m in self.arrays.items() if dims_of(m)[:1] == (SAMPLE,)]

    def label_names(self) -> list[str]:
        """1-D sample arrays other than ``path`` and ``nonfinite``: the label columns."""
        return [
            n
            for n in self.sample_arrays()
            if dims_of(self.arrays[n]) == (SAMPLE,) and n not in ("path", "nonfinite")
        ]


def dims_of(meta: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(meta.get("dimension_names") or ())


def _read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def is_store(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` holds a committed embstore store."""
    root = Path(path) / "zarr.json"
    if not root.is_file():
        return False
    try:
        return ROOT_ATTR in _read_json(root).get("attributes", {})
    except (OSError, ValueError):
        return False


def read_state(path: str | os.PathLike[str]) -> StoreState:
    """Read the committed state from the root ``zarr.json``; :class:`StoreError` if not a store."""
    path = Path(path)
    root = path / "zarr.json"
    if not root.is_file():
        what = "does not exist" if not path.exists() else "is not a Zarr store (no zarr.json)"
        raise StoreError(f"{path}: {what}")
    try:
        doc = _read_json(root)
    except ValueError as exc:
        raise StoreError(f"{root}: unreadable root metadata ({exc})") from exc
    attrs = doc.get("attributes", {})
    if ROOT_ATTR not in attrs:
        raise StoreError(
            f"{path}: a Zarr store, but not an embstore store (no '{ROOT_ATTR}' attrs)"
        )
    consolidated = (doc.get("consolidated_metadata") or {}).get("metadata") or {}
    arrays = {
        k: v for k, v in consolidated.items() if v.get("node_type") == "array" and "/" not in k
    }
    return StoreState(attrs=attrs, arrays=arrays)


def disk_arrays(path: Path) -> dict[str, dict[str, Any]]:
    """The ``zarr.json`` of every root array as found on disk (committed or not)."""
    arrays = {}
    for child in sorted(path.iterdir()):
        meta_file = child / "zarr.json"
        if child.name != INTERNAL and meta_file.is_file():
            meta = _read_json(meta_file)
            if meta.get("node_type") == "array":
                arrays[child.name] = meta
    return arrays


def _atomic_write_json(target: Path, doc: dict[str, Any]) -> None:
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def commit_root(path: Path, attrs: dict[str, Any]) -> StoreState:
    """Atomically replace the root ``zarr.json`` with ``attrs`` and the arrays now on disk."""
    arrays = disk_arrays(path)
    consolidated: dict[str, Any] = dict(arrays)
    consolidated[INTERNAL] = {"zarr_format": 3, "node_type": "group", "attributes": {}}
    doc = {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": attrs,
        "consolidated_metadata": {
            "kind": "inline",
            "must_understand": False,
            "metadata": consolidated,
        },
    }
    _atomic_write_json(path / "zarr.json", doc)
    return StoreState(attrs=attrs, arrays=arrays)


# ------------------------------------------------------------------------------ the write lock


@contextlib.contextmanager
def write_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the store's exclusive write lock (``flock``) for the duration of the block.

    The kernel drops the lock when its holder dies, so a killed writer never leaves a stale
    lock. ``flock`` works across processes on one machine and on cluster filesystems that
    support it (Lustre mounted with ``flock``, NFSv4); see the README.
    """
    internal = Path(path) / INTERNAL
    internal.mkdir(parents=True, exist_ok=True)
    with (internal / LOCK_FILE).open("a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _ensure_internal_group(path: Path) -> None:
    internal = path / INTERNAL
    internal.mkdir(parents=True, exist_ok=True)
    meta = internal / "zarr.json"
    if not meta.is_file():
        doc = {"zarr_format": 3, "node_type": "group", "attributes": {"embstore_internal": True}}
        _atomic_write_json(meta, doc)


def staging_dir(path: Path) -> Path:
    return path / INTERNAL / "staging"


def trash_dir(path: Path) -> Path:
    return path / INTERNAL / "trash"


# --------------------------------------------------------------------------------- creation


def _create_array(path: Path, name: str, **kwargs: Any) -> zarr.Array:
    return zarr.create_array(store=str(path / name), zarr_format=3, overwrite=True, **kwargs)


def create_label_array(path: Path, name: str, rows: int, kind: str) -> None:
    """Create a ``(sample,)`` array of ``rows`` rows, all holding the missing value."""
    dtype, fill = {
        "string": (str, MISSING_STR),
        "int": ("int32", MISSING_AGE),
        "bool": ("bool", False),
    }[kind]
    _create_array(
        path,
        name,
        shape=(rows,),
        chunks=(COORD_CHUNK,),
        dtype=dtype,
        fill_value=fill,
        dimension_names=(SAMPLE,),
    )


def create_store(
    path: str | os.PathLike[str],
    *,
    feature_size: int,
    model: str | None = None,
    row_chunk: int | None = None,
) -> StoreState:
    """Create an empty store at ``path`` (which must not exist, or be an empty folder).

    Safe against a concurrent creator (both take the write lock; the second one finds the store
    made) and against a crash mid-creation (the next creation starts over).

    Examples
    --------
    >>> import tempfile, embstore
    >>> state = embstore.create_store(tempfile.mkdtemp() + "/s.zarr", feature_size=768)
    >>> state.rows, state.feature_size
    (0, 768)
    """
    path = Path(path)
    if feature_size < 1:
        raise StoreError(f"{path}: feature size must be positive, got {feature_size}")
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path}: exists and is not a folder")
    foreign = path.is_dir() and not (path / INTERNAL).exists() and any(path.iterdir())
    if foreign and not is_store(path):
        raise StoreError(f"{path}: folder is not empty and is not an embstore store")
    path.mkdir(parents=True, exist_ok=True)
    with write_lock(path):
        if is_store(path):
            state = read_state(path)
            check_feature_size(path, state, feature_size)
            return state
        for child in path.iterdir():  # leftovers of an interrupted creation
            if child.name != INTERNAL:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        _ensure_internal_group(path)
        chunk = row_chunk or choose_row_chunk(feature_size)
        _create_array(
            path,
            "embedding",
            shape=(0, feature_size),
            chunks=(chunk, feature_size),
            dtype="float32",
            fill_value=float("nan"),
            dimension_names=(SAMPLE, FEATURE),
            compressors=MATRIX_COMPRESSORS,
            attributes={"coordinates": "path nonfinite subject age_mo", "long_name": "embedding"},
        )
        create_label_array(path, "path", 0, "string")
        create_label_array(path, "nonfinite", 0, "bool")
        create_label_array(path, "subject", 0, "string")
        create_label_array(path, "age_mo", 0, "int")
        created = now()
        attrs = {
            ROOT_ATTR: {
                "schema_version": SCHEMA_VERSION,
                "rows": 0,
                "feature_size": int(feature_size),
                "created": created,
                "embstore_version": __version__,
                "model": model,
                "missing": {"age_mo": MISSING_AGE, "string": MISSING_STR},
                "provenance": [
                    {"action": "create", "time": created, "embstore_version": __version__}
                ],
            }
        }
        return commit_root(path, attrs)


def check_feature_size(path: Path, state: StoreState, feature_size: int) -> None:
    if feature_size != state.feature_size:
        msg = f"{path}: store holds {state.feature_size}-d vectors, got {feature_size}-d"
        raise StoreError(msg)


# ----------------------------------------------------------------------------------- repair


def repair(path: str | os.PathLike[str]) -> list[str]:
    """Undo what an interrupted writer left behind; return what was done (empty if nothing).

    Call with the write lock held (every writer does). Arrays are cut back to the committed
    row count, staging and trash are emptied, and arrays that a crashed writer created or
    moved in (complete by construction) are adopted into the consolidated metadata.
    """
    path = Path(path)
    state = read_state(path)
    actions: list[str] = []
    for leftover in (staging_dir(path), trash_dir(path)):
        if leftover.exists() and any(leftover.iterdir()):
            shutil.rmtree(leftover)
            actions.append(f"removed interrupted work in {leftover.relative_to(path)}")
    for name, meta in disk_arrays(path).items():
        dims = dims_of(meta)
        if dims[:1] != (SAMPLE,):
            if name not in state.arrays:
                actions.append(f"adopted {name}")
            continue
        length = meta["shape"][0]
        if length < state.rows:
            shutil.rmtree(path / name)
            actions.append(f"removed incomplete array {name} ({length} < {state.rows} rows)")
        elif length > state.rows or name not in state.arrays:
            array = zarr.open_array(str(path / name), mode="r+")
            array.resize((state.rows, *meta["shape"][1:]))
            actions.append(f"cut {name} back to {state.rows} committed rows (was {length})")
    if any(name not in disk_arrays(path) for name in state.arrays):
        actions.append("dropped arrays missing on disk from the metadata")
    if actions:
        commit_root(path, state.attrs)
        for action in actions:
            log.warning("%s: repair: %s", path, action)
    return actions


def uncommitted_changes(path: str | os.PathLike[str]) -> list[str]:
    """What :func:`repair` would do, without doing it (for ``validate`` and ``info``)."""
    path = Path(path)
    state = read_state(path)
    found = []
    disk = disk_arrays(path)
    for name, meta in disk.items():
        if dims_of(meta)[:1] == (SAMPLE,) and meta["shape"][0] != state.rows:
            found.append(f"{name} has {meta['shape'][0]} rows on disk, {state.rows} committed")
        elif name not in state.arrays:
            found.append(f"{name} is on disk but not committed")
    found += [
        f"{name} is committed but missing on disk" for name in state.arrays if name not in disk
    ]
    for leftover in (staging_dir(path), trash_dir(path)):
        if leftover.exists() and any(leftover.iterdir()):
            found.append(f"interrupted work left in {leftover.relative_to(path)}")
    return found


def validated_state(path: Path) -> StoreState:
    state = read_state(path)
    validate_description(describe_metadata(state.attrs, state.arrays), store=str(path))
    return state


# ---------------------------------------------------------------------------------- reading


def open_store(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a store as a lazy :class:`xarray.Dataset` showing exactly the committed rows.

    String labels (``path``, ``subject``, ``category``...) come back as ``object`` arrays of
    Python ``str`` (zarr hands back numpy ``StringDType``, on which ``.astype(str)`` fails).
    ``age_mo`` is ``int32`` with -1 for unknown. Labels are read into memory and ``path`` is
    indexed; embeddings stay lazy (see :func:`embstore.views.prepare_dataset`).

    Examples
    --------
    >>> ds = embstore.open("bv.zarr")                                   # doctest: +SKIP
    >>> ds.embedding.isel(sample=(ds.subject == "00270001").values)      # doctest: +SKIP
    """
    path = Path(path)
    read_state(path)  # a clear StoreError for a missing or foreign store
    from .views import prepare_dataset  # views reads ROOT_ATTR/SAMPLE from here

    return prepare_dataset(xr.open_zarr(path, consolidated=True, chunks={}))
