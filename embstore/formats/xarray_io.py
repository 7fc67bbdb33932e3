"""What the xarray-backed formats (HDF5/netCDF and Zarr) share: reading rows and labels from
an ``xarray.Dataset``, and turning a store's variable into a plain dataset to write."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import BadInputError, first_line
from ..labels import INTEGER_LABELS
from ..store.layout import ROOT_ATTR
from ..store.views import provenance
from .base import BadRow, SourceBatch, check_vector

#: Root attribute naming the exported variable (``embedding``, ``normalized``...).
VARIABLE_ATTR = "embstore_variable"
#: Coordinates a store computes itself; not read back as labels.
_INTERNAL = ("path", "nonfinite")


class DatasetSource:
    """The rows of a dataset with a ``(sample, feature)`` variable and ``path`` labels; every
    other 1-D ``sample`` variable is a label (``age_mo`` integers, the others strings).

    Parameters
    ----------
    file
        Where the dataset comes from (named in every error).
    opener
        Opens ``file`` as a lazy :class:`xarray.Dataset`; any exception it raises is reported
        as one line naming ``file`` (the input may be hostile or broken).
    kind
        What the file should be, for messages ("HDF5/netCDF", "Zarr").
    """

    def __init__(self, file: Path, opener: Callable[[Path], xr.Dataset], kind: str) -> None:
        self.file = Path(file)
        self.name = str(self.file)
        try:
            self._ds = opener(self.file)
        except BadInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a broken file makes the backend raise
            msg = f"not a readable {kind} dataset ({first_line(exc)})"
            raise BadInputError(self.name, msg) from exc
        self.variable = str(self._ds.attrs.get(VARIABLE_ATTR, "embedding"))
        data = self._ds.variables.get(self.variable)
        path = self._ds.variables.get("path")
        if data is None or path is None:
            msg = f"needs a {self.variable!r} variable and 'path' labels"
            raise BadInputError(self.name, msg)
        if data.dims != ("sample", "feature") or path.dims != ("sample",):
            msg = (
                f"expected {self.variable!r} on (sample, feature) and 'path' on (sample,), got "
                f"{data.dims} and {path.dims}"
            )
            raise BadInputError(self.name, msg)
        # labels: every other 1-D sample variable (coordinates, or data variables as other
        # tools write them)
        self.label_names = [
            str(n)
            for n, c in self._ds.variables.items()
            if c.dims == ("sample",) and n not in _INTERNAL
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
            try:
                yield self._batch(slice(start, start + batch_rows), skip)
            except BadInputError:
                raise
            except Exception as exc:  # noqa: BLE001 - a corrupt chunk of a hostile file
                raise BadInputError(self.name, f"unreadable rows ({first_line(exc)})") from exc

    def _batch(self, rows: slice, skip: Callable[[str], bool]) -> SourceBatch:
        paths = _strings(self.name, "path", np.asarray(self._ds["path"][rows].values))
        keep = np.array([not skip(p) for p in paths], dtype=bool)
        vectors = np.asarray(self._ds[self.variable][rows].values, dtype=np.float32)[keep]
        labels = {
            name: _label(self.name, name, np.asarray(self._ds[name][rows].values)[keep])
            for name in self.label_names
        }
        return SourceBatch(
            [p for p, k in zip(paths, keep, strict=True) if k],
            vectors,
            labels,
            skipped=int((~keep).sum()),
        )


def _strings(file: str, name: str, values: np.ndarray) -> list[str]:
    """``values`` as Python strings (bytes decoded as UTF-8); refuse anything else."""
    if values.dtype.kind == "S" or (
        values.dtype.kind == "O" and values.size and isinstance(values.flat[0], bytes)
    ):
        try:
            return [v.decode("utf-8") for v in values.tolist()]
        except (UnicodeDecodeError, AttributeError) as exc:
            raise BadInputError(file, f"{name!r} holds bytes that are not UTF-8 text") from exc
    if values.dtype.kind not in "OUT":
        raise BadInputError(file, f"{name!r} holds {values.dtype} values, not strings")
    out = values.astype(object).tolist()
    for v in out:
        if not isinstance(v, str):
            raise BadInputError(file, f"{name!r} holds a {type(v).__name__}, not a string")
    return out


def _label(file: str, name: str, values: np.ndarray) -> list[Any]:
    """Label values as the store keeps them: ``age_mo`` integers, every other label strings."""
    if name in INTEGER_LABELS:
        if values.dtype.kind not in "iu":
            raise BadInputError(file, f"label {name!r} holds {values.dtype} values, not integers")
        return values.astype(np.int64).tolist()
    return _strings(file, f"label {name}", values)


def plain_dataset(ds: xr.Dataset, variable: str) -> xr.Dataset:
    """``variable`` with every sample label as a coordinate, attributes as plain JSON text.

    What the HDF5 and Zarr exports write: a file any xarray opens without embstore.
    """
    labels = [str(n) for n, c in ds.coords.items() if c.dims == ("sample",)]
    # labels are small: load them, so the file gets concrete strings (the matrix streams by chunk)
    out = ds[[variable]].reset_coords(drop=True).assign_coords({n: ds[n].compute() for n in labels})
    out.attrs = {VARIABLE_ATTR: variable, ROOT_ATTR: json.dumps(provenance(ds))}
    for name in out.variables:
        out[name].attrs = {
            k: json.dumps(v) if isinstance(v, dict | list) else v
            for k, v in out[name].attrs.items()
        }
        out[name].encoding = {}
    return out
