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

import contextlib
import itertools
import json
import os
import tempfile
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
                msg = f"{where}: snapshot {expected} holds version {info.id} (file replaced)"
                raise DamagedStoreError(msg)
            expected = info.parent_id
    except icechunk.IcechunkError as exc:
        msg = f"{where}: the history after snapshot {expected} cannot be read ({_first(exc)})"
        raise DamagedStoreError(msg) from exc


# -- finding intact versions without the ref, the tip, the transaction logs or a history walk --

_OBJECT_FOLDERS = ("snapshots", "manifests", "chunks", "transactions")


def snapshot_files(path: Any) -> list[str]:
    """Ids of the snapshot files of a local repository folder (empty if none)."""
    from pathlib import Path

    folder = Path(path) / "snapshots"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@contextlib.contextmanager
def shadow_repository(path: Any) -> Iterator[icechunk.Repository]:
    """Open a local repository READ-ONLY even when its branch ref is lost: a temporary folder
    links to its objects and holds a ref of its own (the store is never written)."""
    from pathlib import Path

    from .layout import BRANCH

    ids = snapshot_files(path)
    if not ids:
        raise DamagedStoreError(f"{path}: no snapshot files (not a repository)")
    with tempfile.TemporaryDirectory(prefix="embstore-shadow-") as tmp:
        for name in _OBJECT_FOLDERS:
            if (Path(path) / name).is_dir():
                os.symlink(Path(path).absolute() / name, Path(tmp) / name)
        ref = Path(tmp) / "refs" / f"branch.{BRANCH}"
        ref.mkdir(parents=True)
        (ref / "ref.json").write_text(json.dumps({"snapshot": ids[0]}))
        yield icechunk.Repository.open(icechunk.local_filesystem_storage(tmp))


def intact_versions(repo: icechunk.Repository, candidates: list[str]) -> list[Any]:
    """The snapshots among ``candidates`` that are embstore versions and pass
    :func:`verify_version` (every chunk reference listed), newest first, as SnapshotInfo."""
    found = []
    for snapshot in candidates:
        try:
            info = check_snapshot_id(repo, snapshot, where="")
            if info.parent_id is None or (info.metadata or {}).get("staging"):
                continue
            verify_version(repo, snapshot, where="", deep=True)
        except Exception:  # noqa: BLE001 - any failure means "not intact"
            continue
        found.append(info)
    return sorted(found, key=lambda i: i.written_at, reverse=True)


def candidate_snapshots(repo: icechunk.Repository, path: Any | None) -> list[str]:
    """Snapshots to look at for intact versions: the files of a local folder (no walk), or
    the tags and what the history walk of ``main`` reaches on object storage."""
    from .layout import BRANCH

    if path is not None:
        return snapshot_files(path)
    ids: list[str] = []
    with contextlib.suppress(Exception):
        ids += [str(repo.lookup_tag(t)) for t in repo.list_tags()]
    with contextlib.suppress(Exception):
        ids += [i.id for i in repo.ancestry(branch=BRANCH)]
    return list(dict.fromkeys(ids))


def describe_intact(
    infos: list[Any], tags: Mapping[str, list[str]] | None = None, limit: int = 5
) -> str:
    """``intact versions: A [tag], B, ...`` (newest first), or that none is."""
    if not infos:
        return "no intact version found"
    tags = tags or {}
    shown = [f"{i.id}" + (f" [{', '.join(tags[i.id])}]" if i.id in tags else "") for i in infos]
    more = f" (+{len(shown) - limit} older)" if len(shown) > limit else ""
    return "intact versions: " + ", ".join(shown[:limit]) + more


def lost_ref(path: Any) -> str | None:
    """Why a local repository's branch ref cannot be used, or None."""
    from pathlib import Path

    from .layout import BRANCH

    ref = Path(path) / "refs" / f"branch.{BRANCH}" / "ref.json"
    if not ref.is_file():
        return f"branch ref {BRANCH!r} is lost ({ref.relative_to(path)} missing)"
    try:
        snapshot = json.loads(ref.read_text(encoding="utf-8"))["snapshot"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"branch ref {BRANCH!r} is garbled ({ref.relative_to(path)})"
    if not (Path(path) / "snapshots" / str(snapshot)).is_file():
        return f"branch ref {BRANCH!r} names snapshot {snapshot}, whose file is missing"
    return None


def find_damage(location: Any, repo: icechunk.Repository | None) -> list[str]:
    """Every damaged object found without reading chunk data: the ref, the tip's snapshot
    and manifests, the chain of parents, tagged versions, transaction logs (local)."""
    from pathlib import Path

    from .layout import BRANCH

    where, path = str(location), location.path
    if path is not None and (problem := lost_ref(path)) is not None:
        return [f"{where}: {problem}"]
    if repo is None:
        return [f"{where}: the repository cannot be opened"]
    problems = []
    try:
        verify_graph(repo, where=where)
    except DamagedStoreError as exc:
        problems.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure to verify is the finding
        problems.append(f"{where}: {_first(exc)}")
    if path is not None and not problems:
        with contextlib.suppress(Exception):
            for info in repo.ancestry(branch=BRANCH):
                log_file = Path(path) / "transactions" / info.id
                if info.parent_id is not None and not log_file.is_file():
                    problems.append(
                        f"{where}: the transaction log of version {info.id} is missing "
                        "(its data is intact; only the changes since its parent are unknown)"
                    )
    return problems


def intact_summary(
    location: Any, repo: icechunk.Repository | None, exclude: str | None = None
) -> str:
    """``intact versions: ...`` for a store, found without its ref or a history walk
    (``exclude``: a version found damaged by reading its chunks)."""
    path = location.path
    with contextlib.ExitStack() as stack:
        if path is not None and (repo is None or lost_ref(path) is not None):
            try:
                repo = stack.enter_context(shadow_repository(path))
            except Exception:  # noqa: BLE001
                return "no intact version found"
        if repo is None:
            return "no intact version found"
        tags: dict[str, list[str]] = {}
        with contextlib.suppress(Exception):
            for name in repo.list_tags():
                tags.setdefault(str(repo.lookup_tag(name)), []).append(name)
        candidates = [c for c in candidate_snapshots(repo, path) if c != exclude]
        return describe_intact(intact_versions(repo, candidates), tags)


def interrupted_creation(path: Any) -> bool:
    """True if a local folder holds only what an interrupted ``Repository.create`` leaves:
    Icechunk's empty first snapshot, no branch ref, no other object (nothing committed)."""
    from pathlib import Path

    root = Path(path)
    names = {p.name for p in root.iterdir()}
    if not names <= {"snapshots", "refs", "config.yaml", "embstore.lock", *_OBJECT_FOLDERS}:
        return False
    if (root / "refs").is_dir() and any((root / "refs").iterdir()):
        return False
    stored = ("manifests", "chunks", "transactions")
    if any(any((root / f).iterdir()) for f in stored if f in names):
        return False
    ids = snapshot_files(root)
    if len(ids) != 1:
        return False
    try:
        with shadow_repository(root) as shadow:
            return shadow.lookup_snapshot(ids[0]).parent_id is None
    except Exception:  # noqa: BLE001 - not readable: not ours to remove
        return False


def remove_creation_debris(path: Any) -> None:
    """Remove what :func:`interrupted_creation` found (no version refers to it)."""
    import shutil
    from pathlib import Path

    root = Path(path)
    for name in ("snapshots", "refs", "config.yaml", *_OBJECT_FOLDERS):
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
