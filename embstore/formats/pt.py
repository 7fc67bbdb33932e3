"""``.pt`` dict files ``{relative_path: tensor[D]}``, as the V-JEPA2 extraction scripts write.

Read by :mod:`embstore.formats.torchzip` (a restricted unpickler allowing exactly what
``torch.load(weights_only=True)`` allows, with ``torch.load`` itself as the fallback): a file that
needs code to unpickle is refused, never executed. Write: ``torch.save`` of
``{path: tensor}``, one storage per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import xarray as xr

from .base import BadRow, Format, Progress, SourceBatch, blocks, duplicate_key, stack
from .torchzip import VectorDict, read_vector_dict


class PtDictSource:
    """One ``.pt`` dict file; rows in sorted key order."""

    def __init__(self, file: Path) -> None:
        self.file = Path(file)
        self.name = str(self.file)
        self._data: VectorDict | None = None

    @property
    def data(self) -> VectorDict:
        if self._data is None:
            self._data = read_vector_dict(self.file)
        return self._data

    def __len__(self) -> int:
        return len(self.data)

    def locate(self, path: str) -> str:
        return f"{self.file}[{path!r}]"

    def batches(
        self, *, batch_rows: int, feature_size: int | None, skip: Callable[[str], bool]
    ) -> Iterator[SourceBatch]:
        data = self.data
        bad_keys = [BadRow(self.locate(k), "key is not a string") for k in data.other_keys]
        keys, feature_size = data.keys, feature_size or data.feature_size()
        problems = data.problems(feature_size)
        for start in range(0, len(keys), batch_rows):
            stop = min(start + batch_rows, len(keys))
            kept = [i for i in range(start, stop) if not skip(keys[i])]
            bad = [BadRow(self.locate(keys[i]), problems[i]) for i in kept if i in problems]
            good = [i for i in kept if i not in problems] if bad else kept
            if good:
                assert feature_size is not None, "rows without problems have a size"
                vectors = data.rows(good, feature_size)
            else:
                vectors = stack([], feature_size)
            paths = [keys[i] for i in good]
            yield SourceBatch(
                paths,
                vectors,
                bad=(bad_keys if start == 0 else []) + bad,
                skipped=stop - start - len(kept),
            )
        if not keys and bad_keys:
            yield SourceBatch([], stack([], feature_size), bad=bad_keys)
        self._data = None  # one dict in memory at a time, however many files are ingested


_PICKLE_PROTOCOL_2_PLUS = 0x80  # first byte of a legacy (non-zip) torch.save file


def can_open(path: Path) -> bool:
    """A ``.pt``/``.pth`` file, or any file starting like ``torch.save`` output."""
    if not path.is_file():
        return False
    if path.suffix.lower() in (".pt", ".pth"):
        return True
    with path.open("rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == bytes([_PICKLE_PROTOCOL_2_PLUS])


def write_pt(ds: xr.Dataset, variable: str, tmp: Path, progress: Progress | None) -> None:
    """``torch.save`` a ``{path: tensor}`` dict to ``tmp``."""
    import torch

    data: dict[str, torch.Tensor] = {}
    total = ds.sizes["sample"]
    for paths, vectors in blocks(ds, variable):
        block = torch.from_numpy(np.ascontiguousarray(vectors))
        data.update(zip(paths, block.unbind(0), strict=True))
        if progress:
            progress(len(data), total)
    # one storage per row, like the extraction scripts' files (a view would drag its block along)
    # through a Python file: torch's own file writer turns ENOSPC into a RuntimeError
    with open(tmp, "xb") as f:
        torch.save({k: v.clone() for k, v in data.items()}, f)


FORMAT = Format(
    name="pt",
    description="a torch.save dict {path: tensor}",
    can_open=can_open,
    open=PtDictSource,
    check_keys=duplicate_key,
    write=write_pt,
)
