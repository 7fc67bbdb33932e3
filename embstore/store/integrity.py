"""Checking a version before it is trusted: the snapshot the ref names, and its chunk refs.

Icechunk does not check a snapshot or manifest file against its id (NOTES.md): a snapshot
file replaced by an older one reads as a valid, shorter version, and a manifest replaced by
another array's makes the array read as fill values. So, before any commit or gc, embstore
checks that

- the snapshot a ref names holds that id (:func:`check_snapshot_id`), and
- every array that should be full has the chunk references its row count needs
  (:func:`check_chunk_refs`: cheap, the first and last chunk of each array; deep, every one).

Arrays written with checksums (zarr v3's ``crc32c`` codec, every array of a store created
by this embstore) are written whole: every chunk is stored, also one that holds only fill
values, so a missing chunk reference is damage, never "all missing". Stores made before keep
their old rule for labels (an all-missing chunk may be absent) and are checked for ``path``
and ``embedding`` only.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from typing import Any

import icechunk
import zarr
from zarr.core.sync import sync

from ..errors import DamagedStoreError
from .layout import ROOT_ATTR, SAMPLE, dims_of

#: Arrays every append writes in full, also in stores made before checksums.
ALWAYS_FULL = ("path", "embedding")


def has_checksums(meta: Mapping[str, Any]) -> bool:
    """True if an array's metadata names the ``crc32c`` codec (written whole, verified)."""
    return any(codec.get("name") == "crc32c" for codec in meta.get("codecs", ()))


def check_snapshot_id(
    repo: icechunk.Repository, snapshot_id: str, *, where: str
) -> icechunk.SnapshotInfo:
    """Raise DamagedStoreError unless the snapshot file ``snapshot_id`` holds that version;
    return its info."""
    try:
        info = repo.lookup_snapshot(snapshot_id)
        found = str(info.id)
    except icechunk.IcechunkError as exc:
        msg = f"{where}: snapshot {snapshot_id} cannot be read ({_first(exc)})"
        raise DamagedStoreError(msg) from exc
    if found != snapshot_id:
        msg = f"{where}: snapshot {snapshot_id} holds version {found} (the file was replaced)"
        raise DamagedStoreError(msg)
    return info


def covered_rows(meta: Mapping[str, Any], rows: int) -> int:
    """Rows an array must hold chunks for: all of them, or what a derived variable covers."""
    own = _provenance_rows(meta)
    return rows if own is None else min(rows, own)


def expected_chunks(meta: Mapping[str, Any], rows: int) -> Iterator[tuple[int, ...]]:
    """Chunk coordinates an array of the version must have, in order."""
    shape = list(meta["shape"])
    chunks = list(meta["chunk_grid"]["configuration"]["chunk_shape"])
    shape[0] = covered_rows(meta, rows)
    grid = [range(-(-s // c)) if c else range(0) for s, c in zip(shape, chunks, strict=True)]
    return itertools.product(*grid)


def full_arrays(arrays: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The sample arrays of a version that must hold every chunk of their rows."""
    full = []
    for name, meta in arrays.items():
        dims = dims_of(meta)
        if dims[:1] != (SAMPLE,):
            continue
        if name in ALWAYS_FULL or (len(dims) == 1 and has_checksums(meta)):
            full.append(name)  # appends write every row of these
        elif has_checksums(meta) and _provenance_rows(meta) is not None:
            full.append(name)  # a derived variable: every row it covers
    return full


def _provenance_rows(meta: Mapping[str, Any]) -> int | None:
    own = (meta.get("attributes") or {}).get(ROOT_ATTR)
    if isinstance(own, str):  # provenance stored as JSON text
        try:
            own = json.loads(own)
        except ValueError:
            return None
    if isinstance(own, Mapping) and isinstance(own.get("rows"), int):
        return int(own["rows"])
    return None


def check_chunk_refs(
    session: icechunk.Session,
    arrays: Mapping[str, Mapping[str, Any]],
    rows: int,
    *,
    where: str,
    deep: bool = False,
) -> None:
    """Raise DamagedStoreError if an array that should be full lacks chunk references.

    Cheap (``deep=False``): the first and the last chunk of each array are looked up, which
    reads each manifest once: a lost, garbled or swapped manifest is found. ``deep`` lists every
    chunk reference.
    """
    for name in full_arrays(arrays):
        wanted = list(expected_chunks(arrays[name], rows))
        if not wanted:
            continue
        try:
            if deep:
                have = set(sync(_collect(session.chunk_coordinates(f"/{name}"))))
                missing = [c for c in wanted if c not in have]
            else:
                ends = {wanted[0], wanted[-1]}
                missing = [c for c in ends if _uninitialized(session, name, c)]
        except icechunk.IcechunkError as exc:
            msg = f"{where}: the manifest of array {name!r} cannot be read ({_first(exc)})"
            raise DamagedStoreError(msg) from exc
        if missing:
            msg = (
                f"{where}: array {name!r} lacks {len(missing)} of its {len(wanted)} chunk "
                f"reference(s), e.g. chunk {missing[0]} (its manifest is lost or replaced)"
            )
            raise DamagedStoreError(msg)


def _uninitialized(session: icechunk.Session, name: str, coord: tuple[int, ...]) -> bool:
    return session.chunk_type(f"/{name}", list(coord)) == icechunk.ChunkType.UNINITIALIZED


async def _collect(iterator: Any) -> list[tuple[int, ...]]:
    return [tuple(c) async for c in iterator]


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip(" x") if text else type(exc).__name__
    return line[:200]


def verify_version(
    repo: icechunk.Repository,
    snapshot_id: str,
    *,
    where: str,
    deep: bool = False,
) -> tuple[icechunk.Session, zarr.Group]:
    """Check one version (id, schema, row counts, chunk refs); return its session and group."""
    from .repo import check_state, read_state, unreadable_as_store_error

    check_snapshot_id(repo, snapshot_id, where=where)
    with unreadable_as_store_error(where):
        session = repo.readonly_session(snapshot_id=snapshot_id)
        group = zarr.open_group(session.store, mode="r", zarr_format=3)
    state = read_state(group, location=where)
    check_state(state, location=where)
    check_chunk_refs(session, state.arrays, state.rows, where=where, deep=deep)
    return session, group


def verify_graph(repo: icechunk.Repository, *, where: str) -> None:
    """Check what gc would trust: the tip and every tagged version in full (ids, schema,
    every chunk reference) and the chain of parents on ``main``; DamagedStoreError otherwise.
    """
    from .layout import BRANCH
    from .repo import unreadable_as_store_error

    with unreadable_as_store_error(where):
        tip = str(repo.lookup_branch(BRANCH))
        tags = {name: str(repo.lookup_tag(name)) for name in repo.list_tags()}
    verify_version(repo, tip, where=where, deep=True)
    for name, snapshot in sorted(tags.items()):
        verify_version(repo, snapshot, where=f"{where} (tag {name!r})", deep=True)
    expected: str | None = tip
    try:
        for info in repo.ancestry(snapshot_id=tip):
            if info.id != expected:
                msg = f"{where}: snapshot {expected} holds version {info.id} (the file was replaced)"
                raise DamagedStoreError(msg)
            expected = info.parent_id
    except icechunk.IcechunkError as exc:
        msg = f"{where}: the history after snapshot {expected} cannot be read ({_first(exc)})"
        raise DamagedStoreError(msg) from exc
