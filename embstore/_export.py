"""Export a store variable in any format of :data:`embstore.formats.FORMATS`.

Every row key is checked by the format before anything is written (an output path outside
``out``, two rows on one file, a name the format cannot hold are refused in one line); the
export is written under a temporary sibling name and moved into place when complete, so an
interrupted export never leaves a half-written output and ``overwrite`` keeps the old one
until then.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr

from ._fs import replacing
from ._progress import Progress
from .errors import EmbstoreError
from .formats import FORMATS, get_format
from .store import SAMPLE, open_store, parse_location
from .store.location import StoreLike
from .store.repo import reads_store
from .store.variables import check_fresh
from .store.views import provenance, row_filter

log = logging.getLogger(__name__)


@dataclass
class ExportReport:
    """What :func:`export` wrote."""

    out: str
    format: str
    variable: str
    rows: int
    rows_not_covered: int = 0
    #: Why the variable was stale when exported with ``allow_stale`` ([] if it was fresh).
    stale: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"wrote {self.rows} rows of {self.variable!r} to {self.out} ({self.format})"
        if self.rows_not_covered:
            text += (
                f"; {self.rows_not_covered} newer rows are not covered by {self.variable!r}"
                " and were left out"
            )
        if self.stale:
            text += f"; exported although stale ({'; '.join(self.stale)})"
        return text


def covered_rows(ds: xr.Dataset, variable: str) -> int:
    """Rows a variable holds values for: all of them, or fewer for a derived variable that was
    computed before later appends (those rows are NaN)."""
    meta = provenance(ds[variable])
    rows = int(ds.sizes[SAMPLE])
    return rows if "rows" not in meta else min(rows, int(meta["rows"]))


@reads_store
def export(
    store: StoreLike,
    out: str | os.PathLike[str],
    *,
    format: str,  # noqa: A002 - mirrors the CLI's --format
    variable: str = "embedding",
    overwrite: bool = False,
    version: str | None = None,
    allow_stale: bool = False,
    progress: Progress | None = None,
    where: str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]] | None = None,
) -> ExportReport:
    """Write ``variable`` of ``store`` to ``out`` in ``format`` (a name in ``FORMATS``).

    ``npy-tree`` writes one file per row at the row's exact relative path (``.npy`` appended
    when the path has another suffix), so exporting ``normalized`` of a store ingested from a
    ``.npy`` tree reproduces that tree file for file. ``pt`` writes ``{path: tensor}``;
    ``hdf5`` and ``zarr`` write datasets that plain xarray opens and ``embstore ingest`` reads
    back. N rows give N files (entries) or an :class:`EmbstoreError` before anything is
    written; nothing is ever written outside ``out``.

    A stale derived variable (its inputs changed since it was computed: later rows, relabelled
    rows it excluded, ...) is refused with :class:`~embstore.errors.StaleVariableError` unless
    ``allow_stale``; then the rows it covers are written as they are.

    ``where`` exports a subset: a query over the labels (``"category in ['ball', 'cup'] and
    age_mo >= 12"``), label criteria as in ``ds.emb.rows`` (``{"subject": ["p1", "p2"]}``,
    either id spelling), or a list of them that every exported row matches
    (:func:`embstore.store.views.row_filter`).
    """
    fmt = get_format(format)
    ds = open_store(store, version=version)
    if variable not in ds.data_vars or ds[variable].dims != (SAMPLE, "feature"):
        choices = [str(n) for n, v in ds.data_vars.items() if v.dims == (SAMPLE, "feature")]
        raise EmbstoreError(
            f"{store}: no (sample, feature) variable {variable!r} (have: {', '.join(choices)})"
        )
    out = Path(out)
    local = parse_location(store).path
    source, target = (local.resolve() if local else None), out.resolve()
    if source and (target == source or source in target.parents or target in source.parents):
        raise EmbstoreError(f"{out}: is, holds or lies inside the store {store}; export elsewhere")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise EmbstoreError(f"{out}: exists (pass overwrite=True to replace it)")
    if not out.parent.is_dir():
        raise EmbstoreError(f"{out.parent}: does not exist (the folder to export into)")
    stale = check_fresh(ds, variable, allow_stale=allow_stale, store=store)
    rows, total = covered_rows(ds, variable), int(ds.sizes[SAMPLE])
    if rows < total:
        log.warning("%s covers %d of %d rows; exporting those", variable, rows, total)
    ds = ds.isel({SAMPLE: slice(0, rows)})
    if where is not None:
        ds = ds.isel({SAMPLE: row_filter(ds, where)})
    problem = fmt.check_keys(ds["path"].values.tolist())
    if problem is not None:
        raise EmbstoreError(f"{store}: cannot export to {fmt.name}: {problem}")
    with replacing(out, overwrite=overwrite) as tmp:
        fmt.write(ds, variable, tmp, progress)
    return ExportReport(str(out), fmt.name, variable, int(ds.sizes[SAMPLE]), total - rows, stale)


__all__ = ["FORMATS", "ExportReport", "covered_rows", "export"]
