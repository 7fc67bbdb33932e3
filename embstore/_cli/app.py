"""The typer app and what every command shares: one-line errors, warnings to the log, progress
bars, and the argument types."""

from __future__ import annotations

import contextlib
import functools
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
from rich.text import Text

from embstore.errors import EmbstoreError
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
AllowStale = Annotated[
    bool, typer.Option(help="Use a derived variable even if its inputs changed since.")
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
Layout = StrEnum("Layout", {name.replace("-", "_"): name for name in LAYOUTS})  # type: ignore[misc]
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
    if record.name == "asyncio":  # zarr's orphaned tasks after a damage error already reported
        return _debug
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
