"""The ``embstore`` command line: each command parses its arguments and calls one library function.

Errors a user can cause print as one line (``error: <file>: <problem>``) with exit code 1;
``--quiet`` silences progress bars and summaries.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
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
from embstore.ingest import DEFAULT_BATCH_ROWS

app = typer.Typer(
    name="embstore",
    help="Store, normalize, inspect and export embeddings in labelled Zarr stores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries.")]
StorePath = Annotated[Path, typer.Option("--store", "-s", help="The store (a .zarr folder).")]
Categories = Annotated[
    Path | None,
    typer.Option(help="File of allowed categories, one per line (blank lines, # comments ok)."),
]


class Layout(StrEnum):
    babyview = "babyview"
    mimic_echo = "mimic-echo"


class Duplicate(StrEnum):
    skip = "skip"
    error = "error"


class Format(StrEnum):
    npy_tree = "npy-tree"
    pt = "pt"
    hdf5 = "hdf5"


def _command(func: F) -> F:
    """Register ``func`` as a command that turns user errors into one line and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet = kwargs.get("quiet", False)
        logging.basicConfig(
            level=logging.ERROR if quiet else logging.WARNING,
            format="%(message)s",
            handlers=[RichHandler(console=err, show_time=False, show_path=False)],
            force=True,
        )
        try:
            return func(*args, **kwargs)
        except EmbstoreError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
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
def _progress(
    quiet: bool, what: str, unit: str = "rows"
) -> Iterator[Callable[[int, int], None] | None]:
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
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        out.print(text, highlight=False, soft_wrap=True)


@_command
def ingest_cmd(
    sources: Annotated[
        list[Path], typer.Argument(help=".npy folders, .pt dict files or .h5 exports.")
    ],
    store: StorePath,
    layout: Annotated[
        Layout | None, typer.Option(help="Read labels from paths in this layout.")
    ] = None,
    pattern: Annotated[
        str | None,
        typer.Option(help="Regex with named groups (subject, age_mo, category...) for labels."),
    ] = None,
    labels: Annotated[Path | None, typer.Option(help="CSV of extra labels joined by path.")] = None,
    labels_key: Annotated[str, typer.Option(help="The CSV column holding paths.")] = "path",
    categories: Categories = None,
    skip_bad: Annotated[
        bool, typer.Option(help="Skip and report bad rows instead of failing.")
    ] = False,
    on_duplicate: Annotated[
        Duplicate, typer.Option(help="A path already stored: skip it or fail.")
    ] = Duplicate.skip,
    model: Annotated[
        str | None, typer.Option(help="Embedding model name, recorded when creating.")
    ] = None,
    batch_rows: Annotated[int, typer.Option(min=1, help="Rows per commit.")] = DEFAULT_BATCH_ROWS,
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
        _say(quiet, f"  skipped {bad}")
    for path in report.nonfinite[:10]:
        _say(quiet, f"  non-finite: {path}")


@_command
def normalize_cmd(
    store: Annotated[Path, typer.Argument(help="The store.")],
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
        bool, typer.Option(help="Replace an existing variable of that name.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Feature-wise normalization with subjects excluded from the statistics only."""
    with _progress(quiet, "normalize", "tasks") as progress:
        report = embstore.normalize_store(
            store,
            exclude_subjects=exclude_subject or [],
            categories=categories,
            mask_outside=mask_outside,
            variable=variable,
            name=name,
            eps=eps,
            overwrite=overwrite,
            progress=progress,
        )
    _say(quiet, f"{store}: {report.summary()}")


@_command
def info_cmd(
    store: Annotated[Path, typer.Argument(help="The store.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quiet: Quiet = False,
) -> None:
    """Rows, feature size, labels, variables (provenance, coverage), flagged rows."""
    data = embstore.info(store)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    out.print(
        f"[bold]{data['store']}[/bold]: {data['rows']} rows x {data['feature_size']} features, "
        f"model {data['model'] or 'unknown'}, schema v{data['schema_version']}",
        highlight=False,
    )
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
    for line in data["uncommitted"]:
        out.print(f"[yellow]uncommitted:[/yellow] {line}")


@_command
def export_cmd(
    store: Annotated[Path, typer.Argument(help="The store.")],
    output: Annotated[
        Path, typer.Argument(metavar="OUT", help="Output folder (npy-tree) or file.")
    ],
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")],  # noqa: A002
    variable: Annotated[str, typer.Option(help="Variable to export.")] = "embedding",
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
    quiet: Quiet = False,
) -> None:
    """Write a variable as a .npy tree (original relative paths), a .pt dict or HDF5."""
    with _progress(quiet, "export") as progress:
        report = embstore.export(
            store,
            output,
            format=format.value,
            variable=variable,
            overwrite=overwrite,
            progress=progress,
        )
    _say(quiet, report.summary())


@_command
def validate_cmd(
    store: Annotated[Path, typer.Argument(help="The store.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quiet: Quiet = False,
) -> None:
    """Check the schema and consistency (lengths, unique paths, committed state)."""
    report = embstore.validate(store)
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
            err.print(f"[red]error:[/red] {line}", highlight=False)
        for line in report.warnings:
            err.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
        _say(quiet, f"{store}: {'valid' if report.ok else f'{len(report.errors)} problem(s)'}")
    if not report.ok:
        raise typer.Exit(1)


@_command
def inspect_cmd(
    store: Annotated[Path, typer.Argument(help="The store.")],
    variable: Annotated[
        str, typer.Option(help="Variable to inspect (e.g. normalized).")
    ] = "embedding",
    report: Annotated[Path | None, typer.Option(help="Write PNGs and report.html here.")] = None,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any health check fails.")] = False,
    sample: Annotated[int, typer.Option(min=2, help="Rows sampled for the pictures.")] = 500,
    seed: Annotated[int, typer.Option(help="Seed of the picture sample.")] = 0,
    color_by: Annotated[
        str, typer.Option(help="Label that colours the PCA and orders the heatmap.")
    ] = "age_mo",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quiet: Quiet = False,
) -> None:
    """Health checks (NaN/Inf/zero/duplicate rows, dead or extreme dimensions) and statistics
    over every row; pictures and an HTML report with --report."""
    result = embstore.inspect.inspect_store(
        store, variable=variable, report=report, sample=sample, seed=seed, color_by=color_by
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
    store: Annotated[Path, typer.Argument(help="The store.")],
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
    store: Annotated[Path, typer.Argument(help="The store.")],
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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON records.")] = False,
    quiet: Quiet = False,
) -> None:
    """The rows nearest to stored rows (exact search, chunk by chunk)."""
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
    )
    if as_json:
        print(table.to_json(orient="records", indent=2))
        return
    if quiet:
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
    from embstore.dicom import convert_dicom as run

    with _progress(quiet, "convert", "files") as progress:
        report = run(
            input_dir, output, target_size=target_size, fps=fps, limit=limit, progress=progress
        )
    _say(quiet, report.summary())
    for file, problem in report.failed:
        err.print(f"[red]failed:[/red] {file}: {problem}", highlight=False, soft_wrap=True)
    if report.failed:
        raise typer.Exit(1)


@_command
def extract(
    input_dir: Annotated[
        Path, typer.Argument(metavar="INPUT", help="Folder of DICOMs and/or videos.")
    ],
    store: StorePath,
    checkpoint: Annotated[
        Path, typer.Option(help="Original .pt checkpoint or a local Hugging Face folder.")
    ],
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
    num_workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes.")] = 4,
    device: Annotated[
        str | None, typer.Option(help="cuda or cpu (default: cuda when available).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Embed at most this many inputs.")
    ] = None,
    shard: Annotated[
        str | None, typer.Option(help="I/N: this process's part of the inputs.")
    ] = None,
    layout: Annotated[
        Layout | None, typer.Option(help="Read labels from paths in this layout.")
    ] = None,
    dicom_tags: Annotated[
        str, typer.Option(help="Comma-separated DICOM keywords to store as labels.")
    ] = "",
    commit_every: Annotated[int, typer.Option(min=1, help="Videos per commit.")] = 256,
    preprocess_on: Annotated[
        str | None,
        typer.Option(
            help="Where frames are resized: workers (CPU default) or device (CUDA default)."
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Embed DICOMs and videos with a frozen V-JEPA2 encoder, straight into the store."""
    from transformers.utils import logging as hf_logging

    from embstore.extract import extract as run
    from embstore.extract import parse_shard

    hf_logging.disable_progress_bar()
    with _progress(quiet, "extract", "clips") as progress:
        report = run(
            input_dir,
            store=store,
            checkpoint=checkpoint,
            model=model,
            checkpoint_key=checkpoint_key,
            num_frames=num_frames,
            frame_step=frame_step,
            clips=clips,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            limit=limit,
            shard=parse_shard(shard) if shard else None,
            layout=layout.value if layout else None,
            dicom_tags=[t for t in dicom_tags.split(",") if t],
            commit_every=commit_every,
            preprocess_on=preprocess_on,
            progress=progress,
        )
    _say(quiet, f"{store}: {report.summary()}")
    for bad in report.bad:
        _say(quiet, f"  skipped {bad}")


@_command
def demo(
    directory: Annotated[
        Path, typer.Argument(help="Folder for the generated data, store and exports.")
    ],
    subjects: Annotated[int, typer.Option(min=2, help="Subjects to generate.")] = 6,
    categories: Annotated[int, typer.Option(min=1, help="Categories to generate.")] = 20,
    dim: Annotated[int, typer.Option(min=1, help="Feature size.")] = 768,
    quiet: Quiet = False,
) -> None:
    """Generate a babyview-style .npy tree and run the whole job on it: ingest, normalize
    (first subject excluded from the statistics), info, export."""
    with _progress(quiet, "demo") as progress:
        result = embstore.run_demo(
            directory, n_subjects=subjects, n_categories=categories, dim=dim, progress=progress
        )
    _say(quiet, f"generated {result.files} .npy files in {result.tree}")
    _say(quiet, f"ingest: {result.ingest.summary()}")
    _say(quiet, f"normalize: {result.normalize.summary()}")
    _say(quiet, f"export: {result.export.summary()}")
    _say(quiet, f"store: {result.store}  (try: embstore info {result.store})")


def main() -> None:
    """Entry point of the ``embstore`` command."""
    sys.exit(app())


if __name__ == "__main__":
    main()
