"""Trees of one-vector `.npy` files: `<root>/<category>/<subject>_<age>_month_level_avg.npy`."""

from __future__ import annotations

import io
import os
import posixpath
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import xarray as xr

from .._fs import walk_files
from ..errors import BadInputError, first_line
from ..keys import MAX_COMPONENT_BYTES, describe
from .base import BadRow, Format, Progress, SourceBatch, blocks, check_vector

_MAGIC = b"\x93NUMPY"


def list_npy_files(root: Path) -> list[str]:
    """Relative POSIX paths of every ``.npy`` file under ``root``, sorted."""
    return walk_files(root, lambda path: path.endswith(".npy"))


class NpyReader:
    """Reads one-vector ``.npy`` files fast: each distinct header is parsed once.

    A tree of 34,550 files shares one or two headers, so after the first file a read is one
    unbuffered ``read`` + a dictionary lookup + ``np.frombuffer``. Pickles are never loaded.
    """

    def __init__(self) -> None:
        self._headers: dict[bytes, tuple[np.dtype, tuple[int, ...], int] | str] = {}
        self._last_header = b""

    def read(self, file: str) -> np.ndarray | str:
        """Return the array in ``file``, or a string saying what is wrong with it."""
        try:
            with open(file, "rb", buffering=0) as f:
                data = f.readall()
        except OSError as exc:
            return f"cannot read: {exc.strerror or exc}"
        if data[:6] != _MAGIC or len(data) < 10:
            return "not a .npy file (bad magic bytes)" if data else "empty file"
        size_bytes = 2 if data[6] == 1 else 4
        offset = 8 + size_bytes + int.from_bytes(data[8 : 8 + size_bytes], "little")
        header = self._last_header = data[:offset]
        parsed = self._headers.get(header)
        if parsed is None:
            parsed = self._headers[header] = _parse_header(header)
        if isinstance(parsed, str):
            return parsed
        dtype, shape, nbytes = parsed
        if len(data) - offset != nbytes:
            return (
                f"truncated: header promises {nbytes} bytes of data, file has {len(data) - offset}"
            )
        return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)

    def read_into(self, files: list[str], rows: np.ndarray) -> tuple[list[int], dict[int, str]]:
        """Read ``files`` into ``rows`` (one per file, in order); return the rows filled.

        A file whose header is the one the first good file had is read with one ``readv``
        straight into its row (header bytes, row, one byte more to catch a longer file); any
        other file takes :meth:`read`'s checked path. Returns the indices of the files read
        and, per other index, what is wrong with that file.
        """
        filled: list[int] = []
        problems: dict[int, str] = {}
        row_bytes = rows.shape[1] * rows.itemsize
        flat = rows.reshape(-1).view(np.uint8).data
        known, scratch, spare = b"", bytearray(0), bytearray(1)
        expected = -1
        for i, file in enumerate(files):
            if known:
                try:
                    fd = os.open(file, os.O_RDONLY)
                    try:
                        got = os.readv(
                            fd, [scratch, flat[i * row_bytes : (i + 1) * row_bytes], spare]
                        )
                    finally:
                        os.close(fd)
                    if got == expected and scratch == known:
                        filled.append(i)
                        continue
                except OSError:
                    pass  # read() below says what is wrong
            array = self.read(file)
            if isinstance(array, str):
                problems[i] = array
                continue
            problem = check_vector(array, rows.shape[1])
            if problem is not None:
                problems[i] = problem
                continue
            rows[i] = array
            filled.append(i)
            if not known and array.dtype == rows.dtype and array.dtype.isnative:
                known = self._last_header
                scratch, expected = bytearray(len(known)), len(known) + row_bytes
        return filled, problems


def _parse_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], int] | str:
    stream = io.BytesIO(header)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    except Exception as exc:  # noqa: BLE001 - any header numpy cannot parse is bad input
        return f"unreadable .npy header ({first_line(exc)})"
    if dtype.hasobject:
        return "holds Python objects (pickles are never loaded)"
    if fortran and len(shape) > 1:
        return f"expected a 1-D vector, got shape {shape}"
    return dtype, tuple(shape), int(np.prod(shape)) * dtype.itemsize


class NpyTreeSource:
    """Every ``.npy`` file under a folder, one vector per file, keyed by relative path."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.name = str(self.root)
        self.files = list_npy_files(self.root)

    def __len__(self) -> int:
        return len(self.files)

    def locate(self, path: str) -> str:
        return os.path.join(self.root, path)

    def batches(
        self, *, batch_rows: int, feature_size: int | None, skip: Callable[[str], bool]
    ) -> Iterator[SourceBatch]:
        reader = NpyReader()
        root = str(self.root)
        for start in range(0, len(self.files), batch_rows):
            chunk = self.files[start : start + batch_rows]
            kept = [rel for rel in chunk if not skip(rel)]
            files = [os.path.join(root, rel) for rel in kept]
            if feature_size is None:  # the first good vector sets the size
                feature_size = next(
                    (a.shape[0] for a in map(reader.read, files) if _is_vector(a)), None
                )
            rows = np.empty((len(files), feature_size or 0), dtype=np.float32)
            filled, problems = reader.read_into(files, rows) if feature_size else ([], {})
            if not feature_size:  # no good vector: report each file's problem
                problems = {i: _problem(reader.read(f)) for i, f in enumerate(files)}
            bad = [BadRow(files[i], problems[i]) for i in sorted(problems)]
            vectors = rows if len(filled) == len(files) else rows[filled]
            yield SourceBatch(
                [kept[i] for i in filled], vectors, bad=bad, skipped=len(chunk) - len(kept)
            )


def _is_vector(array: np.ndarray | str) -> TypeGuard[np.ndarray]:
    return not isinstance(array, str) and check_vector(array, None) is None


def _problem(array: np.ndarray | str) -> str:
    return array if isinstance(array, str) else str(check_vector(array, None))


def can_open(path: Path) -> bool:
    """Any folder that is not a Zarr store (checked first) is read as a tree."""
    return path.is_dir()


def open_tree(path: Path) -> NpyTreeSource:
    if not path.is_dir():
        raise BadInputError(str(path), "not a folder of .npy files")
    return NpyTreeSource(path)


def target_of(key: str) -> str:
    """A row's file: its path (``.npy`` appended if needed), so a tree exports file for file."""
    return posixpath.normpath(key if key.endswith(".npy") else key + ".npy")


def check_keys(keys: Sequence[Any]) -> str | None:
    """Why ``keys`` cannot each become one file inside the output folder, if they cannot:
    outside it, a name no file can have, two rows on one file, a file that is also a folder."""
    files: dict[str, Any] = {}
    for key in keys:
        if not isinstance(key, str):
            return f"path {describe(key)} is a {type(key).__name__}, not a string"
        rel = target_of(key)
        if rel.startswith("/") or rel == ".." or rel.startswith("../"):
            return f"path {describe(key)} would be written outside the output folder"
        if "\0" in rel:
            return f"path {describe(key)} holds a NUL character"
        if any(len(os.fsencode(p)) > MAX_COMPONENT_BYTES for p in rel.split("/")):
            return f"path {describe(key)} has a component over {MAX_COMPONENT_BYTES} bytes"
        if rel in files:
            return (
                f"paths {describe(files[rel])} and {describe(key)} would both be written to "
                f"{describe(rel)}"
            )
        files[rel] = key
    for rel, key in files.items():
        parts = rel.split("/")
        for n in range(1, len(parts)):
            folder = "/".join(parts[:n])
            if folder in files:
                return (
                    f"path {describe(files[folder])} would be a file and a folder "
                    f"(of {describe(key)})"
                )
    return None


def write_tree(ds: xr.Dataset, variable: str, tmp: Path, progress: Progress | None) -> None:
    """One ``.npy`` file per row under the new folder ``tmp`` (keys checked by check_keys)."""
    total, done = ds.sizes["sample"], 0
    tmp.mkdir()
    root = os.path.realpath(tmp)
    made: set[str] = {root}
    for paths, vectors in blocks(ds, variable):
        for key, vector in zip(paths, vectors, strict=True):
            target = os.path.join(root, target_of(key))
            parent = os.path.dirname(target)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                if os.path.commonpath([root, os.path.realpath(parent)]) != root:
                    raise BadInputError(str(key), "would be written outside the output folder")
                made.add(parent)
            with open(target, "xb") as f:  # never two rows in one file
                np.save(f, vector)
        done += len(paths)
        if progress:
            progress(done, total)


FORMAT = Format(
    name="npy-tree",
    description="a folder of one-vector .npy files at the rows' relative paths",
    can_open=can_open,
    open=open_tree,
    check_keys=check_keys,
    write=write_tree,
)
