"""Relabelling: add or fix label columns of rows already stored, in one commit.

A store ingested without a layout has every label missing, and re-ingesting skips every row
as already stored. :func:`label` derives the labels again from the stored paths (a layout, a
pattern, a labels CSV), computes whole new columns purely, and hands them to
:meth:`StoreWriter.set_labels`, which commits them at once with a provenance entry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import BadInputError
from .labels import INTEGER_LABELS, Layout, get_layout, missing_value
from .labels_csv import LabelsTable, label_columns, read_labels_csv
from .store import StoreWriter, open_store
from .store.location import StoreLike
from .store.variables import stale_variables

log = logging.getLogger(__name__)

#: Unlabelled rows listed in the report and the provenance entry.
EXAMPLES = 10


@dataclass
class LabelReport:
    """What :func:`label` changed."""

    store: str
    rows: int
    columns: list[str]
    changed: dict[str, int] = field(default_factory=dict)
    unlabelled: int = 0
    examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        changed = ", ".join(f"{name} {n}" for name, n in self.changed.items())
        text = f"labelled {self.rows} rows: {', '.join(self.columns)} (rows changed: {changed})"
        if self.unlabelled:
            text += f"; {self.unlabelled} row(s) could not be labelled and kept their labels"
        return text


def relabel_columns(
    paths: Sequence[str],
    existing: Mapping[str, np.ndarray],
    *,
    layout: Layout | None,
    table: LabelsTable | None,
) -> tuple[dict[str, np.ndarray], dict[int, str]]:
    """New whole columns for ``paths``, and the problem of each row that could not be labelled.

    Pure. A row the sources cannot label keeps its ``existing`` values (or the missing value
    in a new column); every other row takes the derived values.
    """
    derived, problems = label_columns(paths, layout=layout, table=table)
    failed = np.zeros(len(paths), dtype=bool)
    failed[list(problems)] = True
    columns = {}
    for name, values in derived.items():
        dtype = np.int32 if name in INTEGER_LABELS else object
        column = np.asarray(values, dtype=dtype)
        before = existing.get(name)
        keep = np.full(len(paths), missing_value(name), dtype=dtype) if before is None else before
        column[failed] = np.asarray(keep, dtype=dtype)[failed]
        columns[name] = column
    return columns, problems


def label(
    store: StoreLike,
    *,
    layout: str | Layout | None = None,
    pattern: str | None = None,
    labels_csv: str | os.PathLike[str] | None = None,
    labels_key: str = "path",
) -> LabelReport:
    """Add or update label columns of every stored row, in one commit.

    Parameters
    ----------
    store
        The store.
    layout, pattern
        Derive labels from each stored path: a layout name (``"babyview"``, ``"mimic-echo"``)
        or a regex whose named groups become labels.
    labels_csv, labels_key
        A CSV whose ``labels_key`` column holds paths; its other columns become labels.

    Rows the sources cannot label (no match, no CSV row) keep their labels and are reported
    (count and examples), not fatal.

    Examples
    --------
    >>> embstore.label("bv.store", layout="babyview").summary()
    'labelled 24 rows: age_mo, category, subject (rows changed: ...)'
    """
    resolved = get_layout(layout, pattern=pattern)
    if resolved is None and labels_csv is None:
        raise BadInputError("labels", "give a layout, a pattern or a labels CSV to label from")
    table = read_labels_csv(labels_csv, key=labels_key, layout=resolved) if labels_csv else None
    ds = open_store(store)
    paths = ds["path"].values.tolist()
    existing = {str(n): np.asarray(c.values) for n, c in ds.coords.items() if c.dims == ("sample",)}
    columns, problems = relabel_columns(paths, existing, layout=resolved, table=table)
    if not columns:
        raise BadInputError("labels", "the layout or CSV defines no label columns")
    examples = [f"{paths[i]}: {problems[i]}" for i in sorted(problems)[:EXAMPLES]]
    changed = {  # rows whose value changed; in a new column, rows given a value
        name: int((values != existing.get(name, missing_value(name))).sum())
        for name, values in sorted(columns.items())
    }
    info: dict[str, Any] = {
        "layout": _layout_name(resolved),
        "labels_csv": str(labels_csv) if labels_csv else None,
        "rows_changed": changed,
        "unlabelled_count": len(problems),
        "unlabelled": examples,
    }
    StoreWriter(store).set_labels(columns, action="label", **info)
    for line in examples:
        log.warning("not labelled: %s", line)
    for name, reasons in stale_variables(open_store(store), store=store).items():
        log.warning("%s is stale: %s (recompute it: refresh=True)", name, "; ".join(reasons))
    return LabelReport(str(store), len(paths), sorted(columns), changed, len(problems), examples)


def _layout_name(layout: Layout | None) -> str | None:
    if layout is None:
        return None
    return layout.pattern if layout.name == "pattern" else layout.name
