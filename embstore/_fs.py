"""File-system helpers, one of each: walking input trees, hashing files, replacing outputs whole.

Input trees are walked in sorted relative POSIX paths (the keys rows are stored under); an
output is written under a temporary sibling name and moved into place only once complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import BadInputError


def walk_files(root: str | os.PathLike[str], keep: Callable[[str], bool]) -> list[str]:
    """Relative POSIX paths of the files under ``root`` for which ``keep(full_path)``, sorted.

    Sorted order keeps a subject's rows together in the store (``p10036337/...``), which makes
    selecting one subject read only a chunk or two. A folder that cannot be listed raises
    :class:`BadInputError` naming it: a tree is never ingested with rows silently missing.
    """

    def fail(exc: OSError) -> None:
        raise BadInputError(str(exc.filename), f"cannot list folder ({exc.strerror or exc})")

    found = []
    for dirpath, dirnames, filenames in os.walk(Path(root), onerror=fail):
        dirnames.sort()
        folder = os.path.relpath(dirpath, root).replace(os.sep, "/")  # once per folder
        prefix = "" if folder == "." else folder + "/"
        found += [prefix + name for name in filenames if keep(os.path.join(dirpath, name))]
    return sorted(found)


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of the file at ``path`` (read in blocks by :func:`hashlib.file_digest`)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def replacing(target: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path to write; move it to ``target`` once the block succeeds.

    The caller creates a file or a folder at the yielded path. On success it replaces
    ``target`` (only with ``overwrite``: an existing target is otherwise left alone and
    :class:`FileExistsError` raised); the old output stays in place until the new one is
    complete, and is removed after the swap. On failure the temporary path is removed and
    ``target`` is untouched.
    """
    target = Path(target)
    token = uuid.uuid4().hex[:12]
    tmp = target.with_name(f".{target.name}.{token}.partial")
    old = target.with_name(f".{target.name}.{token}.old")
    try:
        yield tmp
        if not (tmp.exists() or tmp.is_symlink()):
            return
        if target.exists() or target.is_symlink():
            if not overwrite:
                raise FileExistsError(17, "exists", str(target))
            os.rename(target, old)  # the old output stays whole until the new one is in place
        try:
            os.rename(tmp, target)
        except BaseException:
            if old.exists() or old.is_symlink():
                os.rename(old, target)
            raise
        _remove(old)
    finally:
        _remove(tmp)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``target`` whole: readers see the old file or the new one, never half."""
    with replacing(target, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
