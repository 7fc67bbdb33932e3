"""The formats embstore reads and writes: one module each, and ``FORMATS``, the one list of them.

Each module holds a :class:`~embstore.formats.base.Format`: a cheap ``can_open`` check, a
reader (for ``ingest``) and a writer (for ``export``). ``ingest`` picks the reader of a
source with :func:`open_source`; ``export`` and the command line take their choices from
``FORMATS``.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError, EmbstoreError

if TYPE_CHECKING:
    from .base import BadRow, Format, Source, SourceBatch

#: Every format's name, in detection order (a Zarr folder before any folder as a .npy tree);
#: the module holding it is the name with ``_`` for ``-``. The command line reads these names
#: without importing any format module (so ``--help`` stays light).
NAMES: tuple[str, ...] = ("zarr", "npy-tree", "hdf5", "pt")


@functools.cache
def formats() -> Mapping[str, Format]:
    """Every format by name, in detection order (imports the format modules once)."""
    modules = (importlib.import_module(f".{n.replace('-', '_')}", __name__) for n in NAMES)
    return {m.FORMAT.name: m.FORMAT for m in modules}


def __getattr__(name: str) -> Any:
    """``FORMATS`` (every format by name, in detection order) and the shared records, loaded
    on first use."""
    if name == "FORMATS":
        value: Any = formats()
    elif name in ("BadRow", "Format", "Source", "SourceBatch"):
        value = getattr(importlib.import_module(".base", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def get_format(name: str) -> Format:
    """The format called ``name``; raise :class:`EmbstoreError` naming the choices."""
    try:
        return formats()[name]
    except KeyError:
        raise EmbstoreError(f"unknown format {name!r}; choose one of {', '.join(NAMES)}") from None


def detect(path: str | os.PathLike[str]) -> Format:
    """The format of ``path``, by what it is (a folder, its first bytes, its suffix)."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        raise BadInputError(str(path), "does not exist")
    try:
        for fmt in formats().values():
            if fmt.can_open(path):
                return fmt
    except OSError as exc:
        raise BadInputError(str(path), f"cannot open ({exc.strerror or exc})") from exc
    kinds = "; ".join(f"{f.name}: {f.description}" for f in formats().values())
    raise BadInputError(str(path), f"unknown source type (expected {kinds})")


def open_source(path: str | os.PathLike[str]) -> Source:
    """Open ``path`` with the reader of its format."""
    return detect(path).open(Path(path))


__all__ = ["FORMATS", "NAMES", "BadRow", "Format", "Source", "SourceBatch", "detect", "get_format"]
