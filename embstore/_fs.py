"""File-system helpers, one of each: walking input trees, hashing files, replacing outputs whole.

Input trees are walked in sorted relative POSIX paths (the keys rows are stored under); an
output is written under a temporary sibling name and moved into place only once complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import os
import shutil
import sys
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


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where
    the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if result != 0:
        errno = ctypes.get_errno()
        if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this file system cannot
            return False
        raise OSError(errno, os.strerror(errno), str(b))
    return True


def _clean_leftovers(target: Path) -> None:
    """Undo what a killed earlier replace left: the old output back in place if the new one
    never arrived, and the temporary siblings removed."""
    if not target.parent.is_dir():
        return
    leftovers = sorted(target.parent.glob(f".{glob.escape(target.name)}.*.old"))
    if leftovers and not (target.exists() or target.is_symlink()):
        os.rename(leftovers[-1], target)
        leftovers = leftovers[:-1]
    for path in [*leftovers, *target.parent.glob(f".{glob.escape(target.name)}.*.partial")]:
        _remove(path)


@contextlib.contextmanager
def replacing(target: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path to write; move it to ``target`` once the block succeeds.

    The caller creates a file or a folder at the yielded path. On success it replaces
    ``target`` (only with ``overwrite``: an existing target is otherwise left alone and
    :class:`FileExistsError` raised) in one atomic step: a file by one ``os.replace``, a
    folder by swapping the two paths (``renameat2`` on Linux), so ``target`` always holds the
    old output or the new one, also if the process is killed. The old output is removed
    after the swap; on failure the temporary path is removed and ``target`` is untouched.
    Leftovers of a killed earlier run are cleaned first.
    """
    target = Path(target)
    _clean_leftovers(target)
    token = uuid.uuid4().hex[:12]
    tmp = target.with_name(f".{target.name}.{token}.partial")
    old = target.with_name(f".{target.name}.{token}.old")
    try:
        yield tmp
        if not (tmp.exists() or tmp.is_symlink()):
            return
        exists = target.exists() or target.is_symlink()
        if exists and not overwrite:
            raise FileExistsError(17, "exists", str(target))
        if not exists or (tmp.is_file() and not target.is_dir()):
            os.replace(tmp, target)  # one atomic rename
        elif not _exchange(tmp, target):  # tmp now holds the old output, removed below
            os.rename(target, old)  # no atomic swap here: a window a later run repairs
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(old, target)
                raise
            _remove(old)
    finally:
        _remove(tmp)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``target`` whole: readers see the old file or the new one, never half."""
    with replacing(target, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
