"""The formats embstore reads and writes: one module each, and ``FORMATS``, the one list of them.

Each module holds a :class:`~embstore.formats.base.Format`: a cheap ``can_open`` check, a
reader (for ``ingest``) and a writer (for ``export``). ``ingest`` picks the reader of a
source with :func:`open_source`; ``export`` and the command line take their choices from
``FORMATS``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..errors import BadInputError, EmbstoreError
from . import hdf5, npy_tree, pt, zarr
from .base import BadRow, Format, Source, SourceBatch

#: Every format by name, in detection order (a Zarr folder before any folder as a .npy tree).
FORMATS: Mapping[str, Format] = {
    f.name: f for f in (zarr.FORMAT, npy_tree.FORMAT, hdf5.FORMAT, pt.FORMAT)
}


def get_format(name: str) -> Format:
    """The format called ``name``; raise :class:`EmbstoreError` naming the choices."""
    try:
        return FORMATS[name]
    except KeyError:
        raise EmbstoreError(
            f"unknown format {name!r}; choose one of {', '.join(FORMATS)}"
        ) from None


def detect(path: str | os.PathLike[str]) -> Format:
    """The format of ``path``, by what it is (a folder, its first bytes, its suffix)."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        raise BadInputError(str(path), "does not exist")
    try:
        for fmt in FORMATS.values():
            if fmt.can_open(path):
                return fmt
    except OSError as exc:
        raise BadInputError(str(path), f"cannot open ({exc.strerror or exc})") from exc
    kinds = "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values())
    raise BadInputError(str(path), f"unknown source type (expected {kinds})")


def open_source(path: str | os.PathLike[str]) -> Source:
    """Open ``path`` with the reader of its format."""
    return detect(path).open(Path(path))


__all__ = ["FORMATS", "BadRow", "Format", "Source", "SourceBatch", "detect", "get_format"]
