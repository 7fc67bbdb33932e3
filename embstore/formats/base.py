"""What every format module shares: the :class:`Format` record, sources, batches and bad rows.

Every source yields :class:`SourceBatch` objects in sorted path order; a row that cannot be
read becomes a :class:`BadRow` naming the file and the problem, never an exception, so the
caller decides between failing the batch and skipping the row (``--skip-bad``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import xarray as xr

from .._progress import Progress
from ..keys import describe


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
    layout = getattr(vector, "layout", None)  # torch: sparse and other layouts are refused
    if layout is not None and str(layout) != "torch.strided":
        return f"a {str(layout).removeprefix('torch.')} tensor (only dense tensors are read)"
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


@dataclass(frozen=True)
class Format:
    """One on-disk format that embstore both reads (ingest) and writes (export).

    Attributes
    ----------
    name
        The name users pick (``format="npy-tree"``, ``--format npy-tree``).
    description
        A few words for help texts.
    can_open
        Cheap check (a stat, a few bytes) whether a path looks like this format.
    open
        Opens a path as a :class:`Source`; raises :class:`~embstore.errors.BadInputError`.
    check_keys
        Why the given row paths cannot be written in this format (``None`` when they can);
        called on every row before anything is written.
    write
        ``write(ds, variable, tmp, progress)`` writes the rows of ``ds`` to the new path
        ``tmp`` (a file or a folder), which the caller moves into place.
    """

    name: str
    description: str
    can_open: Callable[[Path], bool]
    open: Callable[[Path], Source]
    check_keys: Callable[[Sequence[Any]], str | None]
    write: Callable[[xr.Dataset, str, Path, Progress | None], None]


def duplicate_key(keys: Sequence[Any]) -> str | None:
    """The problem if two rows share a path (they would become one entry of a dict or file)."""
    seen: set[Any] = set()
    for key in keys:
        if key in seen:
            return f"two rows have the path {describe(key)}"
        seen.add(key)
    return None


def unicode_key(keys: Sequence[Any], *, nul: bool = True) -> str | None:
    """The problem if a path is not a str that encodes as UTF-8 (and, unless ``nul``, holds NUL)."""
    for key in keys:
        if not isinstance(key, str):
            return f"path {describe(key)} is a {type(key).__name__}, not a string"
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            return f"path {describe(key)} is not valid UTF-8"
        if not nul and "\0" in key:
            return f"path {describe(key)} holds a NUL character"
    return None


def blocks(ds: xr.Dataset, variable: str) -> Iterator[tuple[list[Any], np.ndarray]]:
    """(paths, vectors) one on-disk chunk of rows at a time: memory stays at one chunk."""
    data = ds[variable]
    step = data.chunks[0][0] if data.chunks else max(ds.sizes["sample"], 1)
    for start in range(0, ds.sizes["sample"], step):
        block = ds.isel(sample=slice(start, start + step))
        yield block["path"].values.tolist(), np.asarray(block[variable].values)
