"""Readers that feed the store: ``.npy`` trees, ``.pt`` dicts and embstore HDF5 exports.

Every source yields :class:`SourceBatch` objects in sorted path order; a row that cannot be
read becomes a :class:`BadRow` naming the file and the problem, never an exception, so the
caller decides between failing the batch and skipping the row (``--skip-bad``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import BadInputError


@dataclass(frozen=True)
class BadRow:
    """A row (or a whole file) that could not be ingested, and why."""

    source: str
    problem: str

    def __str__(self) -> str:
        return f"{self.source}: {self.problem}"


@dataclass
class SourceBatch:
    """Good rows read from a source, plus the rows that were bad."""

    paths: list[str]
    vectors: np.ndarray
    labels: dict[str, list[Any]] = field(default_factory=dict)
    bad: list[BadRow] = field(default_factory=list)
    skipped: int = 0  # rows not read because the store already holds their path


class Source(Protocol):
    name: str

    def __len__(self) -> int: ...

    def locate(self, path: str) -> str:
        """Where the row ``path`` comes from, for error messages (a file, or file[key])."""
        ...

    def batches(
        self, *, batch_rows: int, feature_size: int | None, skip: Callable[[str], bool]
    ) -> Iterator[SourceBatch]: ...


def check_vector(vector: Any, feature_size: int | None) -> str | None:
    """The problem with ``vector`` (a numpy array or a torch tensor) as an embedding, if any."""
    is_float = getattr(vector.dtype, "is_floating_point", None)  # torch dtypes
    if not (is_float if is_float is not None else np.dtype(vector.dtype).kind == "f"):
        return f"dtype {vector.dtype} is not a floating-point type"
    if vector.ndim != 1:
        return f"expected a 1-D vector, got shape {tuple(vector.shape)}"
    if feature_size is not None and vector.shape[0] != feature_size:
        return f"vector has {vector.shape[0]} values, the store holds {feature_size}-d vectors"
    if vector.shape[0] == 0:
        return "empty vector"
    return None


def stack(vectors: list[np.ndarray], feature_size: int | None) -> np.ndarray:
    if not vectors:
        return np.empty((0, feature_size or 0), dtype=np.float32)
    return np.stack(vectors).astype(np.float32, copy=False)


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def open_source(path: str | os.PathLike[str]) -> Source:
    """Pick the reader for ``path`` by what it is: a folder, a ``.pt`` file or an HDF5 file."""
    from .hdf5 import Hdf5Source
    from .npy import NpyTreeSource
    from .pt import PtDictSource

    path = Path(path)
    if not path.exists():
        raise BadInputError(str(path), "does not exist")
    if path.is_dir():
        return NpyTreeSource(path)
    suffix = path.suffix.lower()
    with path.open("rb") as f:
        head = f.read(8)
    if suffix in (".h5", ".hdf5", ".nc") or head == _HDF5_SIGNATURE:
        return Hdf5Source(path)
    if suffix in (".pt", ".pth") or head.startswith(b"PK\x03\x04"):  # torch.save writes a zip
        return PtDictSource(path)
    msg = "unknown source type (expected a folder of .npy files, a .pt dict or an .h5 export)"
    raise BadInputError(str(path), msg)
