"""HDF5 files written by ``embstore export --format hdf5`` (the round trip back in)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import BadInputError
from . import BadRow, SourceBatch, check_vector

#: Root attribute naming the exported variable (``embedding``, ``normalized``...).
VARIABLE_ATTR = "embstore_variable"


class Hdf5Source:
    """The vectors and labels of one embstore HDF5 export."""

    def __init__(self, file: Path) -> None:
        self.file = Path(file)
        self.name = str(self.file)
        try:
            self._ds = xr.open_dataset(self.file, engine="h5netcdf", chunks={})
        except (OSError, ValueError) as exc:
            raise BadInputError(self.name, f"not a readable HDF5/netCDF file ({exc})") from exc
        self.variable = str(self._ds.attrs.get(VARIABLE_ATTR, "embedding"))
        if self.variable not in self._ds or "path" not in self._ds.coords:
            msg = f"not an embstore export (needs a {self.variable!r} variable and 'path' labels)"
            raise BadInputError(self.name, msg)
        self.label_names = [
            str(n)
            for n, c in self._ds.coords.items()
            if c.dims == ("sample",) and n not in ("path", "nonfinite")
        ]

    def __len__(self) -> int:
        return int(self._ds.sizes["sample"])

    def locate(self, path: str) -> str:
        return f"{self.file}[{path!r}]"

    def batches(
        self, *, batch_rows: int, feature_size: int | None, skip: Callable[[str], bool]
    ) -> Iterator[SourceBatch]:
        data = self._ds[self.variable]
        problem = check_vector(np.empty(data.shape[1:], data.dtype), feature_size)
        if problem is not None:
            yield SourceBatch(
                [], np.empty((0, feature_size or 0), np.float32), bad=[BadRow(self.name, problem)]
            )
            return
        for start in range(0, len(self), batch_rows):
            rows = slice(start, start + batch_rows)
            paths = np.asarray(self._ds["path"][rows].values, dtype=object)
            keep = np.array([not skip(p) for p in paths], dtype=bool)
            vectors = np.asarray(data[rows].values, dtype=np.float32)[keep]
            labels: dict[str, list[Any]] = {}
            for name in self.label_names:
                values = np.asarray(self._ds[name][rows].values)[keep]
                labels[name] = values.astype(
                    object if values.dtype.kind in "OUST" else values.dtype
                ).tolist()
            yield SourceBatch(paths[keep].tolist(), vectors, labels, skipped=int((~keep).sum()))
