"""The only way anything is written to a store: a transaction that ends in one commit.

::

    with transaction(store, action="normalize", message="normalize embedding") as tx:
        ...  # change arrays through tx.group, attributes through tx.set_meta
    # one commit with a message and metadata, or nothing at all if the block raised

Every version of a store is one such commit on the ``main`` branch of its Icechunk
repository, so a write is all or nothing for every reader, and an interrupted write leaves
only objects no version refers to (``gc`` collects them). Nothing is ever repaired or deleted.

Several writers
---------------
Icechunk commits are safe against concurrent writers on object storage (conditional writes:
a lost race raises ``ConflictError``) but NOT on a POSIX filesystem, where concurrent commits
can be lost silently (NOTES.md: 17-37 of 400 with 4 writers). So on local storage (local disk,
Lustre, NFS, GPFS) a transaction holds an exclusive ``flock`` on ``STORE/embstore.lock`` from
opening its session to its commit; the expensive work (reading files, running a model) stays
outside it. On object storage :func:`run_transaction` retries a lost race from the new tip of
the branch, with backoff, re-running the work so it sees what the winner committed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import random
import shlex
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import icechunk
import zarr

from .._version import __version__
from ..errors import StoreError
from .integrity import check_chunk_refs, check_snapshot_id
from .layout import BRANCH, ROOT_ATTR
from .location import Location, StoreLike, parse_location
from .repo import (
    StoreState,
    _quiet_icechunk_logs,
    check_state,
    open_repository,
    plain,
    read_state,
    repository_exists,
    short,
    unreadable_as_store_error,
)

log = logging.getLogger(__name__)

LOCK_FILE = "embstore.lock"
#: Branches a staged transaction works on before ``main`` moves to its result (gc removes
#: the ones a killed writer left).
STAGING_PREFIX = "embstore-staging-"
#: Attempts of a transaction that keeps losing races on object storage.
MAX_ATTEMPTS = 12

T = TypeVar("T")


class _LostRace(Exception):
    """``main`` moved while a staged transaction worked: run it again from the new tip."""


class Transaction:
    """An open write: a writable session at the tip of ``main`` and its root group.

    ``state`` is the version the transaction started from (None while a store is being
    created). Set ``message`` and update ``metadata`` to describe the commit.
    """

    def __init__(
        self,
        location: Location,
        repo: icechunk.Repository,
        action: str,
        message: str,
        *,
        staged: bool = False,
        verify: bool = True,
    ) -> None:
        self.location = location
        self.repo = repo
        self.action = action
        self.message = message
        self.metadata: dict[str, Any] = {}
        self.branch = BRANCH
        with unreadable_as_store_error(location):
            self._parent = str(repo.lookup_branch(BRANCH))
        if verify:  # before anything is written, also a staging branch's ref
            verify_tip(repo, self._parent, location=location)
        with unreadable_as_store_error(location):
            if staged:
                self.branch = f"{STAGING_PREFIX}{uuid.uuid4().hex}"
                repo.create_branch(self.branch, self._parent)
            self._open_session()
        self.state: StoreState | None = (
            read_state(self.group, location=location) if ROOT_ATTR in self.group.attrs else None
        )

    def _open_session(self) -> None:
        self.session = self.repo.writable_session(self.branch)
        self.group = zarr.open_group(self.session.store, mode="a", zarr_format=3)

    @property
    def parent(self) -> str:
        """Snapshot id of the version this transaction started from."""
        return self._parent

    def fork(self) -> icechunk.ForkSession:
        """A session that ``dask.distributed`` workers can write into (staged transactions).

        What the transaction changed so far is committed to its private staging branch first
        (Icechunk forks only sessions without changes); ``main`` moves only at the end, to
        the final result, so no reader ever sees the intermediate snapshot.
        """
        if self.branch == BRANCH:
            raise RuntimeError("fork() needs a transaction opened with staged=True")
        if self.session.has_uncommitted_changes:
            self.session.commit(f"(staging) {self.message}", metadata={"staging": True})
            self._open_session()
        return self.session.fork()

    def require_state(self) -> StoreState:
        """The starting version's state; StoreError if the repository is not an embstore store."""
        if self.state is None:
            raise StoreError(f"{self.location}: an Icechunk repository, but not an embstore store")
        return self.state

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Replace embstore's root attribute (rows, provenance...) in this transaction."""
        self.group.attrs[ROOT_ATTR] = plain(meta)

    def commit(self) -> str | None:
        """Commit what was changed (nothing if nothing was); return the new version's id."""
        if not self.session.has_uncommitted_changes and self.branch == BRANCH:
            return None
        metadata = {
            "action": self.action,
            "embstore_version": __version__,
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
            **self.metadata,
        }
        snapshot = str(self.session.commit(self.message, metadata=plain(metadata)))
        if self.branch != BRANCH:  # fast-forward main, unless another writer moved it
            try:
                self.repo.reset_branch(BRANCH, snapshot, from_snapshot_id=self._parent)
            except icechunk.IcechunkError as exc:
                if "conflict" not in str(exc):
                    raise
                raise _LostRace(str(self.location)) from exc
            finally:
                self.repo.delete_branch(self.branch)
        return snapshot

    def discard(self) -> None:
        """Forget a staged transaction's branch (its objects are left for ``gc``)."""
        if self.branch != BRANCH and self.branch in self.repo.list_branches():
            self.repo.delete_branch(self.branch)


def verify_tip(repo: icechunk.Repository, snapshot_id: str, *, location: Location) -> None:
    """Refuse to write on a tip that is not what its ref names or lacks chunk references.

    Checks that the snapshot file holds ``snapshot_id``, that the version follows the schema
    with one row count, and that every array that should be full has its first and last chunk
    reference (a lost, garbled or swapped manifest). Raises DamagedStoreError; writes nothing.
    """
    if check_snapshot_id(repo, snapshot_id, where=str(location)).parent_id is None:
        return  # Icechunk's empty first snapshot: a store being created
    with unreadable_as_store_error(location):
        session = repo.readonly_session(snapshot_id=snapshot_id)
        group = zarr.open_group(session.store, mode="r", zarr_format=3)
        if ROOT_ATTR not in group.attrs:
            return  # a repository being created: nothing committed yet
    state = read_state(group, location=location)
    check_state(state, location=location)
    check_chunk_refs(session, state.arrays, state.rows, where=str(location))


@contextlib.contextmanager
def _commit_lock(location: Location) -> Iterator[None]:
    """Hold the store's exclusive write lock on local storage; nothing on object storage.

    The kernel drops a ``flock`` when its holder dies, so a killed writer never leaves a
    stale lock.
    """
    if location.path is None:
        yield
        return
    with (location.path / LOCK_FILE).open("a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _create_repository(location: Location) -> None:
    """Create the repository unless it exists; a concurrent creator may win the race.

    Icechunk creates only in an empty prefix, so this happens before the lock file exists.
    """
    _quiet_icechunk_logs()
    for attempt in range(5):
        if repository_exists(location):
            return
        try:
            icechunk.Repository.create(location.storage())
            return
        except icechunk.IcechunkError as exc:
            if attempt == 4:
                raise StoreError(
                    f"{location}: cannot create the repository ({short(exc)})"
                ) from exc
            time.sleep(0.1 * (attempt + 1))  # another creator is writing it: look again


@contextlib.contextmanager
def transaction(
    store: StoreLike | Location,
    *,
    action: str,
    message: str,
    create: bool = False,
    check: bool = True,
    staged: bool = False,
) -> Iterator[Transaction]:
    """Open a write on ``store`` and commit it when the block ends without an exception.

    ``create=True`` (ingest and extract only) makes the repository if it does not exist; any
    other write on a missing store is a one-line error and creates nothing. A store whose
    current version does not follow the schema is never written, except by ``check=False``
    (restore, which replaces that version with a checked one). ``staged=True`` works on a
    private branch so that :meth:`Transaction.fork` can hand sessions to dask workers.
    """
    location = parse_location(store)
    if create:
        _create_repository(location)
    repo = open_repository(location)  # "does not exist" before any lock file is made
    with _commit_lock(location), zarr.config.set({"array.write_empty_chunks": True}):
        # every chunk is stored, also one of fill values: a missing reference is damage
        tx = Transaction(location, repo, action, message, staged=staged, verify=check)
        try:
            if check and tx.state is not None:
                check_state(tx.state, location=location)
            with unreadable_as_store_error(location):  # damage met while reading mid-write
                yield tx
            with unreadable_as_store_error(location, "cannot commit to"):
                tx.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                tx.discard()
            raise


def run_transaction(
    store: StoreLike | Location,
    work: Callable[[Transaction], T],
    *,
    action: str,
    message: str,
    create: bool = False,
    check: bool = True,
    staged: bool = False,
) -> T:
    """Run ``work(tx)`` in a transaction and commit; on a lost race, run it again at the tip.

    ``work`` must derive everything it writes from ``tx`` (the version it starts from), so a
    retry after another writer's commit sees that commit: appends re-check which paths are
    stored, and every path ends up stored exactly once.
    """
    location = parse_location(store)
    for attempt in range(MAX_ATTEMPTS):
        try:
            with transaction(
                location,
                action=action,
                message=message,
                create=create,
                check=check,
                staged=staged,
            ) as tx:
                return work(tx)
        except (icechunk.ConflictError, _LostRace):
            delay = min(5.0, 0.05 * 2**attempt) * (0.5 + random.random())
            log.info("%s: another writer committed first; retrying in %.2fs", location, delay)
            time.sleep(delay)
    msg = f"{location}: lost the race to commit {MAX_ATTEMPTS} times; try again"
    raise StoreError(msg)
