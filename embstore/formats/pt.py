"""``.pt`` dict files ``{relative_path: tensor[D]}``, as the V-JEPA2 extraction scripts write.

Read with ``torch.load(weights_only=True)`` only: a file that needs code to unpickle is
refused, never executed. Write: ``torch.save`` of ``{path: tensor}``, one storage per row.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import BadInputError, first_line
from .base import (
    BadRow,
    Format,
    Progress,
    SourceBatch,
    blocks,
    check_vector,
    duplicate_key,
    stack,
)


def load_pt_dict(file: Path) -> dict[str, Any]:
    """Load a ``{path: tensor}`` dict with ``torch.load(weights_only=True)``.

    A file that needs arbitrary code to unpickle is refused, never executed.
    """
    import torch

    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = first_line(exc)
        msg = (
            f"refused: loading it would run arbitrary code (torch.load weights_only=True: {first})"
        )
        raise BadInputError(str(file), msg) from exc
    except Exception as exc:  # noqa: BLE001 - whatever a hostile file makes torch raise
        first = first_line(exc)
        raise BadInputError(str(file), f"unreadable .pt file ({first})") from exc
    if not isinstance(obj, dict):
        raise BadInputError(
            str(file), f"expected a dict {{path: tensor}}, got {type(obj).__name__}"
        )
    return obj


class PtDictSource:
    """One ``.pt`` dict file; rows in sorted key order."""

    def __init__(self, file: Path) -> None:
        self.file = Path(file)
        self.name = str(self.file)
        self._data: dict[str, Any] | None = None

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = load_pt_dict(self.file)
        return self._data

    def __len__(self) -> int:
        return len(self.data)

    def locate(self, path: str) -> str:
        return f"{self.file}[{path!r}]"

    def batches(
        self, *, batch_rows: int, feature_size: int | None, skip: Callable[[str], bool]
    ) -> Iterator[SourceBatch]:
        import torch

        data = self.data
        bad_keys = [
            BadRow(self.locate(k), "key is not a string") for k in data if not isinstance(k, str)
        ]
        keys = sorted(k for k in data if isinstance(k, str))
        for start in range(0, max(len(keys), 1), batch_rows):  # bad keys alone still report
            paths, tensors, bad, skipped = [], [], bad_keys if start == 0 else [], 0
            chunk = [k for k in keys[start : start + batch_rows] if not skip(k)]
            skipped = min(batch_rows, len(keys) - start) - len(chunk)
            values = [data[k] for k in chunk]
            # one signature for the whole batch is the common case: check it once
            kinds = {
                (type(v), v.dtype, v.shape, v.layout) if isinstance(v, torch.Tensor) else None
                for v in values
            }
            if (
                len(kinds) == 1
                and None not in kinds
                and check_vector(values[0], feature_size) is None
            ):
                paths, tensors = chunk, values
            else:
                for key, value in zip(chunk, values, strict=True):
                    if isinstance(value, torch.Tensor):
                        problem = check_vector(value, feature_size)
                    else:
                        problem = f"value is a {type(value).__name__}, not a tensor"
                    if problem is not None:
                        bad.append(BadRow(self.locate(key), problem))
                        continue
                    feature_size = feature_size or int(value.shape[0])
                    paths.append(key)
                    tensors.append(value)
            if tensors:
                feature_size = feature_size or int(tensors[0].shape[0])
                vectors = torch.stack(tensors).detach().to(torch.float32).resolve_neg().numpy()
            else:
                vectors = stack([], feature_size)
            yield SourceBatch(paths, vectors, bad=bad, skipped=skipped)
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
