"""HDF5 / netCDF4 files: what ``export(format="hdf5")`` writes, and the same shape from other tools.

Read: a ``(sample, feature)`` variable (named by the ``embstore_variable`` attribute, else
``embedding``) and a ``path`` coordinate; other 1-D sample coordinates become labels. Write:
a netCDF4/HDF5 file that ``xarray.open_dataset`` opens without embstore.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from ..errors import BadInputError, first_line
from .base import Format, Progress, duplicate_key, unicode_key
from .xarray_io import VARIABLE_ATTR, DatasetSource, plain_dataset

__all__ = ["FORMAT", "VARIABLE_ATTR"]

_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def can_open(path: Path) -> bool:
    """A file with the HDF5 signature, or an ``.h5``/``.hdf5``/``.nc`` file."""
    if not path.is_file():
        return False
    if path.suffix.lower() in (".h5", ".hdf5", ".nc"):
        return True
    with path.open("rb") as f:
        return f.read(8) == _SIGNATURE


def _open(path: Path) -> xr.Dataset:
    # When h5py fails inside h5netcdf.File(), the half-made File's finalizer prints an
    # "Exception ignored" traceback once the error is dropped; keep that one quiet.
    hook = sys.unraisablehook

    def quiet(unraisable: Any) -> None:
        if not getattr(unraisable.object, "__module__", "").startswith("h5netcdf"):
            hook(unraisable)

    sys.unraisablehook = quiet
    try:
        try:
            # phony_dims="sort": HDF5 datasets without dimension scales (files other tools
            # wrote) get netCDF-C's dimension names, and h5netcdf does not warn about them
            return xr.open_dataset(path, engine="h5netcdf", chunks={}, phony_dims="sort")
        except Exception as exc:  # noqa: BLE001 - whatever a broken file makes h5py raise
            problem = f"not a readable HDF5/netCDF dataset ({first_line(exc)})"
        gc.collect()
    finally:
        sys.unraisablehook = hook
    raise BadInputError(str(path), problem)


def open_hdf5(path: Path) -> DatasetSource:
    return DatasetSource(path, _open, "HDF5/netCDF")


def check_keys(keys: Sequence[Any]) -> str | None:
    """HDF5 strings are UTF-8 without NUL; one entry per row."""
    return unicode_key(keys, nul=False) or duplicate_key(keys)


def write_hdf5(ds: xr.Dataset, variable: str, tmp: Path, progress: Progress | None) -> None:
    # Built in memory, then written by Python: HDF5 crashes the process (SIGSEGV on close)
    # when the disk fills up under it, whereas a Python write raises ENOSPC.
    data = plain_dataset(ds, variable).to_netcdf(engine="h5netcdf")
    with open(tmp, "xb") as f:
        f.write(data)
    if progress:
        progress(ds.sizes["sample"], ds.sizes["sample"])


FORMAT = Format(
    name="hdf5",
    description="a netCDF4/HDF5 file (xarray.open_dataset opens it)",
    can_open=can_open,
    open=open_hdf5,
    check_keys=check_keys,
    write=write_hdf5,
)
