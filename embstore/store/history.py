"""A store's history: list versions, tag them, restore one, and collect old ones.

Every write is a version on the ``main`` branch (see :mod:`.transaction`). Restoring makes a
NEW version equal to an old one, so history is never rewritten and a restore can itself be
undone. ``gc`` forgets versions older than a cutoff (tagged versions and the newest are
always kept) and deletes the objects no kept version refers to.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import zarr

from .._version import __version__
from ..errors import StoreError
from .layout import BRANCH, now
from .location import StoreLike, parse_location
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
from .transaction import STAGING_PREFIX, Transaction, _commit_lock, run_transaction

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
    >>> [v.message for v in embstore.log("bv.store")][:2]
    ['ingest complete: 24 rows added', 'ingest: +4 rows']
    """
    location = parse_location(store)
    repo = open_repository(location)
    with unreadable_as_store_error(location):
        tags: dict[str, list[str]] = {}
        for name in sorted(repo.list_tags()):
            tags.setdefault(repo.lookup_tag(name), []).append(name)
        versions = []
        for info in repo.ancestry(branch=BRANCH):
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

    Only what changed since ``version`` is copied back: Icechunk's diff names the changed
    chunks, arrays created since are removed, arrays removed since are recreated.
    """
    location = parse_location(store)
    repo = open_repository(location)
    target_id = _snapshot_id(repo, version, location)
    with unreadable_as_store_error(location):
        target = zarr.open_group(
            repo.readonly_session(snapshot_id=target_id).store, mode="r", zarr_format=3
        )
        target_state = read_state(target, location=location)
    check_state(target_state, location=f"{location} at {version}")

    def work(tx: Transaction) -> RestoreReport:
        report = RestoreReport(str(location), target_id, None, target_state.rows)
        if tx.parent == target_id:
            return report
        with unreadable_as_store_error(location):
            diff = repo.diff(from_snapshot_id=target_id, to_snapshot_id=tx.parent)
            changed = {path.strip("/"): coords for path, coords in diff.updated_chunks.items()}
        current = {name for name, _ in tx.group.arrays()}
        for name in sorted(current - set(target_state.arrays)):
            del tx.group[name]
        for name, meta in target_state.arrays.items():
            report.chunks_copied += _restore_array(
                tx.group, array_in(target, name), meta, current, changed
            )
            report.arrays_copied.append(name)
        meta = plain(target_state.meta)
        entry = {
            "action": "restore",
            "time": now(),
            "embstore_version": __version__,
            "status": "complete",
            "restored": target_id,
        }
        meta["provenance"] = [*meta["provenance"], entry]
        tx.set_meta(meta)
        tx.message = f"restore version {target_id}"
        tx.metadata.update(rows=target_state.rows, restored=target_id)
        return report

    report = run_transaction(location, work, action="restore", message="restore", check=False)
    if report.arrays_copied:
        report.version = _snapshot_id(repo, BRANCH, location)
    return report


def _restore_array(
    group: zarr.Group,
    source: zarr.Array,
    meta: dict[str, Any],
    current: set[str],
    changed: dict[str, Any],
) -> int:
    """Make ``group[name]`` equal ``source``; return how many chunks were copied."""
    name = source.basename
    existing = array_in(group, name) if name in current else None
    if existing is not None and _layout(array_metadata(existing)) == _layout(meta):
        array = existing
        if tuple(array.shape) != tuple(source.shape):
            array.resize(source.shape)
        coords = [tuple(c) for c in changed.get(name, ())]
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
        _, _, group = _tip(repo, location)
        check_state(read_state(group, location=location), location=location)
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
