"""Extra label columns joined by path from a CSV (e.g. MIMIC's ``echo-record-list.csv``)."""

from __future__ import annotations

import codecs
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import BadInputError, first_line
from .labels import INTEGER_LABELS, Layout, check_label_name, missing_value


@dataclass
class LabelsTable:
    """Label rows keyed by the canonical path key (see :meth:`Layout.canonical`)."""

    file: str
    key: str
    columns: list[str]
    rows: dict[str, tuple[str | int, ...]]
    layout: Layout | None

    def lookup(self, path: str) -> dict[str, str | int] | None:
        """The labels of ``path``, or ``None`` if the CSV has no row for it."""
        canonical = self.layout.canonical(path) if self.layout else path
        values = self.rows.get(canonical)
        return None if values is None else dict(zip(self.columns, values, strict=True))


def read_labels_csv(
    file: str | os.PathLike[str], *, key: str = "path", layout: Layout | None = None
) -> LabelsTable:
    """Read ``file``; its ``key`` column holds paths, every other column becomes a label.

    With a layout that defines a join key (``mimic-echo``), paths are matched on it, so
    ``files/p10/p10002221/s94106955/94106955_0001.dcm`` in the CSV matches the
    ``p10002221/s94106955/94106955_0001.mp4`` row of a ``.pt`` dict.
    """
    name = str(file)
    try:
        encoding = _encoding(Path(file))
        table = pd.read_csv(file, dtype=str, keep_default_na=False, encoding=encoding)
    except UnicodeDecodeError as exc:
        msg = f"not {encoding} text at byte {exc.start} (save the CSV as UTF-8)"
        raise BadInputError(name, msg) from exc
    except OSError as exc:
        raise BadInputError(name, f"cannot read ({exc.strerror or exc})") from exc
    except ValueError as exc:  # pandas' parser and empty-data errors
        raise BadInputError(name, f"unreadable CSV ({first_line(exc)})") from exc
    if key not in table.columns:
        raise BadInputError(name, f"no {key!r} column to join on (columns: {list(table.columns)})")
    try:
        columns = [check_label_name(str(c)) for c in table.columns if c != key]
    except BadInputError as exc:
        raise BadInputError(name, f"column {exc.problem}") from None
    for column in columns:
        if column in INTEGER_LABELS:
            bad = ~table[column].str.fullmatch(r"-?\d+|")
            if bad.any():
                raise BadInputError(
                    name,
                    f"column {column!r} holds non-integers, e.g. {table[column][bad].iloc[0]!r}",
                )
    values = [
        [int(v) if v else missing_value(c) for v in table[c]]
        if c in INTEGER_LABELS
        else table[c].tolist()
        for c in columns
    ]
    rows: dict[str, tuple[str | int, ...]] = {}
    for i, path in enumerate(table[key].tolist()):
        canonical = layout.canonical(path) if layout else path
        if canonical in rows:
            raise BadInputError(name, f"two rows for the same path {path!r}")
        rows[canonical] = tuple(column[i] for column in values)
    return LabelsTable(name, key, columns, rows, layout)


_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _encoding(file: Path) -> str:
    """The CSV's encoding: given by its byte-order mark (UTF-8 or UTF-16), else UTF-8."""
    with file.open("rb") as f:
        head = f.read(4)
    return next((enc for bom, enc in _BOMS if head.startswith(bom)), "utf-8")


def label_columns(
    paths: Sequence[str],
    *,
    layout: Layout | None,
    table: LabelsTable | None,
    given: Mapping[str, Sequence[Any]] | None = None,
) -> tuple[dict[str, list[Any]], dict[int, str]]:
    """Label columns for ``paths`` from a layout and/or a labels CSV, plus each failed row.

    ``given`` holds labels the source already carries; the CSV must agree with them and with
    the layout. Failed rows (no match, no CSV row, a disagreement) are returned as
    ``{row: problem}`` and hold missing values. Pure: used by ingest and by relabelling.
    """
    columns: dict[str, list[Any]] = {name: list(values) for name, values in (given or {}).items()}
    problems: dict[int, str] = {}
    if layout is not None:
        parsed, failed = layout.parse_columns(paths)
        columns.update(parsed)
        problems.update(failed)
    if table is not None:
        from_paths = dict(columns)  # labels the CSV must agree with
        for name in table.columns:
            columns.setdefault(name, [missing_value(name)] * len(paths))
        for i, path in enumerate(paths):
            if i in problems:
                continue
            known = {name: values[i] for name, values in from_paths.items()}
            try:
                for name, value in _csv_labels(table, path, known).items():
                    columns[name][i] = value
            except BadInputError as exc:
                problems[i] = exc.problem
    return columns, problems


def _csv_labels(table: LabelsTable, path: str, known: dict[str, Any]) -> dict[str, Any]:
    extra = table.lookup(path)
    if extra is None:
        raise BadInputError(path, f"no row in {table.file} (joined on its {table.key!r} column)")
    for name, value in extra.items():
        if name in known and known[name] != value:
            msg = f"{table.file} says {name}={value!r}, the path says {known[name]!r}"
            raise BadInputError(path, msg)
    return extra
