"""Commands that put rows in a store, change them or write them out: ingest, normalize, aggregate,
export, label."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import embstore
from embstore._cli.app import (
    LAYOUT_HELP,
    AllowStale,
    Categories,
    Duplicate,
    Format,
    Layout,
    Quiet,
    Scheduler,
    StoreArg,
    StorePath,
    Version,
    _command,
    _progress,
    _say,
    one_line,
)


@_command
def ingest_cmd(
    sources: Annotated[
        list[Path],
        typer.Argument(metavar="SOURCE", help=".npy folders, .pt dict files or .h5 exports."),
    ],
    store: StorePath,
    layout: Annotated[Layout | None, typer.Option(help=LAYOUT_HELP)] = None,
    pattern: Annotated[
        str | None,
        typer.Option(help="Regex with named groups (subject, age_mo, category...) for labels."),
    ] = None,
    labels: Annotated[Path | None, typer.Option(help="CSV of extra labels joined by path.")] = None,
    labels_key: Annotated[str, typer.Option(help="The CSV column holding paths.")] = "path",
    categories: Categories = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip and report bad rows instead of failing.")
    ] = False,
    on_duplicate: Annotated[
        Duplicate, typer.Option(help="A path already stored: skip it or fail.")
    ] = Duplicate.skip,
    model: Annotated[
        str | None, typer.Option(help="Embedding model name, recorded when creating.")
    ] = None,
    batch_rows: Annotated[
        int | None, typer.Option(min=1, help="Rows per commit [default: 8 chunks].")
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(min=1, help="Processes loading .pt files at once (many files, many cores)."),
    ] = 1,
    quiet: Quiet = False,
) -> None:
    """Append embeddings to a store (created if missing), exactly once and crash-safe."""
    with _progress(quiet, "ingest") as progress:
        config = embstore.IngestConfig(
            layout=layout.value if layout else None,
            pattern=pattern,
            labels_csv=labels,
            labels_key=labels_key,
            categories=categories,
            skip_bad=skip_bad,
            on_duplicate=on_duplicate.value,
            model=model,
            batch_rows=batch_rows,
            jobs=jobs,
        )
        report = embstore.ingest(sources, store=store, config=config, progress=progress)
    _say(quiet, f"{store}: {report.summary()}")
    for bad in report.bad:
        _say(quiet, one_line(f"  skipped {bad}"))
    for path in report.nonfinite[:10]:
        _say(quiet, f"  non-finite: {path}")


@_command
def normalize_cmd(
    store: StoreArg,
    exclude_subject: Annotated[
        list[str] | None,
        typer.Option("--exclude-subject", "-x", help="Leave out of the statistics (repeatable)."),
    ] = None,
    name: Annotated[str, typer.Option(help="Name of the new variable.")] = "normalized",
    variable: Annotated[str, typer.Option(help="Variable to normalize.")] = "embedding",
    eps: Annotated[float, typer.Option(help="Added to the std.")] = 1e-10,
    categories: Categories = None,
    mask_outside: Annotated[
        bool, typer.Option(help="With --categories: rows outside the list become NaN.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing variable of that name.")
    ] = False,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh", help="Recompute the variable --name with the parameters it recorded."
        ),
    ] = False,
    scheduler: Scheduler = None,
    quiet: Quiet = False,
) -> None:
    """Feature-wise normalization with subjects excluded from the statistics only.

    One new version holds the variable and its statistics; --refresh recomputes a stale one."""
    with _progress(quiet, "normalize") as progress:
        report = embstore.normalize_store(
            store,
            exclude_subjects=exclude_subject or [],
            categories=categories,
            mask_outside=mask_outside,
            variable=variable,
            name=name,
            eps=eps,
            overwrite=overwrite,
            refresh=refresh,
            scheduler=scheduler,
            progress=progress,
        )
    _say(quiet, f"{store}: {report.summary()}")


@_command
def aggregate(
    store: StoreArg,
    output: Annotated[str, typer.Argument(metavar="OUT", help="The new store of group means.")],
    by: Annotated[
        str, typer.Option(help="Comma-separated labels to group by.")
    ] = "category,subject,age_mo",
    variable: Annotated[str, typer.Option(help="Variable to average.")] = "embedding",
    min_count: Annotated[
        int, typer.Option(min=1, help="Leave out groups with fewer finite rows.")
    ] = 1,
    path_template: Annotated[
        str | None,
        typer.Option(
            help="Row keys of OUT, e.g. '{category}/{subject}_{age_mo}_month_level_avg' "
            "[default: {category}/{subject}_{age_mo}]."
        ),
    ] = None,
    version: Version = None,
    scheduler: Scheduler = None,
    allow_stale: AllowStale = False,
    quiet: Quiet = False,
) -> None:
    """Mean (and count) of the rows per group of labels, written as a new store of groups."""
    with _progress(quiet, "aggregate", "groups") as progress:
        report = embstore.aggregate(
            store,
            output,
            by=[name.strip() for name in by.split(",") if name.strip()],
            variable=variable,
            min_count=min_count,
            path_template=path_template,
            version=version,
            scheduler=scheduler,
            allow_stale=allow_stale,
            progress=progress,
        )
    _say(quiet, f"{store}: {report.summary()}")


@_command
def export_cmd(
    store: StoreArg,
    output: Annotated[
        Path, typer.Argument(metavar="OUT", help="Output folder (npy-tree) or file.")
    ],
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")],  # noqa: A002
    variable: Annotated[str, typer.Option(help="Variable to export.")] = "embedding",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT if it exists.")
    ] = False,
    version: Version = None,
    allow_stale: Annotated[
        bool,
        typer.Option("--allow-stale", help="Export a stale derived variable as it is."),
    ] = False,
    where: Annotated[
        str | None,
        typer.Option(help='Export only rows matching a query on labels, e.g. "age_mo >= 12".'),
    ] = None,
    subject: Annotated[
        list[str] | None, typer.Option(help="Export only this subject's rows (repeatable).")
    ] = None,
    category: Annotated[
        list[str] | None, typer.Option(help="Export only this category's rows (repeatable).")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Write a variable as a .npy tree (original relative paths), a .pt dict, HDF5 or Zarr."""
    criteria = {n: v for n, v in (("subject", subject), ("category", category)) if v}
    rows = [part for part in (where, criteria) if part]
    with _progress(quiet, "export") as progress:
        report = embstore.export(
            store,
            output,
            format=format.value,
            variable=variable,
            overwrite=overwrite,
            version=version,
            allow_stale=allow_stale,
            progress=progress,
            where=rows or None,
        )
    _say(quiet, report.summary())


@_command
def label(
    store: StoreArg,
    layout: Annotated[
        Layout | None, typer.Option(help="Read labels from the stored paths in this layout.")
    ] = None,
    pattern: Annotated[
        str | None,
        typer.Option(help="Regex with named groups (subject, age_mo, category...) for labels."),
    ] = None,
    labels: Annotated[Path | None, typer.Option(help="CSV of labels joined by path.")] = None,
    labels_key: Annotated[str, typer.Option(help="The CSV column holding paths.")] = "path",
    quiet: Quiet = False,
) -> None:
    """Add or update label columns of the rows already stored, in one commit."""
    report = embstore.label(
        store,
        layout=layout.value if layout else None,
        pattern=pattern,
        labels_csv=labels,
        labels_key=labels_key,
    )
    _say(quiet, f"{store}: {report.summary()}")
    for line in report.examples:
        _say(quiet, f"  not labelled: {line}")
