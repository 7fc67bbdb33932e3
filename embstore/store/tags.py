"""Listing a store's tags (``embstore tags``): the names given to versions with ``tag``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from .location import StoreLike, parse_location
from .repo import open_repository, unreadable_as_store_error


@dataclass(frozen=True)
class TagInfo:
    """One tag: its name and the version it names (id, time, message, rows)."""

    name: str
    version: str
    time: datetime
    message: str
    rows: int | None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "time": self.time.isoformat()}


def tags(store: StoreLike) -> list[TagInfo]:
    """Every tag of ``store``, sorted by name, with the version each names.

    Examples
    --------
    >>> first = embstore.log("bv.store")[-2].id  # the first ingest commit
    >>> _ = embstore.tag("bv.store", "paper-v1")
    >>> _ = embstore.tag("bv.store", "before-relabel", version=first)
    >>> [(t.name, t.rows) for t in embstore.tags("bv.store")]
    [('before-relabel', 8), ('paper-v1', 24)]
    """
    location = parse_location(store)
    repo = open_repository(location)
    found = []
    with unreadable_as_store_error(location):
        for name in sorted(repo.list_tags()):
            snapshot = repo.lookup_tag(name)
            info = repo.lookup_snapshot(snapshot)
            rows = dict(info.metadata or {}).get("rows")
            rows = int(rows) if isinstance(rows, int | float) else None
            found.append(TagInfo(name, str(snapshot), info.written_at, info.message, rows))
    return found
