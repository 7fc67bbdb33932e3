"""Trees of one-vector `.npy` files: `<root>/<category>/<subject>_<age>_month_level_avg.npy`."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..paths import walk_files
from . import BadRow, SourceBatch, check_vector, stack

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
        header = data[:offset]
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


def _parse_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], int] | str:
    stream = io.BytesIO(header)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    except (ValueError, SyntaxError) as exc:
        return f"unreadable .npy header ({exc})"
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
            paths, vectors, bad, skipped = [], [], [], 0
            for rel in self.files[start : start + batch_rows]:
                if skip(rel):
                    skipped += 1
                    continue
                file = os.path.join(root, rel)
                array = reader.read(file)
                problem = array if isinstance(array, str) else check_vector(array, feature_size)
                if problem is not None:
                    bad.append(BadRow(file, problem))
                    continue
                feature_size = feature_size or array.shape[0]
                paths.append(rel)
                vectors.append(array)
            yield SourceBatch(paths, stack(vectors, feature_size), bad=bad, skipped=skipped)
