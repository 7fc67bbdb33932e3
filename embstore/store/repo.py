"""Opening a store's Icechunk repository, reading a version's state, and naming damage.

A store is an Icechunk repository whose ``main`` branch holds one Zarr v3 group: the
``embedding`` matrix, ``path`` and label arrays, ``nonfinite`` and derived variables, with
embstore's own metadata in the root attribute ``embstore``. Every problem reading it becomes a
one-line :class:`~embstore.errors.StoreError` naming the store.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, TypeVar

import icechunk
import zarr
from zarr.core.group import AsyncGroup, ConsolidatedMetadata, GroupMetadata

from ..errors import DamagedStoreError, EmbstoreError, StoreError
from .integrity import check_chunk_refs, check_snapshot_id, lost_ref, snapshot_files
from .layout import BRANCH, ROOT_ATTR, SAMPLE, dims_of
from .location import Location, StoreLike, parse_location
from .schema import describe_metadata, validate_description

#: Icechunk errors name internal object paths and can run to many lines: keep the first.
_MESSAGE_LIMIT = 300


@cache
def _quiet_icechunk_logs() -> None:
    # Icechunk warns that local storage is unsafe for concurrent commits; embstore serializes
    # commits on local storage with a lock (transaction.py), so the warning is noise here.
    if "ICECHUNK_LOG" not in os.environ:
        icechunk.set_logs_filter("error")


def short(exc: BaseException) -> str:
    """The first line of an exception's message, bounded (for one-line errors)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


#: Where a failure to read means damaged bytes: the storage engine and the codecs.
_ENGINE_PARTS = ("/icechunk/", "/zarr/codecs/", "/zarr/core/codec_pipeline", "/numcodecs/")


def _raised_by_engine(exc: BaseException) -> bool:
    """True if ``exc`` was raised inside Icechunk, zarr or a codec (a damaged object)."""
    if isinstance(exc, icechunk.IcechunkError | zarr.errors.BaseZarrError):
        return True
    # metadata documents are JSON inside Icechunk's snapshots, which carry no checksum: a
    # garbled byte there surfaces as a decode error in zarr's metadata parsing
    parts = _ENGINE_PARTS + (
        ("/zarr/",) if isinstance(exc, UnicodeDecodeError | json.JSONDecodeError) else ()
    )
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename.replace(os.sep, "/")
        if any(part in name for part in parts):
            return True
        tb = tb.tb_next
    return False


@contextlib.contextmanager
def unreadable_as_store_error(
    location: Location | str, what: str = "cannot read"
) -> Iterator[None]:
    """Turn Icechunk's and the codecs' errors (damaged objects, a failed checksum, missing
    refs...) into one-line StoreErrors naming the store; damage is a DamagedStoreError."""
    try:
        yield
    except EmbstoreError:
        raise
    except (icechunk.ConflictError, MemoryError):  # a lost race is retried, not damage
        raise
    except Exception as exc:
        # an environment error deep in the engine (disk full, permission) says so first
        os_error = re.search(r"os error (\d+)", str(exc))
        if not _raised_by_engine(exc):
            raise
        if isinstance(exc, OSError) and exc.errno is not None:
            reason = os.strerror(exc.errno)
            raise StoreError(f"{location}: {reason} ({what} the repository)") from exc
        missing = re.search(r"Object at location (\S+) not found", str(exc))
        if missing is not None:  # an object a version refers to is gone: damage
            name = "/".join(missing.group(1).split("/")[-2:])
            raise DamagedStoreError(f"{location}: object {name} is missing ({what} it)") from exc
        if os_error is not None:
            reason = os.strerror(int(os_error.group(1)))
            raise StoreError(f"{location}: {reason} ({what} the repository)") from exc
        raise DamagedStoreError(f"{location}: {what} the repository ({short(exc)})") from exc


def _legacy_hint(location: Location) -> str:
    """Why a local folder is not a repository: a schema-1 store, another Zarr store, or else."""
    assert location.path is not None
    root = location.path / "zarr.json"
    if root.is_file():
        with contextlib.suppress(OSError, ValueError):
            attrs = json.loads(root.read_text(encoding="utf-8")).get("attributes", {})
            if ROOT_ATTR in attrs:
                return "a schema-1 embstore store; convert it into a new store with upgrade"
        return "a plain Zarr store, not an embstore store (ingest it into a store instead)"
    if snapshot_files(location.path) and (problem := lost_ref(location.path)) is not None:
        return f"{problem}; recover it with `embstore recover {location}`"
    return "not an embstore store (no Icechunk repository)"


F = TypeVar("F", bound=Callable[..., Any])


def reads_store(func: F) -> F:
    """Decorate a verb whose first argument is a store: damage met while it reads the store's
    data (a lost or garbled chunk) becomes a one-line StoreError naming the store."""

    @functools.wraps(func)
    def wrapper(store: Any, *args: Any, **kwargs: Any) -> Any:
        with unreadable_as_store_error(store):
            return func(store, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def repository_exists(location: Location) -> bool:
    """True if an Icechunk repository exists at ``location``."""
    if location.path is not None and not location.path.is_dir():
        return False
    _quiet_icechunk_logs()
    with unreadable_as_store_error(location, "cannot look up"):
        return bool(icechunk.Repository.exists(location.storage()))


def open_repository(store: StoreLike | Location) -> icechunk.Repository:
    """Open the repository of an existing store; a one-line StoreError otherwise."""
    location = parse_location(store)
    if location.path is not None and not location.path.exists():
        raise StoreError(f"{location}: does not exist")
    if not repository_exists(location):
        hint = _legacy_hint(location) if location.path is not None else "no store there"
        raise StoreError(f"{location}: {hint}")
    with unreadable_as_store_error(location, "cannot open"):
        return icechunk.Repository.open(location.storage())


@dataclass(frozen=True)
class StoreState:
    """The metadata of one version: root attributes and every root array's metadata."""

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
        """Arrays along the ``sample`` dimension (labels and variables)."""
        return [n for n, m in self.arrays.items() if dims_of(m)[:1] == (SAMPLE,)]

    def label_names(self) -> list[str]:
        """1-D sample arrays other than ``path`` and ``nonfinite``: the label columns."""
        return [
            n
            for n in self.sample_arrays()
            if dims_of(self.arrays[n]) == (SAMPLE,) and n not in ("path", "nonfinite")
        ]


def array_in(group: zarr.Group, name: str) -> zarr.Array:
    """``group[name]``, which must be an array (zarr types a member as ``Array | Group``)."""
    member = group[name]
    if not isinstance(member, zarr.Array):
        raise StoreError(f"{group.store_path}: {name!r} is a group where an array belongs")
    return member


def array_metadata(array: zarr.Array) -> dict[str, Any]:
    """An array's metadata as its ``zarr.json`` document."""
    return json.loads(json.dumps(array.metadata.to_dict(), default=str))


def read_state(group: zarr.Group, *, location: Location | str) -> StoreState:
    """Read a version's state from its root group; StoreError if it is not an embstore group."""
    with unreadable_as_store_error(location):
        attrs = dict(group.attrs)
        if ROOT_ATTR not in attrs:
            raise StoreError(f"{location}: an Icechunk repository, but not an embstore store")
        arrays = {name: array_metadata(array) for name, array in group.arrays()}
    return StoreState(attrs=json.loads(json.dumps(attrs)), arrays=arrays)


def check_state(state: StoreState, *, location: Location | str) -> None:
    """Raise unless ``state`` follows the schema and its arrays agree on the row count.

    Writes call this before changing anything: a store embstore cannot read fully is never
    written.
    """
    validate_description(describe_metadata(state.attrs, state.arrays), store=str(location))
    for name in state.sample_arrays():
        length = state.arrays[name]["shape"][0]
        if length != state.rows:
            msg = f"{location}: array {name!r} has {length} rows, the store {state.rows}"
            raise StoreError(msg)


def probe(group: zarr.Group, *, location: Location | str) -> None:
    """Read the first element of every array, so a version whose manifests are lost or
    garbled is found before it is tagged or collected (cheap: one chunk per array)."""
    with unreadable_as_store_error(location):
        for _, array in group.arrays():
            if array.size:
                array[(0,) * array.ndim]


def resolve_version(repo: icechunk.Repository, version: str | None, *, location: Location) -> dict:
    """Keyword arguments of ``readonly_session`` for a version: a tag, a snapshot id or an
    unambiguous prefix of one on ``main``, or the tip of ``main`` when ``version`` is None."""
    if version is None or version == BRANCH:
        return {"branch": BRANCH}
    with unreadable_as_store_error(location):
        tags = repo.list_tags()
        if version in tags:
            return {"tag": version}
        ids = {str(repo.lookup_tag(name)) for name in tags}  # gc may cut them out of main
        if location.path is not None:  # the snapshot files: no history walk, no tip needed
            ids.update(snapshot_files(location.path))
        else:
            ids.update(info.id for info in repo.ancestry(branch=BRANCH))
    matches = sorted(i for i in ids if i.upper().startswith(version.upper()))
    if len(matches) == 1:
        return {"snapshot_id": matches[0]}
    what = "is ambiguous" if matches else "is neither a tag nor a version on main"
    raise StoreError(f"{location}: version {version!r} {what} (the versions are listed by log)")


def readonly_group(
    store: StoreLike | Location, version: str | None = None
) -> tuple[Location, icechunk.Session, zarr.Group]:
    """A read-only session at ``version`` and its root group."""
    location = parse_location(store)
    repo = open_repository(location)
    selection = resolve_version(repo, version, location=location)
    with unreadable_as_store_error(location):
        session = repo.readonly_session(**selection)
        group = metadata_in_memory(
            zarr.open_group(session.store, mode="r", zarr_format=3, use_consolidated=False)
        )
    # what the ref names is what is read; a replaced snapshot or manifest is an error
    check_snapshot_id(repo, str(session.snapshot_id), where=str(location))
    with unreadable_as_store_error(location):
        if ROOT_ATTR in group.attrs:
            state = read_state(group, location=location)
            check_chunk_refs(session, state.arrays, state.rows, where=str(location))
    return location, session, group


def metadata_in_memory(group: zarr.Group) -> zarr.Group:
    """``group`` with every member's metadata read once, concurrently, and kept in memory.

    A read-only version never changes, so its metadata need not be fetched again: listing
    the arrays, reading the state and building the xarray dataset then cost no I/O (each
    used to list the group and read every ``zarr.json`` again). Nothing is written: the
    metadata is zarr's consolidated form, held by this group object only.
    """
    # sorted: members arrive in the order their reads finish; xarray's dask names (tokens)
    # and the variables' order follow this order, so the same version gives the same names
    members = {key: node.metadata for key, node in sorted(group.members(max_depth=None))}
    for key, meta in members.items():
        if isinstance(meta, GroupMetadata) and meta.consolidated_metadata is None:
            members[key] = replace(meta, consolidated_metadata=ConsolidatedMetadata(metadata={}))
    ConsolidatedMetadata._flat_to_nested(members)  # the layout zarr's consolidation uses
    kept = replace(group.metadata, consolidated_metadata=ConsolidatedMetadata(metadata=members))
    return zarr.Group(AsyncGroup(metadata=kept, store_path=group.store_path))


def plain(value: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-clean deep copy."""
    return json.loads(json.dumps(value))


def is_store(store: StoreLike | Location) -> bool:
    """True if ``store`` holds an embstore store (a repository with embstore's metadata).

    A repository whose creation was interrupted before its first commit is not a store yet
    (the next ingest or extract creates it); a damaged one raises a one-line StoreError.
    """
    location = parse_location(store)
    if not repository_exists(location):
        return False
    repo = open_repository(location)
    with unreadable_as_store_error(location):
        tip = next(iter(repo.ancestry(branch=BRANCH)))
    if tip.parent_id is None:  # only Icechunk's empty first snapshot
        return False
    _, _, group = readonly_group(location)
    with unreadable_as_store_error(location):
        return ROOT_ATTR in group.attrs
