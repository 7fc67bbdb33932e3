"""The ``embstore`` command line: each command parses its arguments and calls one library function.

Errors a user or the environment can cause (bad input, a missing file, a full disk, a denied
permission) print as one line (``error: <file>: <problem>``) with exit code 1; ``--debug``
shows their traceback instead. ``--quiet`` silences progress bars and summaries. Only typer,
rich and the light ``embstore.errors`` / ``embstore.labels`` / ``embstore.formats`` registry are
imported here, so ``--help`` and argument errors answer at once; array libraries load when a
command runs (``embstore`` itself is lazy).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

import embstore
from embstore.errors import EmbstoreError
from embstore.extraction.config import DECODERS, DTYPES
from embstore.extraction.encoders import REGISTRY
from embstore.formats import NAMES as FORMAT_NAMES
from embstore.labels import LAYOUTS

if TYPE_CHECKING:
    from embstore._progress import Progress as ProgressCallback

app = typer.Typer(
    name="embstore",
    help="Store, normalize, inspect and export embeddings in labelled Zarr stores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain click help: flags show no <bool> placeholder
)
out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries.")]
_STORE_HELP = "The store: a local folder or s3://bucket/prefix."
StorePath = Annotated[str, typer.Option("--store", "-s", help=_STORE_HELP)]
StoreArg = Annotated[str, typer.Argument(metavar="STORE", help=_STORE_HELP)]
Version = Annotated[
    str | None,
    typer.Option("--version", help="A version id (or prefix, see `embstore log`) or a tag."),
]
Scheduler = Annotated[
    str | None,
    typer.Option(help="dask scheduler: threads (default), local:N, or a scheduler address."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Categories = Annotated[
    Path | None,
    typer.Option(help="File of allowed categories, one per line (blank lines, # comments ok)."),
]

#: The layouts the library knows (labels.LAYOUTS), as a choice.
Layout = StrEnum("Layout", {name.replace("-", "_"): name for name in LAYOUTS})
LAYOUT_HELP = "Read labels from paths in this layout: " + "; ".join(
    f"{name} = {layout.template or layout.pattern}" for name, layout in LAYOUTS.items()
)


class Duplicate(StrEnum):
    skip = "skip"
    error = "error"


#: ``--format`` choices: the names in the format registry.
Format = StrEnum("Format", {name.replace("-", "_"): name for name in FORMAT_NAMES})  # type: ignore[misc]

_debug = False


#: Where the warnings of libraries go: the log shown with ``--debug``, never the terminal.
WARNINGS_LOG = "embstore.warnings"


@app.callback()
def _options(
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the traceback of every error, and libraries' warnings."),
    ] = False,
) -> None:
    """Store, normalize, inspect and export embeddings in labelled Zarr stores."""
    global _debug
    _debug = debug


def one_line(text: str) -> str:
    """``text`` printable on one line: control characters and undecodable bytes escaped."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _describe_os_error(exc: OSError, where: object) -> str:
    """``<file>: <problem>`` for an error of the operating system (ENOSPC, EACCES, ...);
    ``where`` (the command's store or output) names it when the error names no file."""
    problem = exc.strerror or str(exc) or type(exc).__name__
    names = [n for n in (exc.filename, exc.filename2) if n is not None] or [where]
    return f"{' -> '.join(map(str, names))}: {problem}"


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a scheduler or ``kill``) stops a run like Ctrl-C: the run is recorded as
    interrupted and the committed batches are kept. The previous handler comes back after."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread (e.g. a test runner's thread)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminal_records(record: logging.LogRecord) -> bool:
    """The log records the terminal shows: embstore's own, and other libraries' from ERROR
    up; with ``--debug`` everything (their warnings included)."""
    own = record.name == "embstore" or record.name.startswith("embstore.")
    return own or _debug or record.levelno >= logging.ERROR


class _OneLineFormatter(logging.Formatter):
    """Each log record on one line (a library's multi-line message joined), but with
    ``--debug``, which keeps tracebacks as they are."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if _debug else one_line(" ".join(text.split()))


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` for commands: one debug line in the log, not the terminal."""
    text = one_line(" ".join(str(message).split()))
    where = f"{Path(filename).name}:{lineno}"
    logging.getLogger(WARNINGS_LOG).debug("%s: %s (%s)", category.__name__, text, where)


@contextlib.contextmanager
def _warnings_to_log() -> Iterator[None]:
    """Libraries' warnings (torch, h5netcdf, dask...) go to the log shown with ``--debug``,
    one line each; without it the terminal shows only the command's own lines."""
    logging.getLogger(WARNINGS_LOG).setLevel(logging.DEBUG if _debug else logging.WARNING)
    logging.getLogger("embstore").setLevel(logging.DEBUG if _debug else logging.NOTSET)
    with warnings.catch_warnings():  # the filters stay (a test suite's "error" included)
        warnings.showwarning = _log_warning
        yield


def _command(func: F) -> F:
    """Register ``func`` as a command that turns user and environment errors into one line."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet = kwargs.get("quiet", False)
        terminal = logging.StreamHandler(sys.stderr)
        terminal.addFilter(_terminal_records)
        terminal.setFormatter(_OneLineFormatter("%(levelname)s: %(message)s"))
        logging.basicConfig(
            level=logging.ERROR if quiet else logging.WARNING, handlers=[terminal], force=True
        )
        try:
            with _sigterm_interrupts(), _warnings_to_log():
                return func(*args, **kwargs)
        except (EmbstoreError, OSError) as exc:
            if _debug:
                raise
            if isinstance(exc, OSError):
                where = kwargs.get("output") or kwargs.get("store") or kwargs.get("directory")
                text = _describe_os_error(exc, where)
            else:
                text = str(exc)
            err.print(f"[red]error:[/red] {one_line(text)}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("[red]interrupted[/red]: committed batches are kept; re-run to finish")
            raise typer.Exit(130) from None

    app.command(name=func.__name__.removesuffix("_cmd").replace("_", "-"))(wrapper)
    return func


class _Rate(ProgressColumn):
    """Items per second (rows/s, files/s, clips/s...)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.1f} {self.unit}/s", style="progress.data.speed")


@contextlib.contextmanager
def _progress(quiet: bool, what: str, unit: str = "rows") -> Iterator[ProgressCallback | None]:
    if quiet:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(unit),
        TimeRemainingColumn(),
    )
    # a bar only on a terminal: redirected to a file it would leave a blank line
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        out.print(text, highlight=False, soft_wrap=True, markup=False)


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
        report = embstore.ingest(
            sources,
            store=store,
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
            progress=progress,
        )
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
            progress=progress,
        )
    _say(quiet, f"{store}: {report.summary()}")


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
def convert_dicom(
    input_dir: Annotated[
        Path, typer.Argument(metavar="INPUT", help="Folder of DICOMs (searched recursively).")
    ],
    output: Annotated[
        Path, typer.Argument(metavar="OUTPUT", help="Folder for the MP4s (same relative paths).")
    ],
    target_size: Annotated[int, typer.Option(help="Output width and height (even).")] = 256,
    fps: Annotated[float | None, typer.Option(help="Frame rate (default: from the DICOM).")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Convert at most this many files.")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Convert multi-frame DICOMs to H.264 MP4; stills are skipped, bad files reported."""
    from embstore.extraction import convert_dicom as run

    with _progress(quiet, "convert", "files") as progress:
        report = run(
            input_dir, output, target_size=target_size, fps=fps, limit=limit, progress=progress
        )
    _say(quiet, report.summary())
    for file, problem in report.failed:
        err.print(f"[red]failed:[/red] {file}: {problem}", highlight=False, soft_wrap=True)
    if report.failed:
        raise typer.Exit(1)


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard I/N`` -> ``(I, N)`` with ``0 <= I < N``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"expected I/N (e.g. 0/10), got {text!r}") from None
    if not 0 <= index < count:
        raise typer.BadParameter(f"need 0 <= I < N, got {text!r}")
    return index, count


def parse_devices(text: str) -> tuple[int, ...]:
    """``--devices 0,1,3`` -> ``(0, 1, 3)``."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected CUDA device indices like 0,1,2, got {text!r}") from None


#: ``--family`` choices: the extractor registry; ``--dtype`` and ``--decoder`` from the config.
Family = StrEnum("Family", {n.replace("-", "_"): n for n in REGISTRY})  # type: ignore[misc]
Dtype = StrEnum("Dtype", {n.replace("-", "_"): n for n in DTYPES})  # type: ignore[misc]
Decoder = StrEnum("Decoder", {n: n for n in DECODERS})  # type: ignore[misc]


@_command
def extract(
    input_dir: Annotated[
        Path, typer.Argument(metavar="INPUT", help="Folder of DICOMs and/or videos.")
    ],
    store: StorePath,
    checkpoint: Annotated[
        Path, typer.Option(help="Original .pt checkpoint or a local Hugging Face folder.")
    ],
    family: Annotated[
        Family, typer.Option(help="The encoder family (the extractor registry).")
    ] = "vjepa2",  # type: ignore[assignment]
    model: Annotated[
        str | None,
        typer.Option(
            help="vitl, vith, vitg, vitg-384, or a config JSON (optional for HF folders)."
        ),
    ] = None,
    checkpoint_key: Annotated[
        str, typer.Option(help="target_encoder (frozen-eval choice) or encoder.")
    ] = "target_encoder",
    num_frames: Annotated[int, typer.Option(min=1, help="Frames per clip.")] = 16,
    frame_step: Annotated[int, typer.Option(min=1, help="Step between sampled frames.")] = 4,
    clips: Annotated[int, typer.Option(min=1, help="Clips per video, averaged.")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="Videos per batch.")] = 8,
    num_workers: Annotated[
        int, typer.Option(min=0, help="DataLoader worker processes (capped to the CPUs).")
    ] = 4,
    device: Annotated[
        str | None, typer.Option(help="cuda or cpu (default: cuda when available).")
    ] = None,
    devices: Annotated[
        str | None,
        typer.Option(help="CUDA devices, e.g. 0,1,2,3: one process each, one store."),
    ] = None,
    dtype: Annotated[
        Dtype,
        typer.Option(help="Encoder weights: auto = bfloat16 on CUDA, float32 on CPU."),
    ] = "auto",  # type: ignore[assignment]
    compile_model: Annotated[
        bool, typer.Option("--compile", help="torch.compile the encoder (CUDA).")
    ] = False,
    decoder: Annotated[
        Decoder,
        typer.Option(help="Decode frames on the cpu or gpu (auto: gpu on CUDA if installed)."),
    ] = "auto",  # type: ignore[assignment]
    limit: Annotated[
        int | None, typer.Option(min=1, help="Embed at most this many inputs.")
    ] = None,
    shard: Annotated[
        str | None, typer.Option(help="I/N: this process's part of the inputs.")
    ] = None,
    layout: Annotated[Layout | None, typer.Option(help=LAYOUT_HELP)] = None,
    dicom_tags: Annotated[
        list[str] | None,
        typer.Option(help="A DICOM keyword to store as a label (repeat for more)."),
    ] = None,
    commit_every: Annotated[int, typer.Option(min=1, help="Videos per commit.")] = 256,
    sampling: Annotated[
        str, typer.Option(help="Frame sampling: upstream (V-JEPA2 eval) or centered (earlier).")
    ] = "upstream",
    resize: Annotated[
        str, typer.Option(help="Resizing: upstream (V-JEPA2 eval) or antialias (earlier).")
    ] = "upstream",
    pool: Annotated[
        str, typer.Option(help="mean, grid:T,H,W or none: also store tokens (float16).")
    ] = "mean",
    max_size: Annotated[
        float, typer.Option(min=0, help="Refuse tokens projected above this many GB.")
    ] = 100.0,
    yes: Annotated[bool, typer.Option("--yes", help="Store tokens above --max-size.")] = False,
    quiet: Quiet = False,
) -> None:
    """Embed DICOMs and videos with a frozen encoder (V-JEPA2), straight into the store."""
    from transformers.utils import logging as hf_logging

    from embstore.extraction import ExtractConfig
    from embstore.extraction import extract as run

    config = ExtractConfig(
        checkpoint=str(checkpoint),
        family=str(family),
        model=model,
        checkpoint_key=checkpoint_key,
        num_frames=num_frames,
        frame_step=frame_step,
        clips=clips,
        sampling=sampling,
        resize=resize,
        pool=pool,
        max_size=int(max_size * 1e9),
        confirm=yes,
        layout=layout.value if layout else None,
        dicom_tags=tuple(dicom_tags or ()),
        limit=limit,
        shard=parse_shard(shard) if shard else None,
        device=device,
        devices=parse_devices(devices) if devices else (),
        dtype=str(dtype),
        compile=compile_model,
        decoder=str(decoder),
        batch_size=batch_size,
        num_workers=num_workers,
        commit_every=commit_every,
    )
    hf_logging.disable_progress_bar()
    with _progress(quiet, "extract", "clips") as progress:
        report = run(input_dir, store=store, config=config, progress=progress)
    _say(quiet, f"{store}: {report.summary()}")
    for bad in report.bad:
        _say(quiet, one_line(f"  skipped {bad}"))


@_command
def extract_images(
    input_dir: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT", help="Folder of images, or the media folder of --detections."
        ),
    ],
    store: Annotated[str, typer.Argument(metavar="STORE", help=_STORE_HELP)],
    checkpoint: Annotated[
        Path, typer.Option(help="Local Hugging Face folder (DINOv3, DINOv2, CLIP, SigLIP).")
    ],
    detections: Annotated[
        Path | None,
        typer.Option(help="CSV/Parquet: path, frame or time, x0,y0,x1,y1, label columns."),
    ] = None,
    family: Annotated[
        str | None, typer.Option(help="dinov3, dinov2, clip or siglip (default: from config).")
    ] = None,
    pooling: Annotated[
        str, typer.Option(help="cls (pooled output), mean (patch tokens) or projected (CLIP).")
    ] = "cls",
    path_column: Annotated[
        str | None, typer.Option(help="Table column of paths [default: path/video/image/file].")
    ] = None,
    label_column: Annotated[
        list[str] | None,
        typer.Option(help="Keep only this table column as a label (repeatable) [default: all]."),
    ] = None,
    key_column: Annotated[
        list[str] | None,
        typer.Option(help="Append this column to keys, for repeated boxes (repeatable)."),
    ] = None,
    pattern: Annotated[
        str | None, typer.Option(help="Image folders: regex with named groups for labels.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per forward pass.")] = 64,
    num_workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes.")] = 0,
    device: Annotated[
        str | None, typer.Option(help="cuda or cpu (default: cuda when available).")
    ] = None,
    dtype: Annotated[str, typer.Option(help="float32 or bfloat16 (CUDA autocast).")] = "float32",
    processor_backend: Annotated[
        str | None, typer.Option(help="pil or torchvision [default: what transformers picks].")
    ] = None,
    commit_rows: Annotated[
        int | None, typer.Option(min=1, help="Rows per commit [default: one chunk].")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Embed at most this many.")] = None,
    quiet: Quiet = False,
) -> None:
    """Embed images, or the crops of a detections table, with an image model into STORE."""
    from embstore.extraction.images import quiet_transformers

    config = embstore.ImageExtractConfig(
        checkpoint=checkpoint,
        family=family,
        pooling=pooling,
        dtype=dtype,
        processor_backend=processor_backend,
        detections=detections,
        path_column=path_column,
        label_columns=label_column or None,
        key_columns=key_column or (),
        pattern=pattern,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        commit_rows=commit_rows,
        limit=limit,
    )
    with quiet_transformers(), _progress(quiet, "extract", "crops") as progress:
        report = embstore.extract_images(input_dir, store=store, config=config, progress=progress)
    _say(quiet, f"{store}: {report.summary()}")
    for bad in report.bad[:20]:
        _say(quiet, one_line(f"  skipped {bad}"))


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
def tag(
    store: StoreArg,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The tag (never moves, never collected).")
    ],
    version: Version = None,
    quiet: Quiet = False,
) -> None:
    """Name a version (the newest by default)."""
    snapshot = embstore.tag(store, name, version=version)
    _say(quiet, f"{store}: tagged {snapshot} as {name!r}")


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
            progress=progress,
        )
    _say(quiet, f"{store}: {report.summary()}")


@_command
def restore(
    store: StoreArg,
    version: Annotated[str, typer.Argument(metavar="VERSION", help="A version id or a tag.")],
    quiet: Quiet = False,
) -> None:
    """Undo: commit a new version equal to VERSION (history is kept)."""
    _say(quiet, embstore.restore(store, version).summary())


@_command
def recover(store: StoreArg, quiet: Quiet = False) -> None:
    """Recreate a lost or garbled branch ref from the newest intact version (only adds)."""
    _say(quiet, embstore.recover(store).summary())


@_command
def gc(
    store: StoreArg,
    older_than: Annotated[
        str, typer.Option(help="Forget versions older than this age: 7d, 12h, 30m, 0s.")
    ],
    safety_margin: Annotated[
        str, typer.Option(help="Never delete objects younger than this (running writers).")
    ] = "1h",
    quiet: Quiet = False,
) -> None:
    """Forget old versions (tags and the newest are kept) and delete unused data."""
    from embstore.store import parse_age

    try:
        ages = {"older_than": parse_age(older_than), "safety_margin": parse_age(safety_margin)}
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    _say(quiet, embstore.gc(store, **ages).summary())


@_command
def upgrade(
    old: Annotated[Path, typer.Argument(metavar="OLD", help="A schema-1 store (.zarr folder).")],
    new: Annotated[str, typer.Argument(metavar="NEW", help="The new store (must not exist).")],
    quiet: Quiet = False,
) -> None:
    """Convert a schema-1 store into a new store, with every variable and its provenance."""
    with _progress(quiet, "upgrade") as progress:
        report = embstore.upgrade(old, new, progress=progress)
    _say(quiet, report.summary())


@_command
def demo(
    directory: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="Folder for the generated data, store and exports."),
    ],
    subjects: Annotated[int, typer.Option(min=2, help="Subjects to generate.")] = 6,
    categories: Annotated[int, typer.Option(min=1, help="Categories to generate.")] = 20,
    dim: Annotated[int, typer.Option(min=1, help="Feature size.")] = 768,
    seed000: Annotated[
        bool,
        typer.Option(
            "--seed000",
            help="Instead: seed 000 from videos (a new DIR): detections -> crops embedded by a "
            "tiny DINOv3 -> aggregate -> normalize -> the notebook's .npy tree.",
        ),
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Generate a babyview-style .npy tree and run the whole job on it: ingest, normalize
    (first subject excluded from the statistics), info, export."""
    if seed000:
        _seed000_demo(directory, quiet)
        return
    with _progress(quiet, "demo") as progress:
        result = embstore.run_demo(
            directory, n_subjects=subjects, n_categories=categories, dim=dim, progress=progress
        )
    _say(quiet, f"generated {result.files} .npy files in {result.tree}")
    _say(quiet, f"ingest: {result.ingest.summary()}")
    _say(quiet, f"normalize: {result.normalize.summary()}")
    _say(quiet, f"export: {result.export.summary()}")
    _say(quiet, f"store: {result.store}  (try: embstore info {result.store})")


def _seed000_demo(directory: Path, quiet: bool) -> None:
    from embstore.demo_crops import run_seed000_demo
    from embstore.extraction.images import quiet_transformers

    with quiet_transformers(), _progress(quiet, "seed 000", "crops") as progress:
        result = run_seed000_demo(directory, progress=progress)
    _say(quiet, f"detections: {result.detections}")
    _say(quiet, f"extract-images: {result.extract.summary()}")
    _say(quiet, f"aggregate: {result.aggregate.summary()}")
    _say(quiet, f"normalize: {result.normalize.summary()}")
    _say(quiet, f"export: {result.export.summary()}")


def main() -> None:
    """Entry point of the ``embstore`` command."""
    sys.exit(app())


if __name__ == "__main__":
    main()
