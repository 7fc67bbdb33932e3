"""Commands over a store's versions: tag, restore, recover, gc, upgrade."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import embstore
from embstore._cli.app import (
    Quiet,
    StoreArg,
    Version,
    _command,
    _progress,
    _say,
)


@_command
def tag(
    store: StoreArg,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The tag (never moves, never collected).")
    ],
    version: Version = None,
    quiet: Quiet = False,
) -> None:
    """Name a version (the newest by default)."""
    snapshot = embstore.tag(store, name, version=version)
    _say(quiet, f"{store}: tagged {snapshot} as {name!r}")


@_command
def restore(
    store: StoreArg,
    version: Annotated[str, typer.Argument(metavar="VERSION", help="A version id or a tag.")],
    quiet: Quiet = False,
) -> None:
    """Undo: commit a new version equal to VERSION (history is kept)."""
    _say(quiet, embstore.restore(store, version).summary())


@_command
def recover(store: StoreArg, quiet: Quiet = False) -> None:
    """Recreate a lost or garbled branch ref from the newest intact version (only adds)."""
    _say(quiet, embstore.recover(store).summary())


@_command
def gc(
    store: StoreArg,
    older_than: Annotated[
        str, typer.Option(help="Forget versions older than this age: 7d, 12h, 30m, 0s.")
    ],
    safety_margin: Annotated[
        str, typer.Option(help="Never delete objects younger than this (running writers).")
    ] = "1h",
    quiet: Quiet = False,
) -> None:
    """Forget old versions (tags and the newest are kept) and delete unused data."""
    from embstore.store import parse_age

    try:
        ages = {"older_than": parse_age(older_than), "safety_margin": parse_age(safety_margin)}
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    _say(quiet, embstore.gc(store, **ages).summary())


@_command
def upgrade(
    old: Annotated[Path, typer.Argument(metavar="OLD", help="A schema-1 store (.zarr folder).")],
    new: Annotated[str, typer.Argument(metavar="NEW", help="The new store (must not exist).")],
    quiet: Quiet = False,
) -> None:
    """Convert a schema-1 store into a new store, with every variable and its provenance."""
    with _progress(quiet, "upgrade") as progress:
        report = embstore.upgrade(old, new, progress=progress)
    _say(quiet, report.summary())
