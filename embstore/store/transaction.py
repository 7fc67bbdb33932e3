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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import icechunk
import zarr

from .. import __version__
from ..errors import StoreError
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
#: Attempts of a transaction that keeps losing races on object storage.
MAX_ATTEMPTS = 12

T = TypeVar("T")


class Transaction:
    """An open write: a writable session at the tip of ``main`` and its root group.

    ``state`` is the version the transaction started from (None while a store is being
    created). Set ``message`` and update ``metadata`` to describe the commit.
    """

    def __init__(
        self, location: Location, repo: icechunk.Repository, action: str, message: str
    ) -> None:
        self.location = location
        self.repo = repo
        self.action = action
        self.message = message
        self.metadata: dict[str, Any] = {}
        with unreadable_as_store_error(location):
            self.session = repo.writable_session(BRANCH)
            self.group = zarr.open_group(self.session.store, mode="a", zarr_format=3)
        self.state: StoreState | None = (
            read_state(self.group, location=location) if ROOT_ATTR in self.group.attrs else None
        )

    @property
    def parent(self) -> str:
        """Snapshot id of the version this transaction started from."""
        return str(self.session.snapshot_id)

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
        if not self.session.has_uncommitted_changes:
            return None
        metadata = {
            "action": self.action,
            "embstore_version": __version__,
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
            **self.metadata,
        }
        return str(self.session.commit(self.message, metadata=plain(metadata)))


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
    store: StoreLike | Location, *, action: str, message: str, create: bool = False
) -> Iterator[Transaction]:
    """Open a write on ``store`` and commit it when the block ends without an exception.

    ``create=True`` (ingest and extract only) makes the repository if it does not exist; any
    other write on a missing store is a one-line error and creates nothing. A store whose
    current version does not follow the schema is never written.
    """
    location = parse_location(store)
    if create:
        _create_repository(location)
    repo = open_repository(location)  # "does not exist" before any lock file is made
    with _commit_lock(location):
        tx = Transaction(location, repo, action, message)
        if tx.state is not None:
            check_state(tx.state, location=location)
        yield tx
        with unreadable_as_store_error(location, "cannot commit to"):
            tx.commit()


def run_transaction(
    store: StoreLike | Location,
    work: Callable[[Transaction], T],
    *,
    action: str,
    message: str,
    create: bool = False,
) -> T:
    """Run ``work(tx)`` in a transaction and commit; on a lost race, run it again at the tip.

    ``work`` must derive everything it writes from ``tx`` (the version it starts from), so a
    retry after another writer's commit sees that commit: appends re-check which paths are
    stored, and every path ends up stored exactly once.
    """
    location = parse_location(store)
    for attempt in range(MAX_ATTEMPTS):
        try:
            with transaction(location, action=action, message=message, create=create) as tx:
                return work(tx)
        except icechunk.ConflictError:
            delay = min(5.0, 0.05 * 2**attempt) * (0.5 + random.random())
            log.info("%s: another writer committed first; retrying in %.2fs", location, delay)
            time.sleep(delay)
    msg = f"{location}: lost the race to commit {MAX_ATTEMPTS} times; try again"
    raise StoreError(msg)
