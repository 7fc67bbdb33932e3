"""Commands that read a store: info, validate, inspect, neighbors, log, tags, index."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import embstore
from embstore._cli.app import (
    AllowStale,
    AsJson,
    Quiet,
    Scheduler,
    StoreArg,
    Version,
    _command,
    _progress,
    _say,
    err,
    out,
)


@_command
def info_cmd(
    store: StoreArg,
    version: Version = None,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Rows, feature size, labels, variables (provenance, coverage), flagged rows."""
    data = embstore.info(store, version=version)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    out.print(
        f"[bold]{data['store']}[/bold]: {data['rows']} rows x {data['feature_size']} features, "
        f"model {data['model'] or 'unknown'}, schema v{data['schema_version']}, "
        f"version {data['version']}",
        highlight=False,
    )
    if quiet:  # the one-line summary only
        return
    table = Table("label", "type", "unique", "missing", "most common")
    for name, label in data["labels"].items():
        top = ", ".join(f"{k} ({v})" for k, v in label["top"][:5])
        table.add_row(name, label["dtype"], str(label["unique"]), str(label["missing"]), top)
    out.print(table)
    table = Table("variable", "dims", "dtype", "status", "provenance")
    for name, var in data["variables"].items():
        prov = var.get("provenance", {})
        desc = ", ".join(
            f"{k}={prov[k]}"
            for k in ("source", "exclude_subjects", "rows_used", "eps", "time")
            if k in prov
        )
        table.add_row(name, " x ".join(var["dims"]), var["dtype"], var.get("status", ""), desc)
    out.print(table)
    flagged = data["flagged"]
    out.print(
        f"non-finite rows: {flagged['nonfinite']}"
        + (f" (e.g. {', '.join(flagged['paths'])})" if flagged["paths"] else "")
    )
    for entry in data["provenance"][-5:]:
        extra = {k: entry[k] for k in ("sources", "rows_added", "status") if k in entry}
        out.print(f"  {entry['time']} {entry['action']} {extra}", highlight=False)


@_command
def validate_cmd(
    store: StoreArg,
    version: Version = None,
    deep: Annotated[bool, typer.Option("--deep", help="Read every chunk of every array.")] = False,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Check the schema and consistency (lengths, unique paths); --deep reads every chunk."""
    report = embstore.validate(store, version=version, deep=deep)
    if as_json:
        print(
            json.dumps(
                {
                    "store": report.store,
                    "ok": report.ok,
                    "errors": report.errors,
                    "warnings": report.warnings,
                },
                indent=2,
            )
        )
    else:
        for line in report.errors:
            err.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
        for line in report.warnings:
            err.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
        verdict = "valid" if report.ok else f"{len(report.errors)} problem(s)"
        if report.warnings:
            verdict += f", {len(report.warnings)} warning(s)"
        _say(quiet, f"{store}: {verdict}")
    if not report.ok:
        raise typer.Exit(1)


@_command
def inspect_cmd(
    store: StoreArg,
    variable: Annotated[
        str, typer.Option(help="Variable to inspect (e.g. normalized).")
    ] = "embedding",
    report: Annotated[Path | None, typer.Option(help="Write PNGs and report.html here.")] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 if any health check fails.")
    ] = False,
    sample: Annotated[int, typer.Option(min=2, help="Rows sampled for the pictures.")] = 500,
    seed: Annotated[int, typer.Option(help="Seed of the picture sample.")] = 0,
    color_by: Annotated[
        str | None,
        typer.Option(
            help="Label that colours the PCA and orders the heatmap "
            "(default: age_mo, subject or category, the first that has values)."
        ),
    ] = None,
    version: Version = None,
    scheduler: Scheduler = None,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Health checks (NaN/Inf/zero/duplicate rows, dead or extreme dimensions) and statistics
    over every row; pictures and an HTML report with --report."""
    with _progress(quiet or as_json, "inspect") as progress:
        result = embstore.inspect.inspect_store(
            store,
            variable=variable,
            report=report,
            sample=sample,
            seed=seed,
            color_by=color_by,
            version=version,
            scheduler=scheduler,
            progress=progress,
        )
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    elif not quiet:
        out.print(
            f"[bold]{store}[/bold] variable [bold]{variable}[/bold]: {result.summary.rows} rows",
            highlight=False,
        )
        table = Table("check", "result", "count", "examples")
        for name, row in result.health.iterrows():
            verdict = "[green]pass[/green]" if row["passed"] else "[red]FAIL[/red]"
            table.add_row(str(name), verdict, str(row["count"]), "; ".join(row["examples"][:3]))
        out.print(table)
        norms = result.summary.norm_stats()
        if len(norms):
            out.print(
                "L2 norm: " + ", ".join(f"{k} {v:.4g}" for k, v in norms.items()), highlight=False
            )
        if result.report:
            out.print(f"report: {result.report}", highlight=False)
    if strict and not result.passed:
        raise typer.Exit(1)


class Metric(StrEnum):
    cosine = "cosine"
    dot = "dot"
    euclidean = "euclidean"


@_command
def neighbors(
    store: StoreArg,
    path: Annotated[
        list[str], typer.Option("--path", "-p", help="A stored row's path to query (repeatable).")
    ],
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="Neighbours per query.")] = 10,
    metric: Annotated[Metric, typer.Option(help="Similarity or distance.")] = Metric.cosine,
    variable: Annotated[
        str, typer.Option(help="Variable searched (e.g. normalized).")
    ] = "embedding",
    subject: Annotated[
        list[str] | None, typer.Option(help="Only neighbours of this subject (repeatable).")
    ] = None,
    category: Annotated[
        list[str] | None, typer.Option(help="Only neighbours of this category (repeatable).")
    ] = None,
    exclude_same_subject: Annotated[
        bool, typer.Option(help="Leave out rows of the query's own subject.")
    ] = False,
    approximate: Annotated[
        bool, typer.Option(help="Use the store's approximate index (see `embstore index`).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON records.")] = False,
    allow_stale: AllowStale = False,
    quiet: Quiet = False,
) -> None:
    """The rows nearest to stored rows (exact search chunk by chunk, or --approximate)."""
    where = {
        name: values for name, values in (("subject", subject), ("category", category)) if values
    }
    table = embstore.neighbors(
        store,
        path,
        k=k,
        metric=metric.value,
        variable=variable,
        where=where or None,
        exclude_same_subject=exclude_same_subject,
        approximate=approximate,
        allow_stale=allow_stale,
    )
    if as_json:
        print(table.to_json(orient="records", indent=2))
        return
    for query, rows in table.groupby("query", sort=False):
        out.print(f"[bold]{query}[/bold]", highlight=False, soft_wrap=True)
        shown = Table(*(str(c) for c in rows.columns if c != "query"))
        for row in rows.drop(columns="query").itertuples(index=False):
            shown.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
        out.print(shown)


@_command
def log(
    store: StoreArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quiet: Quiet = False,
) -> None:
    """Every version of the store, newest first: id, time, message, rows, tags."""
    versions = embstore.log(store)
    if as_json:
        print(json.dumps([v.to_dict() for v in versions], indent=2, default=str))
        return
    if quiet:  # ids only, newest first (for scripts)
        for v in versions:
            print(v.id)
        return
    for v in versions:
        tags = f" [{', '.join(v.tags)}]" if v.tags else ""
        rows = "" if v.rows is None else f" ({v.rows} rows)"
        out.print(
            f"{v.id}  {v.time:%Y-%m-%d %H:%M:%S}  {v.message}{rows}{tags}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@_command
def tags(
    store: StoreArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quiet: Quiet = False,
) -> None:
    """Every tag and the version it names (id, time, message, rows)."""
    found = embstore.tags(store)
    if as_json:
        print(json.dumps([t.to_dict() for t in found], indent=2))
        return
    for t in found:
        rows = "" if t.rows is None or quiet else f" ({t.rows} rows)"
        line = (
            t.name if quiet else f"{t.name}  {t.version}  {t.time:%Y-%m-%d %H:%M:%S}  {t.message}"
        )
        out.print(line + rows, highlight=False, markup=False, soft_wrap=True)


@_command
def index(
    store: StoreArg,
    variable: Annotated[str, typer.Option(help="Variable to index.")] = "embedding",
    metric: Annotated[Metric, typer.Option(help="What the index answers.")] = Metric.cosine,
    lists: Annotated[
        int | None, typer.Option(min=1, help="Inverted lists (default ~sqrt(rows)).")
    ] = None,
    nprobe: Annotated[
        int | None, typer.Option(min=1, help="Lists scanned per query (default lists/16).")
    ] = None,
    allow_stale: AllowStale = False,
    quiet: Quiet = False,
) -> None:
    """Build the approximate-neighbours index (faiss IVF) of a variable, as a new version."""
    with _progress(quiet, "index") as progress:
        report = embstore.build_index(
            store,
            variable=variable,
            metric=metric.value,
            lists=lists,
            nprobe=nprobe,
            allow_stale=allow_stale,
            progress=progress,
        )
    _say(quiet, f"{store}: {report.summary()}")
