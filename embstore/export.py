"""Export a store variable as a ``.npy`` tree, a ``.pt`` dict or an HDF5 file.

Every export is written next to its target under a temporary name and renamed into place at
the end, so an interrupted export never leaves a half-written output.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import EmbstoreError
from .sources.hdf5 import VARIABLE_ATTR
from .store import ROOT_ATTR, SAMPLE, open_store
from .views import provenance

log = logging.getLogger(__name__)

FORMATS = ("npy-tree", "pt", "hdf5")


@dataclass
class ExportReport:
    """What :func:`export` wrote."""

    out: str
    format: str
    variable: str
    rows: int
    rows_not_covered: int = 0

    def summary(self) -> str:
        text = f"wrote {self.rows} rows of {self.variable!r} to {self.out} ({self.format})"
        if self.rows_not_covered:
            text += (
                f"; {self.rows_not_covered} newer rows are not covered by {self.variable!r}"
                " and were left out"
            )
        return text


def covered_rows(ds: xr.Dataset, variable: str) -> int:
    """Rows a variable holds values for: all of them, or fewer for a derived variable that was
    computed before later appends (those rows are NaN)."""
    meta = provenance(ds[variable])
    rows = int(ds.sizes[SAMPLE])
    return rows if "rows" not in meta else min(rows, int(meta["rows"]))


def export(
    store: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    format: str,  # noqa: A002 - mirrors the CLI's --format
    variable: str = "embedding",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ExportReport:
    """Write ``variable`` of ``store`` to ``out``.

    ``npy-tree`` writes one file per row at the row's exact relative path (``.npy`` appended
    when the path has another suffix), so exporting ``normalized`` of a store ingested from a
    ``.npy`` tree reproduces that tree file for file. ``pt`` writes ``{path: tensor}``;
    ``hdf5`` writes a netCDF4/HDF5 file that ``xarray.open_dataset`` opens and ``embstore
    ingest`` reads back.
    """
    if format not in FORMATS:
        raise EmbstoreError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    ds = open_store(store)
    if variable not in ds.data_vars or ds[variable].dims != (SAMPLE, "feature"):
        choices = [str(n) for n, v in ds.data_vars.items() if v.dims == (SAMPLE, "feature")]
        raise EmbstoreError(
            f"{store}: no (sample, feature) variable {variable!r} (have: {', '.join(choices)})"
        )
    out = Path(out)
    if out.exists() and not overwrite:
        raise EmbstoreError(f"{out}: exists (pass overwrite=True / --overwrite)")
    rows, total = covered_rows(ds, variable), int(ds.sizes[SAMPLE])
    if rows < total:
        log.warning("%s covers %d of %d rows; exporting those", variable, rows, total)
    ds = ds.isel({SAMPLE: slice(0, rows)})
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.partial")
    try:
        writer = {"npy-tree": _write_npy_tree, "pt": _write_pt, "hdf5": _write_hdf5}[format]
        writer(ds, variable, tmp, progress)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    return ExportReport(str(out), format, variable, rows, total - rows)


def _blocks(ds: xr.Dataset, variable: str) -> Iterator[tuple[list[str], np.ndarray]]:
    """(paths, vectors) one on-disk chunk of rows at a time: memory stays at one chunk."""
    data = ds[variable]
    step = data.chunks[0][0] if data.chunks else ds.sizes[SAMPLE]
    for start in range(0, ds.sizes[SAMPLE], step):
        block = ds.isel({SAMPLE: slice(start, start + step)})
        yield block["path"].values.tolist(), np.asarray(block[variable].values)


def _write_npy_tree(
    ds: xr.Dataset, variable: str, tmp: Path, progress: Callable[[int, int], None] | None
) -> None:
    total, done = ds.sizes[SAMPLE], 0
    made: set[Path] = set()
    for paths, vectors in _blocks(ds, variable):
        for rel, vector in zip(paths, vectors, strict=True):
            target = tmp / (rel if rel.endswith(".npy") else rel + ".npy")
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            np.save(target, vector)
        done += len(paths)
        if progress:
            progress(done, total)


def _write_pt(
    ds: xr.Dataset, variable: str, tmp: Path, progress: Callable[[int, int], None] | None
) -> None:
    import torch

    data: dict[str, torch.Tensor] = {}
    total = ds.sizes[SAMPLE]
    for paths, vectors in _blocks(ds, variable):
        block = torch.from_numpy(np.ascontiguousarray(vectors))
        data.update(zip(paths, block.unbind(0), strict=True))
        if progress:
            progress(len(data), total)
    # one storage per row, like the extraction scripts' files (a view would drag its block along)
    torch.save({k: v.clone() for k, v in data.items()}, tmp)


def _write_hdf5(
    ds: xr.Dataset, variable: str, tmp: Path, progress: Callable[[int, int], None] | None
) -> None:
    labels = [str(n) for n, c in ds.coords.items() if c.dims == (SAMPLE,)]
    # labels are small: load them, so netCDF gets concrete strings (the matrix streams by chunk)
    out = ds[[variable]].reset_coords(drop=True).assign_coords({n: ds[n].compute() for n in labels})
    out.attrs = {VARIABLE_ATTR: variable, ROOT_ATTR: json.dumps(provenance(ds))}
    for name in out.variables:
        out[name].attrs = {
            k: json.dumps(v) if isinstance(v, dict | list) else v
            for k, v in out[name].attrs.items()
        }
    out.to_netcdf(tmp, engine="h5netcdf")
    if progress:
        progress(ds.sizes[SAMPLE], ds.sizes[SAMPLE])
