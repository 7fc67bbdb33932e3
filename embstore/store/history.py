"""A store's history: list versions, tag them, restore one, and collect old ones.

Every write is a version on the ``main`` branch (see :mod:`.transaction`). Restoring makes a
NEW version equal to an old one, so history is never rewritten and a restore can itself be
undone. ``gc`` forgets versions older than a cutoff (tagged versions and the newest are
always kept) and deletes the objects no kept version refers to.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import icechunk
import numpy as np
import zarr

from .._fs import write_text
from .._version import __version__
from ..errors import DamagedStoreError, StoreError
from .integrity import (
    intact_versions,
    lost_ref,
    shadow_repository,
    snapshot_files,
    verify_graph,
    verify_version,
)
from .layout import BRANCH, ROOT_ATTR, now
from .location import Location, StoreLike, parse_location
from .repo import (
    array_in,
    array_metadata,
    check_state,
    open_repository,
    plain,
    probe,
    read_state,
    readonly_group,
    resolve_version,
    unreadable_as_store_error,
)
from .transaction import STAGING_PREFIX, Transaction, _commit_lock, run_transaction, verify_tip

_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: Objects younger than this are never collected: a writer on object storage (no lock) may
#: have written chunks it has not committed yet.
DEFAULT_SAFETY_MARGIN = timedelta(hours=1)


@dataclass(frozen=True)
class VersionInfo:
    """One version of a store, as ``embstore log`` prints it."""

    id: str
    time: datetime
    message: str
    rows: int | None
    metadata: dict[str, Any]
    tags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time.isoformat(timespec="seconds"),
            "message": self.message,
            "rows": self.rows,
            "tags": self.tags,
            "metadata": self.metadata,
        }


def log(store: StoreLike) -> list[VersionInfo]:
    """Every version of ``store`` on ``main``, newest first.

    Examples
    --------
    >>> [v.message for v in embstore.log("bv.store")]  # commits end on 8-row chunks
    ['ingest complete: 24 rows added', 'ingest: +8 rows', 'ingest: +8 rows', 'ingest: +8 rows',
     'create store (8-d vectors)']
    """
    location = parse_location(store)
    repo = open_repository(location)
    with unreadable_as_store_error(location):
        tags: dict[str, list[str]] = {}
        for name in sorted(repo.list_tags()):
            tags.setdefault(repo.lookup_tag(name), []).append(name)
        infos = list(repo.ancestry(branch=BRANCH))
        seen = {info.id for info in infos}
        # gc's expire_snapshots can take a tagged version out of main's ancestry: list it too
        infos += [repo.lookup_snapshot(t) for t in tags if t not in seen]
        infos.sort(key=lambda info: info.written_at, reverse=True)
        versions = []
        for info in infos:
            if info.parent_id is None or (info.metadata or {}).get("staging"):
                continue  # Icechunk's empty first snapshot; halves of staged transactions
            meta = dict(info.metadata or {})
            rows = meta.get("rows")
            versions.append(
                VersionInfo(
                    id=info.id,
                    time=info.written_at,
                    message=info.message,
                    rows=int(rows) if isinstance(rows, int | float) else None,
                    metadata=meta,
                    tags=tags.get(info.id, []),
                )
            )
    return versions


def _snapshot_id(repo: Any, version: str, location: Any) -> str:
    selection = resolve_version(repo, version, location=location)
    if "snapshot_id" in selection:
        return selection["snapshot_id"]
    with unreadable_as_store_error(location):
        if "tag" in selection:
            return str(repo.lookup_tag(selection["tag"]))
        return str(repo.lookup_branch(BRANCH))


def tag(store: StoreLike, name: str, *, version: str | None = None) -> str:
    """Name a version (the newest by default); return its id. Tags are never collected."""
    location = parse_location(store)
    if not _TAG.match(name) or name == BRANCH:
        msg = f"{name!r} cannot be a tag (letters, digits, '.', '_', '-'; not {BRANCH!r})"
        raise StoreError(f"{location}: {msg}")
    repo = open_repository(location)
    snapshot = _snapshot_id(repo, version or BRANCH, location)
    _, _, group = readonly_group(location, snapshot)
    check_state(read_state(group, location=location), location=location)  # only sound versions
    probe(group, location=location)
    with unreadable_as_store_error(location, "cannot tag a version of"):
        if name in repo.list_tags():
            raise StoreError(f"{location}: tag {name!r} exists (tags never move)")
        repo.create_tag(name, snapshot)
    return snapshot


@dataclass
class RestoreReport:
    """What :func:`restore` did."""

    store: str
    restored: str
    version: str | None
    rows: int
    arrays_copied: list[str] = field(default_factory=list)
    chunks_copied: int = 0

    def summary(self) -> str:
        if self.version is None:
            return f"{self.store}: already equal to version {self.restored}; nothing committed"
        return (
            f"{self.store}: new version {self.version} equals {self.restored} "
            f"({self.rows} rows; {self.chunks_copied} chunk(s) copied back)"
        )


def restore(store: StoreLike, version: str) -> RestoreReport:
    """Commit a new version whose content equals ``version`` (undo without rewriting history).

    ``version`` is a tag, a full id or a prefix of one (found among the snapshot files of a
    local store: no history walk). The target is verified (id, schema, chunk references)
    first. On a sound tip only what changed since ``version`` is copied back (Icechunk's diff
    names the changed chunks; without it, e.g. a lost transaction log or a tag that gc took out
    of the branch's ancestry, every chunk is copied). On a damaged tip, or with the branch ref
    lost, the new version is committed on top of ``version`` itself and ``main`` moves there:
    neither the damaged tip nor the transaction logs are needed.
    """
    location = parse_location(store)
    path = location.path
    if path is not None and snapshot_files(path) and lost_ref(path) is not None:
        recover(location, version=version)  # adds the ref at the target, then restores there
    repo = open_repository(location)
    target_id = _snapshot_id(repo, version, location)
    _, target = verify_version(repo, target_id, where=f"{location} at {version}")
    target_state = read_state(target, location=location)
    try:
        with unreadable_as_store_error(location):
            verify_tip(repo, str(repo.lookup_branch(BRANCH)), location=location)
    except StoreError:
        return _restore_onto_target(repo, location, target_id, target_state)

    def work(tx: Transaction) -> RestoreReport:
        report = RestoreReport(str(location), target_id, None, target_state.rows)
        if tx.parent == target_id:
            return report
        changed: dict[str, Any] | None
        try:
            diff = repo.diff(from_snapshot_id=target_id, to_snapshot_id=tx.parent)
            changed = {path.strip("/"): coords for path, coords in diff.updated_chunks.items()}
        except icechunk.IcechunkError:  # no transaction log, or not an ancestor after gc
            changed = None
        current = {name for name, _ in tx.group.arrays()}
        for name in sorted(current - set(target_state.arrays)):
            del tx.group[name]
        for name, meta in target_state.arrays.items():
            report.chunks_copied += _restore_array(
                tx.group, array_in(target, name), meta, current, changed
            )
            report.arrays_copied.append(name)
        tx.set_meta(_restored_meta(target_state, target_id))
        tx.message = f"restore version {target_id}"
        tx.metadata.update(rows=target_state.rows, restored=target_id)
        return report

    report = run_transaction(location, work, action="restore", message="restore", check=False)
    if report.arrays_copied:
        report.version = _snapshot_id(repo, BRANCH, location)
    return report


def _restored_meta(target_state: Any, target_id: str) -> dict[str, Any]:
    meta = plain(target_state.meta)
    entry = {
        "action": "restore",
        "time": now(),
        "embstore_version": __version__,
        "status": "complete",
        "restored": target_id,
    }
    meta["provenance"] = [*meta["provenance"], entry]
    return meta


def _restore_onto_target(
    repo: Any, location: Location, target_id: str, target_state: Any
) -> RestoreReport:
    """The tip is damaged: commit the restore record on top of the target, move ``main``."""
    report = RestoreReport(str(location), target_id, None, target_state.rows)
    branch = f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    with _commit_lock(location), unreadable_as_store_error(location, "cannot restore"):
        repo.create_branch(branch, target_id)
        try:
            session = repo.writable_session(branch)
            group = zarr.open_group(session.store, mode="a", zarr_format=3)
            group.attrs[ROOT_ATTR] = _restored_meta(target_state, target_id)
            metadata: dict[str, Any] = {"action": "restore", "embstore_version": __version__}
            metadata.update(rows=target_state.rows, restored=target_id, damaged_tip=True)
            snapshot = str(session.commit(f"restore version {target_id}", metadata=metadata))
            repo.reset_branch(BRANCH, snapshot)
        finally:
            repo.delete_branch(branch)
    report.version = snapshot
    report.arrays_copied = list(target_state.arrays)
    return report


@dataclass
class RecoverReport:
    """What :func:`recover` did."""

    store: str
    snapshot: str | None
    problem: str | None

    def summary(self) -> str:
        if self.snapshot is None:
            return f"{self.store}: the branch ref is sound; nothing to recover"
        return f"{self.store}: {self.problem}; branch {BRANCH!r} now names {self.snapshot}"


def recover(store: StoreLike | Location, *, version: str | None = None) -> RecoverReport:
    """Recreate a lost or garbled branch ref of a local store from the newest intact snapshot
    (or ``version``, an id or prefix of a snapshot file). Only ever adds the ref: nothing is
    deleted and no version is rewritten.
    """
    location = parse_location(store)
    if location.path is None:
        raise StoreError(f"{location}: recover works on local stores (on S3 the ref is atomic)")
    open_repository(location) if not snapshot_files(location.path) else None  # one-line error
    problem = lost_ref(location.path)
    if problem is None:
        return RecoverReport(str(location), None, None)
    with _commit_lock(location), shadow_repository(location.path) as shadow:
        ids = snapshot_files(location.path)
        tag_ref = location.path / "refs" / f"tag.{version}" / "ref.json"
        if version is not None and tag_ref.is_file():  # tags survive a lost branch ref
            with contextlib.suppress(OSError, ValueError, KeyError):
                version = str(json.loads(tag_ref.read_text(encoding="utf-8"))["snapshot"])
        if version is not None:
            ids = [i for i in ids if i.upper().startswith(version.upper())]
            if len(ids) != 1:
                raise StoreError(f"{location}: version {version!r} names {len(ids)} snapshots")
        intact = intact_versions(shadow, ids)
        if not intact:
            raise DamagedStoreError(f"{location}: {problem}; no intact version to recover")
        newest = str(intact[0].id)
        ref = location.path / "refs" / f"branch.{BRANCH}" / "ref.json"
        ref.parent.mkdir(parents=True, exist_ok=True)
        write_text(ref, json.dumps({"snapshot": newest}))
    return RecoverReport(str(location), newest, problem)


def _restore_array(
    group: zarr.Group,
    source: zarr.Array,
    meta: dict[str, Any],
    current: set[str],
    changed: dict[str, Any] | None,
) -> int:
    """Make ``group[name]`` equal ``source``; return how many chunks were copied."""
    name = source.basename
    existing = array_in(group, name) if name in current else None
    same_layout = existing is not None and _layout(array_metadata(existing)) == _layout(meta)
    if same_layout:
        assert existing is not None
        array = existing
        grid = [range(-(-s // c)) for s, c in zip(source.shape, source.chunks, strict=True)]
        if changed is None:
            coords = list(itertools.product(*grid))
        else:
            coords = [tuple(c) for c in changed.get(name, ())]
            # chunks a shrink since the target dropped are not in the diff: copy them back
            kept = array.shape[0] // source.chunks[0] if array.shape[0] else 0
            coords += [c for c in itertools.product(*grid) if c[0] >= kept]
            coords = sorted(set(coords))
        if tuple(array.shape) != tuple(source.shape):
            array.resize(source.shape)
    else:
        if name in current:
            del group[name]
        array = group.create_array(
            name,
            shape=source.shape,
            chunks=source.chunks,
            dtype=source.dtype,
            fill_value=source.fill_value,
            dimension_names=meta.get("dimension_names"),
            compressors=source.compressors or None,
        )
        grid = [range(-(-s // c)) for s, c in zip(source.shape, source.chunks, strict=True)]
        coords = list(itertools.product(*grid))
    array.update_attributes(dict(source.attrs))
    copied = 0
    for coord in coords:
        region = tuple(
            slice(i * c, min((i + 1) * c, s))
            for i, c, s in zip(coord, source.chunks, source.shape, strict=True)
        )
        if all(r.start < r.stop for r in region):
            array[region] = np.asarray(source[region])
            copied += 1
    return copied


def _layout(meta: dict[str, Any]) -> Any:
    """What must match for an array to be restored in place (everything but shape, attrs)."""
    return {k: v for k, v in meta.items() if k not in ("shape", "attributes")}


@dataclass
class GcReport:
    """What :func:`gc` removed."""

    store: str
    versions_expired: int
    chunks_deleted: int
    bytes_deleted: int
    manifests_deleted: int
    snapshots_deleted: int

    def summary(self) -> str:
        return (
            f"{self.store}: forgot {self.versions_expired} version(s); deleted "
            f"{self.chunks_deleted} chunk(s) ({self.bytes_deleted / 2**20:.1f} MiB), "
            f"{self.manifests_deleted} manifest(s), {self.snapshots_deleted} snapshot(s)"
        )


def gc(
    store: StoreLike,
    *,
    older_than: timedelta,
    safety_margin: timedelta = DEFAULT_SAFETY_MARGIN,
) -> GcReport:
    """Forget versions older than ``older_than`` and delete what no kept version uses.

    The newest version and every tagged version are kept whatever their age. Objects younger
    than ``safety_margin`` are never deleted, so a writer that has not committed yet (on object
    storage; on local storage writers hold the lock gc takes) keeps its chunks.
    """
    location = parse_location(store)
    if older_than < timedelta(0) or safety_margin < timedelta(0):
        raise StoreError(f"{location}: older_than and safety_margin cannot be negative")
    repo = open_repository(location)
    with _commit_lock(location):
        verify_graph(repo, where=str(location))  # refuse on a graph it cannot verify
        _, _, group = _tip(repo, location)
        probe(group, location=location)
        when = datetime.now(UTC)
        with unreadable_as_store_error(location, "cannot collect garbage in"):
            _drop_abandoned_staging(repo, before=when - safety_margin)
            expired = repo.expire_snapshots(older_than=when - older_than)
            summary = repo.garbage_collect(when - safety_margin)
    return GcReport(
        store=str(location),
        versions_expired=len(expired),
        chunks_deleted=summary.chunks_deleted,
        bytes_deleted=summary.bytes_deleted,
        manifests_deleted=summary.manifests_deleted,
        snapshots_deleted=summary.snapshots_deleted,
    )


def _drop_abandoned_staging(repo: Any, *, before: datetime) -> None:
    """Delete staging branches a killed writer left (older than the safety margin)."""
    for branch in repo.list_branches():
        if branch.startswith(STAGING_PREFIX):
            tip = next(iter(repo.ancestry(branch=branch)))
            if tip.written_at < before:
                repo.delete_branch(branch)


def _tip(repo: Any, location: Any) -> tuple[Any, Any, zarr.Group]:
    with unreadable_as_store_error(location):
        session = repo.readonly_session(branch=BRANCH)
        return repo, session, zarr.open_group(session.store, mode="r", zarr_format=3)


def parse_age(text: str) -> timedelta:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"`` or ``"0"`` as a timedelta.

    >>> parse_age("7d"), parse_age("90m")
    (datetime.timedelta(days=7), datetime.timedelta(seconds=5400))
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not an age such as 7d, 12h, 30m, 45s")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks", "": "days"}
    return timedelta(**{unit[match.group(2)]: float(match.group(1))})
