"""Walking input trees: sorted relative POSIX paths, the keys rows are stored under."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def walk_files(root: str | os.PathLike[str], keep: Callable[[str], bool]) -> list[str]:
    """Relative POSIX paths of the files under ``root`` for which ``keep(full_path)``, sorted.

    Sorted order keeps a subject's rows together in the store (``p10036337/...``), which makes
    selecting one subject read only a chunk or two.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(Path(root)):
        dirnames.sort()
        folder = os.path.relpath(dirpath, root).replace(os.sep, "/")  # once per folder
        prefix = "" if folder == "." else folder + "/"
        found += [prefix + name for name in filenames if keep(os.path.join(dirpath, name))]
    return sorted(found)
